"""What every check shares: calling the learner's code safely and failing in plain words.

A check either returns quietly (after printing one line of praise) or raises
:class:`CheckFailure` whose message says what is wrong and what to try. Anything the
learner's function raises is re-raised as a CheckFailure naming the call that broke,
so a failing test cell never shows a traceback from inside this package.
"""
from __future__ import annotations

import contextlib
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NoReturn, Sequence, TypeVar

import numpy as np


PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


class CheckFailure(AssertionError):
    """A graded check did not pass; the message is written for the learner."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the learner's frames and the message.

        Frames inside this package would only distract, so they are left out; if the
        learner's code raised, its own traceback (their lines only) comes first.
        """
        lines: list[str] = []
        cause = self.__cause__
        if cause is not None and cause.__traceback__ is not None:
            frames = [f for f in traceback.extract_tb(cause.__traceback__)
                      if not f.filename.startswith(PACKAGE_DIR)]
            lines += ["Your code raised an error:\n", *traceback.format_list(frames),
                      *traceback.format_exception_only(type(cause), cause), "\n"]
        lines.append(f"{type(self).__name__}: {self}")
        return "".join(lines).splitlines()


def fail(message: str) -> NoReturn:
    """Stop the check with `message`, written for the learner."""
    __tracebackhide__ = True  # IPython and pytest hide this frame
    raise CheckFailure(message)


def fail_from(exc: BaseException, message: str) -> NoReturn:
    """Fail, keeping `exc` as the cause so the learner's own frames are shown above the message."""
    __tracebackhide__ = True
    raise CheckFailure(message) from exc


def describe(value: Any) -> str:
    """A short description of an argument, for messages: shapes, not contents."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"tensor of shape {tuple(value.shape)}"
    if value is None:
        return "None"
    return type(value).__name__


def call_learner(fn: Callable, *args, name: str | None = None, **kwargs) -> Any:
    """Call the learner's ``fn``; turn anything it raises into a CheckFailure."""
    __tracebackhide__ = True
    name = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        fail(f"Expected `{name}` to be a function, but it is a {type(fn).__name__}. "
             "Did a later cell reassign the name? Re-run the cell that defines it.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"`{name}` still raises NotImplementedError. Replace the "
             "`raise NotImplementedError()` line with your implementation.")
    except Exception as exc:  # the learner's bug, reported with the call that triggered it
        shown = ", ".join([describe(a) for a in args]
                          + [f"{k}={describe(v)}" for k, v in kwargs.items()])
        raise CheckFailure(
            f"`{name}` raised {type(exc).__name__}: {exc}\n"
            f"It was called with ({shown}). The traceback above this message "
            "points at the line in your code."
        ) from exc


@contextlib.contextmanager
def hint_on_error(hint: Callable[[BaseException], str | None]) -> Iterator[None]:
    """Add a hint to a CheckFailure raised inside that reports an error of the learner's code.

    ``hint(error)`` sees the learner's own exception (the failure's cause) and returns a line
    for the message, or None to add nothing. Failures without a cause (the checks' own) pass
    unchanged.
    """
    __tracebackhide__ = True
    try:
        yield
    except CheckFailure as failure:
        cause = failure.__cause__
        extra = hint(cause) if cause is not None else None
        if extra:
            raise CheckFailure(f"{failure}\n{extra}") from cause
        raise


def to_numpy(value: Any) -> Any:
    """A torch tensor's values as a NumPy array (detached, on the CPU); anything else as it is.

    bfloat16, which NumPy lacks, becomes float32. torch is never imported here.
    """
    if not hasattr(value, "detach") or not hasattr(value, "cpu"):
        return value
    value = value.detach().cpu()
    if str(getattr(value, "dtype", "")) == "torch.bfloat16":
        value = value.float()
    return value.numpy()


def shape_of(value: Any) -> tuple[int, ...] | None:
    """The shape of an array, a tensor or a (nested) list, or None where it has none
    (a ragged list, an object NumPy cannot read)."""
    try:
        return tuple(int(n) for n in np.shape(to_numpy(value)))
    except Exception:  # whatever it is, a message will explain it; here it has no shape
        return None


