"""Recorded answers of the reference implementations, for a learner's bundle without them.

A graded class's learners install a bundle per assignment (``course bundle``) that holds the
release notebook and the checks but not the reference implementations (``llmref``). In it,
each ``llmref`` module the checks import is a stand-in whose functions and classes look up
what the real reference returned for the same inputs when the instructor ran the visible
checks on the solution (``course bundle --snapshots``). The inputs of the visible checks are fixed
(seeded), so a correct notebook gets exactly the recorded answers; if a check feeds a
reference something that was never recorded (the learner's code changed what the check
computes before it asks the reference), the check stops with :class:`NotRecorded`, which
says that this case is checked by the grader only.

This module is both sides' vocabulary: ``digest`` (a stable key of any data the checks pass a
reference: arrays by dtype, shape and bytes, numbers, text, dataclasses by fields, modules by
class and weights), ``Codec`` (values as JSON plus arrays in a .npz file, never pickle), and
the stand-ins themselves. The recorder is ``coursetools/bundle.py``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from autograder.checks._core import CheckFailure

FORMAT = 2  # 2: a call that draws random numbers is keyed by the generators it drew from
# Modules whose functions and classes are the same code on both sides: named, not hashed.
TRUSTED = ("numpy", "torch", "llmref", "autograder", "math", "builtins", "functools", "operator",
           "collections", "typing", "dataclasses", "random", "string", "re")


# Libraries whose classes a recorded object may derive from. Other libraries patch them (once
# transformers has built a model, every torch.nn.Module carries its smart_apply), which says
# nothing of the object's own behaviour.
LIBRARIES = ("builtins", "numpy", "torch")


class Unrecordable(TypeError):
    """A value that cannot be keyed or stored as data (a learner's function, an open file...)."""


class NotRecorded(CheckFailure):
    """The reference was asked something the snapshot does not hold."""


def _torch():
    import torch  # imported lazily: the NumPy exercises' bundles never need it
    return torch


def _trusted(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in TRUSTED


def _path(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def resolve(path: str) -> Any:
    module, _, qualname = path.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# ------------------------------------------------------------------------------- keys

def digest(*values: Any) -> str:
    """A stable hex key of data: equal for equal inputs, across processes and machines."""
    h = hashlib.sha256()
    for value in values:
        _feed(h, value, set())
    return h.hexdigest()


def _tensor_bytes(t) -> tuple[str, tuple, bytes]:
    torch = _torch()
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return "bfloat16", tuple(t.shape), t.view(torch.int16).numpy().tobytes()
    return str(t.dtype), tuple(t.shape), t.numpy().tobytes()


def _feed(h, value: Any, seen: set) -> None:  # noqa: C901 (one case per kind of data)
    add = h.update
    torch = _torch() if _is_torch_loaded() else None
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        add(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            add(f"objarray{value.shape}".encode())
            for item in value.ravel().tolist():
                _feed(h, item, seen)
        else:
            add(f"nd:{value.dtype.str}:{value.shape}:".encode())
            add(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, np.generic):
        add(f"np:{value.dtype.str}:".encode() + value.tobytes())
    elif torch is not None and isinstance(value, torch.Tensor):
        dtype, shape, data = _tensor_bytes(value)
        add(f"pt:{dtype}:{shape}:{value.requires_grad}:".encode() + data)
    elif torch is not None and isinstance(value, (torch.dtype, torch.device, torch.Size)):
        add(f"{type(value).__name__}:{value};".encode())
    elif isinstance(value, (list, tuple)):
        add(f"{type(value).__name__}[{len(value)}".encode())
        for item in value:
            _feed(h, item, seen)
        add(b"]")
    elif isinstance(value, dict):
        add(f"dict[{len(value)}".encode())
        for key, item in value.items():
            _feed(h, key, seen)
            _feed(h, item, seen)
        add(b"]")
    elif isinstance(value, (set, frozenset)):
        add(f"set[{','.join(sorted(digest(v) for v in value))}]".encode())
    elif isinstance(value, range):
        add(repr(value).encode())
    elif isinstance(value, np.random.Generator):
        add(f"rng:{value.bit_generator.state!r}".encode())
    elif torch is not None and isinstance(value, torch.Generator):
        add(b"torchgen:" + value.get_state().numpy().tobytes())
    elif isinstance(value, functools.partial):
        add(b"partial:")
        _feed(h, (value.func, value.args, value.keywords), seen)
    elif isinstance(value, type) or _is_plain_function(value):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", "")
        if not _trusted(module):
            raise Unrecordable(f"a function or class of the caller's ({module}.{qualname}): "
                               "its behaviour cannot be keyed as data")
        add(f"named:{module}:{qualname};".encode())
        if "<locals>" in qualname or "<lambda>" in qualname:
            # A function a check builds per case (a scripted tool): keyed by its code and
            # everything it closes over, which must be data or trusted functions in turn.
            code = getattr(value, "__code__", None)
            if code is None:
                raise Unrecordable(f"a local class or callable {qualname}")
            _feed_code(h, code, seen)
            _feed(h, (value.__defaults__, value.__kwdefaults__), seen)
            for cell in value.__closure__ or ():
                _feed(h, cell.cell_contents, seen)
    else:
        if id(value) in seen:
            add(b"cycle;")
            return
        seen = seen | {id(value)}
        cls = type(value)
        if not _trusted(cls.__module__) and not _replayed_class(cls):
            raise Unrecordable(f"an object of the caller's class {cls.__module__}.{cls.__qualname__}")
        for klass in cls.__mro__:  # a class built around the learner's methods behaves as theirs
            if klass.__module__.split(".")[0] in LIBRARIES:
                continue  # what a library patched into torch's own classes is not the caller's
            for attr in vars(klass).values():
                function = getattr(attr, "__func__", attr)
                if callable(function) and hasattr(function, "__code__") and not _trusted(
                        getattr(function, "__module__", None)):
                    raise Unrecordable(f"an object of {cls.__qualname__}, which carries the caller's "
                                       f"method {function.__qualname__}")
        add(f"obj:{cls.__module__}:{cls.__qualname__}:".encode())
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                _feed(h, f.name, seen)
                _feed(h, getattr(value, f.name), seen)
        elif torch is not None and isinstance(value, torch.nn.Module):
            _feed(h, module_state(value), seen)
        elif hasattr(value, "__dict__"):
            _feed(h, {k: v for k, v in vars(value).items()}, seen)
        else:
            raise Unrecordable(f"a {cls.__qualname__} (no data to key it by)")


def _feed_code(h, code, seen: set) -> None:
    """A function's code by its source text (bytecode differs between Python versions)."""
    import inspect
    try:
        h.update(inspect.getsource(code).encode())
    except (OSError, TypeError):
        raise Unrecordable(f"a function without source ({code.co_name})") from None


def _is_plain_function(value: Any) -> bool:
    import types
    return isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                              types.ModuleType)) or type(value).__name__ in ("ufunc", "builtin_function_or_method")


def _is_torch_loaded() -> bool:
    import sys
    return "torch" in sys.modules


def _replayed_class(cls: type) -> bool:
    return any(getattr(k, "__replay_path__", None) for k in cls.__mro__)


def module_state(module) -> dict:
    """What a module's output depends on besides its inputs: class, mode and every tensor."""
    return {"training": module.training, **{k: v for k, v in module.state_dict(keep_vars=False).items()}}


# ------------------------------------------------------------------------------- values

_MODULE_INTERNALS = {"training", "_parameters", "_buffers", "_non_persistent_buffers_set",
                     "_modules", "_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook",
                     "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
                     "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                     "_load_state_dict_post_hooks", "_compiled_call_impl", "call_super_init"}


KINDS = ("float", "nd", "np", "pt", "dtype", "device", "size", "tuple", "dict", "set", "frozenset",
         "range", "dataclass", "module", "npgen", "ptgen", "alias")


def input_tensors(args: tuple, kwargs: dict) -> dict[int, list]:
    """id(tensor) -> where it sits in a call's inputs: a tensor argument by its path, a
    parameter or buffer of a module argument by the module's path and its name. A result
    that holds one of them (param_groups' groups hold the model's own parameters) is
    recorded as that place, and the replay hands back the caller's very object."""
    found: dict[int, list] = {}
    if not _is_torch_loaded():
        return found
    torch = _torch()
    for path, leaf in leaves((args, kwargs)):
        if isinstance(leaf, torch.Tensor):
            found.setdefault(id(leaf), ["arg", list(path)])
        elif _is_module(leaf):
            named = [*leaf.named_parameters(remove_duplicate=False), *leaf.named_buffers(remove_duplicate=False)]
            for name, tensor in named:
                found.setdefault(id(tensor), ["member", list(path), name])
    return found


def resolve_alias(alias: list, args: tuple, kwargs: dict):
    value = at((args, kwargs), alias[1])
    if alias[0] == "member":
        named = dict([*value.named_parameters(remove_duplicate=False), *value.named_buffers(remove_duplicate=False)])
        return named[alias[2]]
    return value


class Codec:
    """Values as JSON-able data, arrays kept apart (by content) for one .npz file."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None):
        self.arrays: dict[str, np.ndarray] = arrays if arrays is not None else {}
        self.fills: dict[int, list] = {}  # id(parameter) -> filled()'s arguments, see Recorder
        self.aliases: dict[int, list] = {}  # id(tensor) -> its place in a call's inputs (encode)
        self.inputs: tuple | None = None    # the (args, kwargs) an "alias" is decoded against

    def _store(self, array: np.ndarray) -> str:
        name = digest(array)[:20]
        if name not in self.arrays:
            self.arrays[name] = np.array(array, copy=True)  # a copy: the reference may change it later
        return name

    def encode(self, value: Any, _params: dict | None = None) -> Any:  # noqa: C901
        torch = _torch() if _is_torch_loaded() else None
        if isinstance(value, np.generic):
            return {"np": self._store(np.asarray(value))}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if np.isfinite(value) else {"float": repr(value)}
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise Unrecordable("an array of Python objects")
            return {"nd": self._store(value)}
        if isinstance(value, np.generic):
            return {"np": self._store(np.asarray(value))}
        if torch is not None and isinstance(value, torch.Tensor):
            if id(value) in self.aliases:
                return {"alias": self.aliases[id(value)]}
            if value.dtype == torch.bfloat16 or value.is_complex():
                raise Unrecordable(f"a {value.dtype} tensor")
            out = {"pt": self._store(value.detach().cpu().numpy().copy()), "grad": value.requires_grad}
            if isinstance(value, torch.nn.Parameter):
                out["param"] = True
            return out
        if torch is not None and isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if torch is not None and isinstance(value, torch.device):
            return {"device": str(value)}
        if torch is not None and isinstance(value, torch.Size):
            return {"size": list(value)}
        if isinstance(value, tuple):
            return {"tuple": [self.encode(v, _params) for v in value]}
        if isinstance(value, list):
            return [self.encode(v, _params) for v in value]
        if isinstance(value, dict):
            return {"dict": [[self.encode(k, _params), self.encode(v, _params)] for k, v in value.items()]}
        if isinstance(value, (set, frozenset)):
            return {type(value).__name__: [self.encode(v, _params) for v in value]}
        if isinstance(value, range):
            return {"range": [value.start, value.stop, value.step]}
        if isinstance(value, np.random.Generator):
            return {"npgen": self.encode(value.bit_generator.state)}
        if torch is not None and isinstance(value, torch.Generator):
            return {"ptgen": self.encode(value.get_state().numpy().copy())}
        cls = type(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {"dataclass": _path(cls),
                    "fields": {f.name: self.encode(getattr(value, f.name), _params)
                               for f in dataclasses.fields(value)}}
        if torch is not None and isinstance(value, torch.nn.Module):
            return {"module": self.module(value, {} if _params is None else _params)}
        raise Unrecordable(f"a {cls.__module__}.{cls.__qualname__} as a result")

    def module(self, module, params: dict, prefix: str = "") -> dict:
        """A module as data: its class, plain attributes, parameters (shared ones once), buffers
        and children, enough to rebuild it without running its constructor."""
        attrs = []  # lists of pairs, not dicts: the order of parameters is part of a module
        for key, value in vars(module).items():
            if key in _MODULE_INTERNALS:
                continue
            try:
                attrs.append([key, self.encode(value)])
            except Unrecordable:
                pass  # e.g. a function kept on the module: read by its own methods only
        parameters = []
        for name, p in module._parameters.items():
            if p is not None and id(p) in params:
                parameters.append([name, {"same": params[id(p)]}])
            else:
                if p is not None:
                    params[id(p)] = prefix + name
                if p is not None and id(p) in self.fills:
                    parameters.append([name, {"fill": self.fills[id(p)], "grad": p.requires_grad}])
                else:
                    parameters.append([name, None if p is None else self.encode(p)])
        return {"class": _path(type(module)), "training": module.training, "attrs": attrs,
                "parameters": parameters,
                "buffers": [[n, None if b is None else self.encode(b)] for n, b in module._buffers.items()],
                "non_persistent": sorted(module._non_persistent_buffers_set),
                "children": [[n, None if c is None else self.module(c, params, f"{prefix}{n}.")]
                             for n, c in module._modules.items()]}

    def decode(self, data: Any, _params: dict | None = None) -> Any:  # noqa: C901
        if data is None or isinstance(data, (bool, int, float, str)):
            return data
        if isinstance(data, list):
            return [self.decode(v, _params) for v in data]
        kind = next(k for k in KINDS if k in data)
        value = data[kind]
        if kind == "float":
            return float(value)
        if kind == "nd":
            return self.arrays[value].copy()
        if kind == "np":
            return self.arrays[value][()]
        if kind == "pt":
            torch = _torch()
            tensor = torch.from_numpy(self.arrays[value].copy())
            if data.get("param"):
                return torch.nn.Parameter(tensor, requires_grad=data["grad"])
            return tensor.requires_grad_(data["grad"])
        if kind == "dtype":
            return getattr(_torch(), value)
        if kind == "device":
            return _torch().device(value)
        if kind == "size":
            return _torch().Size(value)
        if kind == "tuple":
            return tuple(self.decode(v, _params) for v in value)
        if kind == "dict":
            return {self.decode(k, _params): self.decode(v, _params) for k, v in value}
        if kind in ("set", "frozenset"):
            return (set if kind == "set" else frozenset)(self.decode(v, _params) for v in value)
        if kind == "range":
            return range(*value)
        if kind == "dataclass":
            return resolve(value)(**{k: self.decode(v, _params) for k, v in data["fields"].items()})
        if kind == "module":
            return self.build(value, {})
        if kind == "npgen":
            state = self.decode(value)
            generator = getattr(np.random, state["bit_generator"])()
            generator.state = state
            return np.random.Generator(generator)
        if kind == "ptgen":
            generator = _torch().Generator()
            generator.set_state(_torch().from_numpy(self.decode(value)))
            return generator
        if kind == "alias":
            if self.inputs is None:
                raise ValueError("an alias of a call's input outside a call")
            return resolve_alias(value, *self.inputs)
        raise ValueError(f"unknown value kind {kind!r} in a snapshot")

    def build(self, data: dict, params: dict, into: Any = None, prefix: str = ""):
        """Rebuild a module from `module()`'s data, into `into` (a fresh instance) if given."""
        torch = _torch()
        cls = resolve(data["class"])
        module = into if into is not None else cls.__new__(cls)
        torch.nn.Module.__init__(module)
        module.training = data["training"]
        for key, value in data["attrs"]:
            module.__dict__[key] = self.decode(value)
        for name, value in data["parameters"]:
            if value is not None and "same" in value:
                module._parameters[name] = params[value["same"]]
            elif value is not None and "fill" in value:
                p = torch.nn.Parameter(filled(*value["fill"]), requires_grad=value["grad"])
                module._parameters[name] = params[prefix + name] = p
            else:
                p = None if value is None else self.decode(value)
                if p is not None and not isinstance(p, torch.nn.Parameter):
                    p = torch.nn.Parameter(p, requires_grad=value["grad"])
                module._parameters[name] = p
                if p is not None:
                    params[prefix + name] = p
        for name, value in data["buffers"]:
            module._buffers[name] = self.decode(value)
        module._non_persistent_buffers_set = set(data["non_persistent"])
        for name, child in data["children"]:
            module._modules[name] = None if child is None else self.build(child, params, prefix=f"{prefix}{name}.")
        return module


def filled(seed: int, shape: list, dtype: str, mean: float, std: float):
    """A module's initial weights as the snapshot keeps them: seeded normal values with the
    mean and spread of the reference's own initialisation (its exact values are not stored:
    they would be most of a snapshot's size, and the recording ran with these instead)."""
    torch = _torch()
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator, dtype=torch.float64) * std + mean
    return values.to(getattr(torch, dtype))


# --------------------------------------------------------------------------- the RNGs

RNGS = ("numpy", "random", "torch")


def rng_state() -> dict:
    """The global random states a reference may draw from: torch's, NumPy's, Python's."""
    state = {"numpy": np.random.get_state(), "random": random.getstate()}
    if _is_torch_loaded():
        state["torch"] = _torch().get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "random" in state:
        random.setstate(state["random"])
    if "torch" in state:
        _torch().set_rng_state(state["torch"])


def encode_rng(codec: Codec, state: dict) -> dict:
    """The generators in `state` (all three, or those a call drew from) as data."""
    out = {}
    if "numpy" in state:
        numpy = state["numpy"]
        out["numpy"] = [numpy[0], codec.encode(numpy[1]), numpy[2], numpy[3], numpy[4]]
    if "random" in state:
        version, internal, gauss = state["random"]
        out["random"] = [version, codec.encode(np.array(internal[:-1], dtype=np.uint32)), internal[-1], gauss]
    if "torch" in state:
        out["torch"] = codec.encode(state["torch"].numpy().copy())
    return out


def decode_rng(codec: Codec, data: dict) -> dict:
    state = {}
    if "numpy" in data:
        numpy = data["numpy"]
        state["numpy"] = (numpy[0], codec.decode(numpy[1]), numpy[2], numpy[3], numpy[4])
    if "random" in data:
        version, internal, position, gauss = data["random"]
        state["random"] = (version, tuple(int(x) for x in codec.decode(internal)) + (position,), gauss)
    if "torch" in data:
        state["torch"] = _torch().from_numpy(codec.decode(data["torch"]))
    return state


def _rng_part(state: dict, generator: str) -> Any:
    if generator == "numpy":
        return [state["numpy"][1], state["numpy"][2]]
    if generator == "random":
        return list(state["random"][1])
    return state["torch"]


def rng_drawn(before: dict, after: dict) -> list[str]:
    """The global generators a call drew from (whose state it moved). A call is keyed by the
    state of these only: the others (NumPy's and Python's, which a notebook seldom seeds, for a
    reference that draws from torch) differ from process to process and say nothing about it."""
    return [g for g in RNGS if g in before and g in after
            and digest(_rng_part(before, g)) != digest(_rng_part(after, g))]


def rng_key(state: dict, generators: list[str]) -> str:
    return digest([[g, _rng_part(state, g)] for g in generators if g in state])


# --------------------------------------------------------------------------- leaves

def leaves(value: Any, path: tuple = ()):
    """(path, value) of every array, tensor and random generator inside lists, tuples and
    dicts: what a reference may change in place."""
    if isinstance(value, (np.ndarray, np.random.Generator)) or (
            _is_torch_loaded() and isinstance(value, (_torch().Tensor, _torch().Generator))):
        yield path, value
    elif _is_module(value) or (hasattr(value, "__dict__") and not isinstance(value, type)
                               and not callable(getattr(value, "__code__", None))
                               and not _is_plain_function(value)
                               and _trusted(type(value).__module__)):
        yield path, value  # an object a reference may change: a scripted model, a module
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, (str, int)):
                yield from leaves(item, (*path, key))


def at(value: Any, path) -> Any:
    for part in path:
        value = value[part]
    return value


def mutable_state(value: Any) -> Any:
    """What of an argument a reference may change, as data (see `overwrite`)."""
    if _is_module(value):
        return value.state_dict()
    if isinstance(value, (np.ndarray, np.random.Generator)) or (
            _is_torch_loaded() and isinstance(value, (_torch().Tensor, _torch().Generator))):
        return value
    return dict(vars(value))


def overwrite(target: Any, value: Any) -> None:
    """Give an argument the contents a reference left in it."""
    if _is_module(target):
        target.load_state_dict(value)
    elif isinstance(value, dict) and not isinstance(target, (np.ndarray, np.random.Generator)) \
            and hasattr(target, "__dict__") and not hasattr(target, "copy_"):
        target.__dict__.update(value)
    elif isinstance(target, np.ndarray):
        target[...] = value
    elif isinstance(target, np.random.Generator):
        target.bit_generator.state = value.bit_generator.state
    elif not hasattr(target, "copy_"):  # a torch.Generator
        target.set_state(value.get_state())
    else:
        torch = _torch()
        with torch.no_grad():
            target.copy_(torch.as_tensor(value))


# --------------------------------------------------------------------------- replay

class Snapshot:
    """One assignment's recorded calls, read from NAME.json and NAME.npz."""

    def __init__(self, folder: Path, name: str):
        self.name = name
        self.data = json.loads((folder / f"{name}.json").read_text())
        if self.data.get("format") != FORMAT:
            raise RuntimeError(f"The snapshot {name}.json has format {self.data.get('format')}, and "
                               f"this replay reads format {FORMAT}: the instructor re-records it "
                               "with `course bundle --snapshots`.")
        npz = folder / f"{name}.npz"
        arrays = {}
        if npz.exists():
            with np.load(npz, allow_pickle=False) as loaded:
                arrays = {k: loaded[k] for k in loaded.files}
        self.codec = Codec(arrays)
        self.calls: dict[str, list] = self.data["calls"]


_SNAPSHOT: Snapshot | None = None
_FOLDER = Path(__file__).with_name("snapshots")


def configure(folder: Path, name: str) -> None:
    """Replay the snapshot `name` in `folder` (the bundle's llmref package calls this)."""
    global _SNAPSHOT, _FOLDER
    _FOLDER, _SNAPSHOT = Path(folder), None
    _ASSIGNMENT[0] = name


_ASSIGNMENT = [""]


def snapshot() -> Snapshot:
    global _SNAPSHOT
    if _SNAPSHOT is None:
        _SNAPSHOT = Snapshot(_FOLDER, _ASSIGNMENT[0])
    return _SNAPSHOT


def _not_recorded(qualname: str, why: str) -> NotRecorded:
    return NotRecorded(
        f"This case can only be checked by the grader. The check asked the course's reference "
        f"(`{qualname}`) about {why}, and this bundle only holds the reference's answers for the "
        "inputs the visible checks give a correct solution: the reference implementation itself "
        "is not shipped to learners. Usually an earlier step of your code already differs from "
        "the expected one (look at the first failing check above), or your code drew from the "
        "global random generator in a different order. The graded run uses the full reference.")


def call_key(qualname: str, owner: Any, args: tuple, kwargs: dict) -> str:
    """The key of one call: the reference's name, its object's state and the inputs.
    REPLAY_DEBUG=1 prints each key's parts, to find what differs between a recording and a
    replay that misses."""
    state = None if owner is None else (module_state(owner) if _is_module(owner) else vars(owner))
    if os.environ.get("REPLAY_DEBUG") and qualname:
        import sys
        parts = {"state": state, "args": args, "kwargs": kwargs}
        print("KEY", qualname, {k: digest(v)[:8] for k, v in parts.items()},
              {k: digest(v)[:8] for k, v in (state or {}).items()} if isinstance(state, dict) else "",
              [digest(a)[:8] for a in args], file=sys.stderr)
    return digest(qualname, state, args, kwargs)


def _is_module(value: Any) -> bool:
    return _is_torch_loaded() and isinstance(value, _torch().nn.Module)


def _choose(entries: list, qualname: str, *, constructor: bool) -> dict:
    state = None
    for entry in entries:
        if entry.get("rng_before") is None:
            return entry
        state = state or rng_state()
        if entry["rng_before"] == rng_key(state, entry["rng_uses"]):
            return entry
    if constructor:
        # A module's initial weights depend on the global RNG; what a check does with them
        # next (an output, a copy into the learner's model) is keyed by the weights, so a
        # different draw is caught there.
        return entries[0]
    raise _not_recorded(qualname, "a call that draws random numbers, from a different state of "
                                  "the global random generator than the recorded one")


def replay_call(qualname: str, owner: Any, args: tuple, kwargs: dict, *, constructor: bool = False) -> Any:
    """What the reference returned for these inputs, with its effects on them, on `owner`
    and on the global RNGs; NotRecorded when the snapshot has no such call."""
    __tracebackhide__ = True
    snap = snapshot()
    try:
        key = call_key(qualname, owner if not constructor else None, args, kwargs)
    except Unrecordable as exc:
        key, why = None, f"{exc}"
    entries = snap.calls.get(key) if key else None
    if not entries:
        if key:
            why = "inputs that the visible checks do not give it for a correct solution"
        learners = _delegate(snap, qualname)
        if learners is not None:
            return learners(*args, **kwargs)
        raise _not_recorded(qualname, why) from None
    entry = _choose(entries, qualname, constructor=constructor)
    codec = snap.codec
    if "error" in entry:
        raise _error(entry["error"])
    for path, value in entry.get("mutated", []):
        overwrite(at((args, kwargs), _unpath(path)), codec.decode(value))
    if "rng_after" in entry:
        set_rng_state(decode_rng(codec, entry["rng_after"]))
    if constructor:
        return entry
    if "owner_after" in entry:
        if _is_module(owner):
            owner.load_state_dict(codec.decode(entry["owner_after"]))
        else:
            owner.__dict__.update(codec.decode(entry["owner_after"]))
    codec.inputs = (args, kwargs)
    try:
        result = codec.decode(entry["result"])
    finally:
        codec.inputs = None
    if entry.get("grad"):
        result = _with_recorded_backward(key, entry, owner, args, kwargs, result, qualname)
    return result


def _delegate(snap: Snapshot, qualname: str):
    """For a "delegated" reference (the snapshot lists them) called by given code of its own
    module (a harness the bundle ships for real, coursetools/bundle.py's PASSTHROUGH) with
    inputs the recording has not seen: the learner's own function of that name, or None.

    Such a harness measures what the learner's pieces made (14's exact_match decodes the
    learner's trained model with greedy_decode, 17's evaluate scores the learner's rankings
    with recall_at_k and reciprocal_rank). The recording cannot answer for what it never saw,
    and the reference is the exercise's answer, so the bundle asks the learner's own version,
    which a visible check compares with the reference's on recorded cases. Called from
    anywhere else (a check comparing the learner's function with the reference's), a
    reference never delegates: that comparison would be the learner's with itself."""
    import sys
    if qualname not in snap.data.get("delegated", ()):
        return None
    module, _, name = qualname.rpartition(".")
    caller = sys._getframe(1)
    while caller is not None and caller.f_globals.get("__name__") == __name__:
        caller = caller.f_back  # past replay_call and the stand-in (both live here)
    if caller is None or caller.f_globals.get("__name__") != module:
        return None
    return learners_piece(name)


def learners_piece(name: str):
    """The learner's own function `name`: the argument of that name of the check running now
    (check_trained(..., greedy_decode)), else the notebook's (the globals of the cell that
    called the check), or None."""
    import sys
    frame, notebook = sys._getframe(1), None
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("autograder.checks."):
            value = frame.f_locals.get(name)
            if callable(value) and not _trusted(getattr(value, "__module__", None)):
                return value
        elif frame.f_globals.get("__name__") == "__main__":
            notebook = notebook or frame.f_globals
        frame = frame.f_back
    value = (notebook or {}).get(name)
    return value if callable(value) and not _trusted(getattr(value, "__module__", None)) else None


def _unpath(path: list) -> tuple:
    return tuple(path)


def _error(data: dict) -> BaseException:
    import builtins
    cls = getattr(builtins, data["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    return cls(data["message"])


def differentiable_inputs(owner: Any, args: tuple, kwargs: dict) -> list:
    """(label, tensor) of what a reference's output may be differentiated with respect to:
    tensor arguments that require grad and the owner module's parameters."""
    torch = _torch()
    found = [(["arg", list(path)], t) for path, t in leaves((args, kwargs))
             if isinstance(t, torch.Tensor) and t.requires_grad]
    if _is_module(owner):
        found += [(["param", name], p) for name, p in owner.named_parameters() if p.requires_grad]
    return found


def _with_recorded_backward(key, entry, owner, args, kwargs, result, qualname):
    """The recorded output, wired into autograd: its backward hands the inputs the gradients
    recorded for the same upstream gradient."""
    torch = _torch()
    inputs = differentiable_inputs(owner, args, kwargs)
    labels = [label for label, _ in inputs]
    tensors = [t for _, t in inputs]
    outputs = [(path, t) for path, t in leaves(result) if isinstance(t, torch.Tensor) and t.requires_grad]
    paths = [path for path, _ in outputs]
    codec = snapshot().codec

    class Replayed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs_):
            return tuple(t.detach().clone() for _, t in outputs)

        @staticmethod
        def backward(ctx, *grads):
            found = entry["grad"].get(digest(list(grads)))
            if found is None:
                raise _not_recorded(qualname, "a gradient that the visible checks do not send back "
                                              "through it for a correct solution")
            by_label = {json.dumps(label): codec.decode(g) for label, g in found}
            return tuple(by_label.get(json.dumps(label)) for label in labels)

    fresh = Replayed.apply(*tensors) if tensors else tuple(t for _, t in outputs)
    return _replace(result, dict(zip(map(tuple, paths), fresh)))


def _replace(value: Any, by_path: dict, path: tuple = ()) -> Any:
    if path in by_path:
        return by_path[path]
    if isinstance(value, tuple):
        return tuple(_replace(v, by_path, (*path, i)) for i, v in enumerate(value))
    if isinstance(value, list):
        return [_replace(v, by_path, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _replace(v, by_path, (*path, k)) for k, v in value.items()}
    return value


# ------------------------------------------------------------------ stand-in builders

def _own_code(fn, qualname: str):
    """`fn` with a code object of its own, named after the reference it stands in for. The
    stand-ins made here would otherwise share one code object (equal ones, even as copies),
    and the checks' watch tells a forbidden function by its code: every stand-in would be
    "llmref.pretrain.evaluate" once that one is forbidden."""
    fn.__code__ = fn.__code__.replace(co_name=qualname)
    return fn


def function(module: str, name: str):
    """A stand-in for the reference function module.name."""
    qualname = f"{module}.{name}"

    def stand_in(*args, **kwargs):
        __tracebackhide__ = True
        return replay_call(qualname, None, args, kwargs)

    _own_code(stand_in, qualname)
    stand_in.__name__ = stand_in.__qualname__ = name
    stand_in.__module__ = module
    stand_in.__doc__ = f"The recorded answers of the course's `{qualname}` (the implementation is not in this bundle)."
    return stand_in


def stand_in_class(module: str, name: str, methods: list[str], *, is_module: bool, attrs: dict | None = None):
    """A stand-in for the reference class module.name: constructing one rebuilds the recorded
    instance, and each of `methods` replays the recorded calls."""
    qualname = f"{module}.{name}"

    def __init__(self, *args, **kwargs):
        __tracebackhide__ = True
        entry = replay_call(f"{qualname}.__init__", None, args, kwargs, constructor=True)
        codec = snapshot().codec
        if is_module:
            codec.build(entry["instance"], {}, into=self)
        else:
            self.__dict__.update(codec.decode(entry["instance"]))

    def method(method_name: str):
        def replayed(self, *args, **kwargs):
            __tracebackhide__ = True
            return replay_call(f"{qualname}.{method_name}", self, args, kwargs)
        _own_code(replayed, f"{qualname}.{method_name}")
        replayed.__name__ = replayed.__qualname__ = method_name
        return replayed

    _own_code(__init__, f"{qualname}.__init__")
    namespace = {"__init__": __init__, "__module__": module, "__replay_path__": qualname,
                 "__doc__": f"The recorded answers of the course's `{qualname}` (not its implementation)."}
    for method_name in methods:
        namespace[method_name] = method(method_name)
    namespace.update(attrs or {})
    bases = (_torch().nn.Module,) if is_module else (object,)
    cls = type(name, bases, namespace)
    cls.__qualname__ = name
    return cls