def expect_tuple(result: Any, name: str, parts: Sequence[str], *, what: str | None = None,
                 like: str = "") -> tuple:
    """Check that the learner's `name` returned a tuple (or list) of ``len(parts)`` values.

    `parts` names the values, for the message (``("output", "weights")``); `what` says what
    they are ("three gradients"; default "a pair" for two, "a tuple" otherwise); `like` ends
    the sentence (" like nn.MultiheadAttention"). Returns the values as a tuple.
    """
    __tracebackhide__ = True
    listed = ", ".join(parts)
    if result is None:
        fail(f"`{name}` returned None. It should end with `return {listed}`{like}.")
    if not isinstance(result, (tuple, list)) or len(result) != len(parts):
        what = what or ("a pair" if len(parts) == 2 else "a tuple")
        length = f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""
        fail(f"`{name}` should return {what} `({listed})`{like}, but returned "
             f"{describe(result)}{length}.")
    return tuple(result)


def expect_class(cls: Any, name: str, *, base: type | None = None) -> type:
    """Check that the learner's `name` is a class (a subclass of `base`, when given)."""
    __tracebackhide__ = True
    if isinstance(cls, type) and (base is None or issubclass(cls, base)):
        return cls
    wanted = "a class"
    if base is not None:
        module = base.__module__
        shown = f"nn.{base.__name__}" if module.startswith("torch.nn") else base.__name__
        wanted = f"a class that subclasses {shown}"
    got = f"the class {cls.__name__}" if isinstance(cls, type) else describe(cls)
    fail(f"Expected `{name}` to be {wanted}, but got {got}. Pass the class itself (not an "
         "instance or a function), and re-run the cell that defines it: did a later cell "
         "reassign the name?")


Shapes = dict[str, tuple[int, ...]]


def saved_shapes(module: Any, built: str) -> Shapes:
    """The name and shape of everything the learner's nn.Module `module` saves in its
    state_dict; `built` names it in messages (``"Block(32, 4)"``).

    A module whose state_dict raises, nearly always because its ``__init__`` never called
    ``super().__init__()``, fails the check with that hint. torch is not imported here.
    """
    __tracebackhide__ = True
    try:
        if REMOTE_SHAPES is not None:  # the shapes alone, not the values, from the kernel
            shapes = REMOTE_SHAPES(module)
            if shapes is not NotImplemented:
                return shapes
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}
    except Exception as exc:  # the learner's module is broken; say where to look
        fail_from(exc, f"`{built}.state_dict()` raised {type(exc).__name__}: {exc}. "
                       "Does __init__ start with super().__init__()?")


def layout_differences(actual: Shapes, expected: Shapes, *, most: int = 8) -> list[str]:
    """Sentences for a failure message on how a learner's state_dict layout `actual` differs
    from the reference's `expected` (both name -> shape, as :func:`saved_shapes` gives):
    the names missing, those not expected and those of another shape, with their shapes.

    Each list stops after `most` names (a real checkpoint has hundreds), saying how many more
    there are. Empty when the layouts are the same.
    """
    def listed(items: list[str], sep: str = ", ") -> str:
        more = f" and {len(items) - most} more" if len(items) > most else ""
        return sep.join(items[:most]) + more

    missing = [f"{k} {expected[k]}" for k in expected if k not in actual]
    extra = [f"{k} {actual[k]}" for k in actual if k not in expected]
    reshaped = [f"{k} is {actual[k]}, expected {expected[k]}" for k in expected
                if k in actual and actual[k] != expected[k]]
    lines = []
    if missing:
        lines.append(f"Missing: {listed(missing)}.")
    if extra:
        lines.append(f"Not expected: {listed(extra)}.")
    if reshaped:
        lines.append(f"Wrong shape: {listed(reshaped, '; ')}.")
    return lines


def expect_parameters(module: Any, names: Iterable[str], how: str) -> None:
    """Fail if any of `names`, saved in the learner module's state_dict, is not a registered
    parameter (a buffer, say): an optimiser would never train it. `how` says how to register
    it in this exercise."""
    __tracebackhide__ = True
    registered = {k for k, _ in module.named_parameters()}
    unregistered = [k for k in names if k not in registered]
    if unregistered:
        one = len(unregistered) == 1
        fail(f"{', '.join(unregistered)} {'is' if one else 'are'} saved in the state_dict but not "
             f"registered as {'a parameter' if one else 'parameters'}, so an optimiser would never "
             f"train {'it' if one else 'them'}. {how}")


def as_float_array(value: Any, what: str, expected_shape: Sequence[int]) -> np.ndarray:
    """Convert a returned value to a float64 array of an exact shape, or fail saying why.

    Converting to float64 also defeats objects that pretend to equal anything.
    """
    __tracebackhide__ = True
    if value is None:
        fail(f"{what} is None. Does your function end with a `return` statement?")
    value = to_numpy(value)  # a torch tensor is fine; compare its values
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        fail(f"{what} should be a NumPy array of numbers, but got {type(value).__name__}.")
    expected_shape = tuple(expected_shape)
    if array.shape != expected_shape:
        fail(f"{what} has shape {array.shape}, expected {expected_shape}.")
    return array


def find_bad_values(array: np.ndarray) -> str | None:
    """Name the non-finite values in an array, or None if all are finite."""
    n_nan = int(np.isnan(array).sum())
    n_inf = int(np.isinf(array).sum())
    if not (n_nan or n_inf):
        return None
    parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else ""]
    return " and ".join(p for p in parts if p)


def worst_mismatch(actual: np.ndarray, expected: np.ndarray) -> str:
    """Where two arrays differ most, for a message."""
    diff = np.abs(actual - expected)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return (f"largest difference {float(diff[index]):.3g} at index {tuple(int(i) for i in index)} "
            f"(got {float(actual[index]):.6g}, expected {float(expected[index]):.6g})")


T = TypeVar("T")


def close(actual: Any, expected: Any, *, rtol: float, atol: float, equal_nan: bool = False) -> bool:
    """Whether two arrays (tensors, lists, numbers) have the same shape and agree within
    ``|actual - expected| <= atol + rtol * |expected|`` everywhere.

    Each check states its own tolerance, with the reason for its size, and passes it here.
    Shapes must be equal (no broadcasting); anything that cannot be read as numbers is not
    close. With `equal_nan`, NaN equals NaN (infinities always equal themselves).
    """
    try:
        a = np.asarray(to_numpy(actual), dtype=np.float64)
        e = np.asarray(to_numpy(expected), dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if a.shape != e.shape:
        return False
    with np.errstate(all="ignore"):
        return bool(np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=equal_nan))


def matches(actual: Any, candidate: Any, *, rtol: float, atol: float) -> bool:
    """Whether `actual` equals what `candidate` computes: usually a known mistake.

    `candidate` is a value or a function of no arguments computing it (called here, so an
    expensive candidate is computed only when it is reached). A candidate that raises does not
    apply to these inputs and does not match. NaN and infinities count as equal to themselves,
    so a wrong implementation that overflows is recognised by where it overflows.
    """
    with np.errstate(all="ignore"):
        try:
            value = candidate() if callable(candidate) else candidate
        except Exception:  # e.g. the mistake cannot broadcast with these shapes
            return False
    return close(actual, value, rtol=rtol, atol=atol, equal_nan=True)


def first_match(actual: Any, candidates: Iterable[tuple[Any, T]], *, rtol: float,
                atol: float) -> T | None:
    """The label of the first candidate that `actual` matches (see :func:`matches`), or None.

    `candidates` yields ``(candidate, label)`` pairs, most instructive first; the label is
    usually the message that names the mistake: ``if (m := first_match(...)): fail(m)``.
    Candidates are computed one at a time and only until one matches.
    """
    for candidate, label in candidates:
        if matches(actual, candidate, rtol=rtol, atol=atol):
            return label
    return None


def passed(message: str) -> None:
    print(f"\N{CHECK MARK} {message}")


def seeded(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _function_code(fn: Any):
    """The code object a Python function runs (under any decorators), or None for a builtin."""
    import inspect

    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    if isinstance(fn, property):
        fn = fn.fget
    try:
        fn = inspect.unwrap(fn)
    except ValueError:
        return None
    return getattr(fn, "__code__", None)


def _c_function_module(func: Any) -> str:
    """The module a builtin function or method belongs to, for a package key of watch_calls."""
    module = getattr(func, "__module__", None)
    if module:
        return module
    owner = getattr(func, "__self__", None)
    if owner is None:
        return ""
    if isinstance(owner, type(contextlib)):        # a module-level builtin: its module
        return owner.__name__
    if isinstance(owner, type):                     # a classmethod: its class's module
        return owner.__module__
    return type(owner).__module__


# The words every refused shortcut's message contains (tests look for them).
SHORTCUT_PHRASE = "which does the exercise for you: the exercise asks for it by hand"

# What the NumPy exercises refuse: the array libraries that would compute the answer for the
# learner (each function is named under its own name). Package names, so nothing is imported.
NUMPY_SHORTCUTS = {"torch": None, "jax": None, "tensorflow": None, "scipy.special": None}


_UNSEEN = object()


class Watch:
    """What `watch_calls` returns: enter it around the learner's call; `used` lists, in order
    of first use, the names of the forbidden things that ran inside it."""

    def __init__(self, forbidden: dict):
        import sys

        self.used: list[str] = []
        self.forbidden = forbidden
        self._codes: dict = {}        # code object -> name: Python functions, class methods
        self._classes: dict = {}      # class -> name: builtin methods of its instances count too
        self._packages: dict = {}     # "package" -> name: any code of that package counts
        self._torch: dict = {}        # torch function -> name, seen by a TorchFunctionMode
        for key, name in forbidden.items():
            if isinstance(key, str):
                self._packages[key] = name
            elif isinstance(key, type):
                self._classes[key] = name
                for member in vars(key).values():
                    code = _function_code(member)
                    if code is not None:
                        self._codes[code] = name
            else:
                code = _function_code(key)
                if code is not None:
                    self._codes[code] = name
                self._torch[key] = name   # torch's Python functions dispatch to modes too
        self._class_tuple = tuple(self._classes)
        self._seen: dict = {}         # code object or kind of builtin -> name or None
        self._mode = None
        if (self._torch or "torch" in self._packages) and "torch" in sys.modules:
            self._mode = _torch_mode(self)
        self._previous_profile = None
        self._profiling = bool(self._codes or self._classes or self._packages)

    def note(self, name: str) -> None:
        if name not in self.used:
            self.used.append(name)

    def _package_of(self, module: str, function: str) -> str | None:
        qualified = f"{module}.{function}"
        for package, name in self._packages.items():
            if module == package or module.startswith(package + ".") or qualified == package:
                return name or qualified   # None: the function's own name
        return None

    def _class_of(self, owner: Any) -> str | None:
        for cls, name in self._classes.items():
            if isinstance(owner, cls) or owner is cls:
                return name
        return None

    def _profile(self, frame, event, arg) -> None:
        # Called on every call and return while the learner's code runs: each code object and
        # each kind of builtin is judged once, then looked up.
        if event == "call":
            code = frame.f_code
            name = self._seen.get(code, _UNSEEN)
            if name is _UNSEEN:
                name = self._codes.get(code)
                if name is None and self._packages:
                    name = self._package_of(frame.f_globals.get("__name__") or "", code.co_name)
                self._seen[code] = name
        elif event == "c_call":
            owner = getattr(arg, "__self__", None)
            function = getattr(arg, "__name__", "?")
            if owner is None or isinstance(owner, (type, type(contextlib))):
                key = (owner, getattr(arg, "__module__", None), function)
            else:
                key = (type(owner), None, function)
            try:
                name = self._seen.get(key, _UNSEEN)
            except TypeError:  # an unhashable class: judge it every time
                name, key = _UNSEEN, None
            if name is _UNSEEN:
                name = None
                if self._class_tuple and (isinstance(owner, self._class_tuple)
                                          or isinstance(owner, type)):
                    name = self._class_of(owner)
                if name is None and self._packages:
                    name = self._package_of(_c_function_module(arg), function)
                if key is not None:
                    self._seen[key] = name
        else:
            return
        if name is not None:
            self.note(name)

    def look_at(self, obj: Any) -> None:
        """Count forbidden classes that `obj` is, subclasses, or holds as a submodule: an
        object built before the watch began (or a class that overrides every method) is
        still the library's."""
        if not self._class_tuple or obj is None:
            return
        seen = [obj if isinstance(obj, type) else type(obj)]
        children = getattr(obj, "modules", None)
        if not isinstance(obj, type) and callable(children):
            try:
                seen += [type(m) for m in children()]
            except Exception:  # the learner's object; a broken one is judged elsewhere
                pass
        for cls in seen:
            for base in getattr(cls, "__mro__", ()):
                if base in self._classes:
                    self.note(self._classes[base])

    def __enter__(self) -> "Watch":
        import sys

        if self._mode is not None:
            self._mode.__enter__()
        if self._profiling:
            self._previous_profile = sys.getprofile()
            sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        import sys

        if self._profiling:
            if sys.getprofile() != self._profile:
                self.note("sys.setprofile (which switched off the check's watch)")
            sys.setprofile(self._previous_profile)
        if self._mode is not None:
            self._mode.__exit__(*exc)


def _torch_mode(watch: Watch) -> Any:
    from torch.overrides import TorchFunctionMode

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = watch._torch.get(func)
            if name is None and "torch" in watch._packages:   # all of torch, operators too
                name = watch._packages["torch"] or getattr(func, "__name__", None) or repr(func)
            if name is not None:
                watch.note(name)
            return func(*args, **(kwargs or {}))

    return Mode()


def watch_calls(forbidden: dict) -> Watch:
    """A context manager that records which `forbidden` things run inside it.

    `forbidden` maps each forbidden thing to the name a message shows. A key is
      - a torch function (``F.scaled_dot_product_attention``, ``torch.Tensor.backward``):
        every torch function, however the learner imported it, passes through an active
        ``TorchFunctionMode``;
      - any other Python function (``torch.nn.utils.clip_grad_norm_``): its code running
        counts, under any name or alias it was imported as;
      - a class (``nn.Linear``, ``torch.optim.AdamW``): any of its own methods running counts
        (building one, calling it, or a subclass reaching them through ``super()``), and
        ``watch.look_at(obj)`` also counts an object that is, subclasses or holds one;
      - a string, a package's name (``"rank_bm25"``, ``"tokenizers"``): any of its code
        running counts, so the NumPy exercises can refuse ``"torch"`` without importing it
        (with the name None, each function counts under its own name); or one function of a
        module by its dotted name (``"torch.softmax"``, which ``x.softmax()`` runs too).
    ``with watch_calls(F) as watch:`` leaves in ``watch.used`` the names of those run, in order
    of first use. Only what runs inside the ``with`` is watched: a check wraps the learner's
    call alone, so its own references may use the same library. torch is imported only when
    a key needs it, so the NumPy exercises' checks never load it.
    """
    if REMOTE_WATCH is not None:
        return REMOTE_WATCH(forbidden)
    return Watch(forbidden)


# Set by the grader while it runs a check outside the learner's kernel (coursetools/judge.py):
# the learner's code runs in the kernel, so the watch must act there too.
REMOTE_WATCH: Callable[[dict], Any] | None = None
# Also set there: REMOTE_SET(obj, path, value) sets a value inside an object of the
# learner's (its copies of lists and dicts reach the grader, not the object's own), and
# REMOTE_STEP_HOOK(hook) registers an optimizer step hook in the kernel, where the learner's
# optimizers step. Each returns NotImplemented for an object that is not the learner's.
REMOTE_SET: Callable[[Any, tuple, Any], Any] | None = None
REMOTE_STEP_HOOK: Callable[[Callable], Any] | None = None
REMOTE_GLOBAL: Callable[[Callable, str, Any], Any] | None = None
REMOTE_ADOPT: Callable[[Any], Any] | None = None
REMOTE_SHAPES: Callable[[Any], Any] | None = None
REMOTE_GRAFT: Callable[..., Any] | None = None


def with_methods_of(obj: Any, cls: type, exclude: tuple = (), require: tuple = ()) -> Any:
    """`obj` given the methods that the learner's `cls` defines itself (none of torch's or
    Python's, no dunder, none named in `exclude`), on top of its own class: the learner's
    generate on the reference's model, say. Raises AttributeError when `cls` defines none of
    a name in `require`. When the grader runs the check, the result is a handle on the
    object in the kernel, whose own calls still reach `obj` here."""
    if REMOTE_GRAFT is not None:
        grafted = REMOTE_GRAFT(obj, cls, exclude, require)
        if grafted is not NotImplemented:
            return grafted
    own: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__.split(".")[0] == "torch":
            continue
        for key, value in vars(klass).items():
            if not (key.startswith("__") and key.endswith("__")) and key not in exclude:
                own[key] = value
    for name in require:
        if name not in own:
            raise AttributeError(f"`{cls.__name__}` has no {name} method")
    obj.__class__ = type(cls.__name__, (type(obj),), own)
    return obj


def in_learners_process(model: Any) -> Any:
    """`model` (a module the check built) where the learner's code runs: itself in a kernel;
    when the grader runs the check, a handle on a copy built in the kernel, with the same
    linked weights, for a check whose learner's code changes the model's structure (adds
    adapters) and that then inspects and runs what it became."""
    return model if REMOTE_ADOPT is None else REMOTE_ADOPT(model)


# A folder that the learner's code can write and the checks read (the kernel's own, when
# the grader runs the checks), or None for the system's temporary folder.
SCRATCH: str | None = None


@contextlib.contextmanager
def scratch_folder() -> Iterator[str]:
    """A fresh temporary folder for files the learner's code writes and the check reads (a
    checkpoint, an exported model), removed afterwards."""
    import os
    import tempfile
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        if SCRATCH is not None:
            os.chmod(folder, 0o777)  # the kernel's user in its namespace is not the grader's
        yield folder


@contextlib.contextmanager
def global_replaced(fn: Callable, name: str, value: Any) -> Iterator[None]:
    """Run the inside with the global `name` that the learner's `fn` would call bound to
    `value` (if its module has one), the learner's put back afterwards, so that a check
    grades `fn` alone (its helper replaced by the reference, or by a recorder)."""
    remote = REMOTE_GLOBAL(fn, name, value) if REMOTE_GLOBAL is not None else NotImplemented
    if remote is not NotImplemented:
        with remote:
            yield
        return
    import inspect
    namespace = getattr(inspect.unwrap(fn), "__globals__", None)  # through @torch.no_grad()
    if namespace is None or name not in namespace:
        yield
        return
    mine = namespace[name]
    namespace[name] = value
    try:
        yield
    finally:
        namespace[name] = mine


def set_inside(obj: Any, path: tuple, value: Any) -> None:
    """``obj.path[0][path[1]]...[path[-1]] = value``: the first step an attribute, the others
    items (``set_inside(optimizer, ("param_groups", 0, "lr"), 0.1)``), wherever `obj` lives."""
    if REMOTE_SET is not None and REMOTE_SET(obj, path, value) is not NotImplemented:
        return
    target = getattr(obj, path[0])
    for key in path[1:-1]:
        target = target[key]
    target[path[-1]] = value


class _Handles:
    def __init__(self, handles: list):
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def on_optimizer_step(hook: Callable) -> Any:
    """``torch.optim.optimizer.register_optimizer_step_pre_hook(hook)`` for every optimizer,
    the learner's included where they run; ``.remove()`` on the result removes it."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    handles = [register_optimizer_step_pre_hook(hook)]
    if REMOTE_STEP_HOOK is not None:
        handles.append(REMOTE_STEP_HOOK(hook))
    return _Handles(handles)


@contextlib.contextmanager
def refuse_shortcuts(forbidden: dict, name: str, why: str, *, learner: Any = None) -> Iterator[Watch]:
    """Watch the learner's call(s) inside; fail if one used a forbidden shortcut.

    The one way checks refuse library shortcuts: the message names each forbidden call and
    says, in `why`, what to write instead and why the exercise asks for it by hand. If the
    learner's code also failed, the shortcut is what the learner reads about. `learner`
    (their class or object, optional) is also looked at: a subclass of a forbidden class, or
    one held as a submodule, counts.
    """
    __tracebackhide__ = True
    watch = watch_calls(forbidden)
    failure: CheckFailure | None = None
    try:
        with watch:
            yield watch
    except CheckFailure as exc:
        failure = exc
    watch.look_at(learner)
    if watch.used:
        shown = " and ".join(watch.used[:3]) + (" (and more)" if len(watch.used) > 3 else "")
        message = f"`{name}` uses {shown}, {SHORTCUT_PHRASE}. {why}"
        if failure is not None:
            raise CheckFailure(message) from (failure.__cause__ or failure)
        fail(message)
    if failure is not None:
        raise failure




@contextlib.contextmanager
def torch_seeded(seed: int | None = None) -> Iterator[None]:
    """Run the inside with torch's global generator seeded with `seed` (left as it is when
    None), and give the learner's random state back afterwards.

    For the checks' own draws (inputs, a reference module's initial weights) and for building
    the learner's modules: whatever is drawn inside, the learner's next torch.rand is the same
    as if the check had never run. CPU only (``fork_rng(devices=[])``): the checks run there.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        # (When the grader runs the check, its generator and the kernel's are one stream:
        # each request carries the state across, coursetools/judge.py.)
        yield


@contextlib.contextmanager
def torch_isolated(seed: int) -> Iterator[None]:
    """One thread and a seeded torch generator for a check; the learner's come back after.

    torch is imported here, not at the top: the NumPy exercises' checks must not need it.
    """
    import torch

    threads = torch.get_num_threads()
    with torch_seeded(seed):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def build_learner(cls: Any, *args: Any, name: str, forbidden: dict, why: str, **kwargs: Any) -> Any:
    """The learner's class `cls` called with `args` and `kwargs`, the way the checks build a
    module: library shortcuts refused (see :func:`refuse_shortcuts`; the object built is looked
    at too, so a forbidden base class or submodule counts) and torch's global random state,
    which initialising weights draws from, given back to the learner afterwards.

    `name` is the call as messages show it (``"Block(32, 4)"``).
    """
    __tracebackhide__ = True
    with torch_seeded(), refuse_shortcuts(forbidden, name, why) as watch:
        built = call_learner(cls, *args, name=name, **kwargs)
        watch.look_at(built)
    return built


def load_weights(module: Any, state: Any, built: str, *, whose: str = "the reference's weights",
                 hint: str = "") -> None:
    """Load the state_dict `state` (`whose`, for the message) into the learner's module
    `built`, whose names and shapes are already checked; fail with the error and `hint` if
    it still does not load (a custom load_state_dict, say)."""
    __tracebackhide__ = True
    try:
        module.load_state_dict(state)
    except Exception as exc:  # the learner's module refused its own layout
        fail_from(exc, f"Loading {whose} into `{built}` raised {type(exc).__name__}: {exc}."
                       + (f" {hint}" if hint else ""))


def forward_tensor(module: Any, x: Any, name: str, forbidden: dict, why: str, expected_shape,
                   *, grad: bool = True, hint: str = "") -> "tuple[Any, np.ndarray]":
    """Call the learner's module on x with library shortcuts refused; the result must be one
    tensor of `expected_shape`. Returns the tensor (for backward) and its values as float64.

    `hint` follows the message for a result that is not a tensor (what it should be)."""
    __tracebackhide__ = True
    import torch
    with torch.set_grad_enabled(grad), refuse_shortcuts(forbidden, f"{name}.forward", why, learner=module):
        result = call_learner(module, x, name=f"{name}.forward")
    if result is None:
        fail(f"`{name}.forward` returned None. Does it end with a `return` statement?")
    if not isinstance(result, torch.Tensor):
        fail(f"`{name}.forward` should return one torch.Tensor, but returned {describe(result)}. {hint}".rstrip())
    return result, as_float_array(result, f"The output of `{name}.forward`", tuple(expected_shape))
