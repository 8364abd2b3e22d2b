"""Graded checks run by the grader, not in the learner's kernel.

A test cell of a graded notebook reads `checks.check_x(learner_function, seed=...)`. Run in
the learner's kernel, the check and the reference it compares with live beside the
learner's code, which can import the reference, replace the check with a no-op, patch
`np.allclose` or make the shell swallow exceptions. For a judged assignment the grading
worker instead runs each test cell itself, in its own process, with the real check module,
and every name of the learner's that the cell mentions stands for a `Remote`: a handle on
the object in the kernel. Calling it, reading an attribute, indexing or iterating it sends
a request into the kernel (judge_kernel.py) and brings back plain data (judge_codec.py).
The kernel sees the inputs and computes outputs; it never sees the check, the reference or
the hidden cases' expected values, and what it answers can only be judged.

Arrays and tensors sent either way stay linked: an optimizer of the learner's that updates
the grader's parameters in place, or a backward pass that fills gradients, is seen on the
other side at the next request. A kernel result with a graph becomes here a tensor whose
backward runs the learner's backward there (RemoteNode), so a check's gradient comparisons
work unchanged. Grad mode and the watch for library shortcuts (`_core.watch_calls`) follow
the check into the kernel, and torch's global generator is one stream across both sides:
a message carries its sender's state when it changed since the two last agreed (the
kernel's first answer brings the learner's), so `_core.torch_seeded`, dropout and a saved
random state behave as in one process. A strided tensor arrives strided. A handle on a
learner's class passes `isinstance(cls, type)` and `issubclass(cls, nn.Module)` through the
library classes of its MRO (`__class__`, `__bases__`), never by running anything here, and
`isinstance(obj, cls)` is asked of the kernel.

What a check hands the learner's code that is not data is lent, not sent: the kernel gets a
stand-in (judge_kernel's GraderObject) whose calls, attribute reads (public names only),
indexing and iteration come back here as requests while the kernel's request is under way,
so both sides answer each other on one socket. A lent nn.Module is a module there, of its
torch.nn class, with parameters and buffers linked to these and a forward that runs here;
a result with a graph here goes there as a tensor whose backward runs here. Sent back, a
lent object (or a config) is the grader's own object again. A check that must change or
watch something inside the kernel uses `_core.set_inside`, `_core.global_replaced` and
`_core.on_optimizer_step`, which run there through the hooks run_cell sets.

The cell's printed lines and any failure become the cell's outputs, exactly as if it had
run in the kernel, so nbgrader scores it as before. The kernel of a judged assignment
mounts neither `llmref` nor the real checks (sandbox.judged_kernel_covers): a stub tells a
learner who calls a check there that the grader runs it.

An assignment is judged when every check of its test cells behaves the same through
handles: JUDGED lists them, and `course selfcheck` (solution full marks, release zero,
every known mistake losing points) proves each one through the judge.
"""
from __future__ import annotations

import ast
import asyncio
import builtins
import concurrent.futures
import contextlib
import functools
import importlib
import io
import itertools
import json
import queue
import re
import traceback
import types
from pathlib import Path
from typing import Any, Callable

from . import judge_codec, shortcut_scan

# Assignments whose test cells the grader runs itself. Their checks may hand the learner's
# code objects of the grader's (a model, a function, a scripted stand-in): those are lent,
# not sent (judge_kernel's GraderObject and grader_module), or built in the kernel where
# BUILT_IN_KERNEL allows it. Every assignment is judged.
JUDGED = frozenset({"01_softmax", "02_attention", "03_backprop", "04_adam", "05_modules",
                    "06_multihead", "07_training", "08_bpe", "09_positions", "10_block", "11_gpt",
                    "12_pretrain", "13_encoder", "14_seq2seq", "15_sampling", "16_kv_cache", "17_retrieval",
                    "18_finetune", "19_agent", "20_export"})
# Modules whose classes a judged assignment's kernel builds itself when a check hands the
# learner's code one of their modules (the rest are lent, their forward run in the grader):
# 20_export hands torch.onnx.export the reference GPT, which must be the module itself to
# be traced, and 18_finetune's LoRA replaces layers inside a GPT that the check then runs
# (`_core.in_learners_process`). Both are earlier exercises' references, kept in KERNEL_KEEPS.
BUILT_IN_KERNEL: dict[str, tuple[str, ...]] = {
    "18_finetune": ("llmref.gpt", "llmref.block", "torch.nn"),
    "20_export": ("llmref.gpt", "llmref.block", "torch.nn"),
}
# Modules of llmref that a judged assignment's notebook imports for itself (an earlier
# exercise's reference, the course's data), with what those import: its kernel keeps these
# and no others, never the module of its own exercise.
KERNEL_KEEPS: dict[str, tuple[str, ...]] = {
    "03_backprop": ("attention", "probability"),
    "07_training": ("corpus", "ngram", "probability"),
    "11_gpt": ("block", "corpus"),
    "12_pretrain": ("block", "corpus", "gpt"),
    "14_seq2seq": ("block", "corpus", "gpt", "pretrain"),
    "16_kv_cache": ("block", "gpt"),
    "17_retrieval": ("book_pages",),
    "18_finetune": ("block", "gpt"),
    "19_agent": ("agent_data", "block", "corpus", "course_model", "gpt", "pretrain"),
    "20_export": ("block", "gpt", "kvcache"),
}
CHECKS_IMPORT = re.compile(r"from\s+autograder\.checks\s+import\s+(\w+)\s+as\s+checks")
# Seconds one request may take: the submission's own time limit (the worker's watchdog)
# ends a kernel that computes forever; this only bounds waiting on a kernel that vanished.
REQUEST_POLL_S = 1.0
SOURCES = {name: (Path(__file__).with_name(f"{name}.py")).read_text()
           for name in ("judge_codec", "judge_kernel")}
# The file name the helper's code runs under in the kernel, left out of tracebacks there.
HELPER_FILE = "<course-judge>"
BOOT = f"""
def __course_boot():
    import types
    codec = types.ModuleType("course_judge_codec")
    exec(compile({SOURCES['judge_codec']!r}, {HELPER_FILE!r}, "exec"), codec.__dict__)
    server = {{}}
    exec(compile({SOURCES['judge_kernel']!r}, {HELPER_FILE!r}, "exec"), server)
    return server["serve"](codec)
__course_rpc__ = __course_boot()
__course_serve__ = __course_rpc__.session
del __course_boot
"""
# The largest answer the grader reads from a kernel.
MAX_ANSWER_BYTES = 128 << 20


# In every message of a kernel that answered the grader wrongly (sandbox.explain_failure).
BROKEN = "broke the grader's connection"


class KernelGone(RuntimeError):
    """The kernel stopped answering (it died, or the time limit ended it)."""


class LearnerError(Exception):
    """Raised for an exception of the learner's code in the kernel; the class made for each
    one also derives from the built-in exception it was (ValueError, IndexError, ...)."""

    remote_traceback = ""


_ERROR_CLASSES: dict[type, type] = {}


def learner_error(types: list[str], message: str, remote_traceback: str) -> BaseException:
    """A local exception standing for the learner's: of the first built-in class in its
    method resolution order that takes a message alone, so that `except IndexError` in a
    check still catches it."""
    for name in [*types, "Exception"]:
        base = getattr(builtins, name, None)
        if not (isinstance(base, type) and issubclass(base, Exception)):
            continue
        if base not in _ERROR_CLASSES:
            _ERROR_CLASSES[base] = type(base.__name__, (LearnerError, base), {"__module__": "builtins"})
        try:
            error = _ERROR_CLASSES[base](message)
        except TypeError:  # UnicodeDecodeError and the like want more than a message
            continue
        error.remote_traceback = remote_traceback
        return error
    raise AssertionError("Exception takes a message")


def _torch() -> Any:
    import sys
    return sys.modules.get("torch")


@functools.cache
def _remote_node_class() -> Any:
    """An autograd Function whose backward runs the learner's backward in the kernel."""
    torch = _torch()

    class RemoteNode(torch.autograd.Function):
        @staticmethod
        def forward(ctx, anchor, value, connection, number):
            ctx.connection, ctx.number = connection, number
            return value.clone()

        @staticmethod
        def backward(ctx, grad):
            ctx.connection.ask({"op": "backward", "link": ctx.number,
                                "grad": ctx.connection.encode(grad.detach())})
            return None, None, None, None

    return RemoteNode


# Numbers of the grader's objects lent to kernels: never reused, so that a learner's object
# that kept one from an earlier test cell reaches nothing of a later one.
_LENT_NUMBERS = itertools.count(1)
# What the learner's code may not be lent: a module would open the grader's code to it.
NOT_LENT = (types.ModuleType,)


class Connection:
    """Sends a request (JSON text) and returns the answer's text; subclasses say how.

    Modules of the classes whose modules `built_here` names are built in the kernel as what
    they are (see BUILT_IN_KERNEL), not lent.

    Tensors are linked (see judge_kernel): each request carries the linked tensors this side
    changed, each answer those the kernel changed, and both are written in place."""

    built_here: tuple[str, ...] = ()

    def __init__(self) -> None:
        # Linked tensors and arrays, held here while anything else here holds them; one
        # that nothing else holds is dropped on both sides with the next message (_release).
        self._links: dict[int, Any] = {}      # number -> the tensor or array
        self._seen: dict[int, tuple] = {}     # number -> its fingerprint when last in step
        self._link_of: dict[int, int] = {}    # id(tensor) -> number
        self._dropped: list[int] = []         # links to tell the kernel to drop
        self._dropped_nodes: list[int] = []   # the kernel's graph results gone here
        self._next_link = -1                  # this side numbers its links -1, -2, ...
        self._named: set[int] = set()         # links the message being made names
        # The grader's objects lent to the kernel (see judge_kernel's GraderObject).
        self._lent_objects: dict[int, Any] = {}   # number -> the object (kept alive)
        self._lent_number: dict[int, int] = {}    # id(object) -> number
        self._lent_nodes: dict[int, Any] = {}     # number -> a result with a graph here
        # torch's generator state when this side and the kernel last agreed (None: not yet).
        self._rng_agreed: bytes | None = None
        # The learner's cells as the grader read them (a shortcut_scan.Scan), if it did.
        self.scan: shortcut_scan.Scan | None = None

    def ask_text(self, text: str) -> str:
        raise NotImplementedError

    def _register(self, tensor: Any, number: int) -> None:
        if number in self._dropped:  # the kernel sent back a tensor whose link here had gone
            self._dropped.remove(number)
        self._links[number] = tensor
        self._link_of[id(tensor)] = number
        self._seen[number] = judge_codec.fingerprint(tensor)

    def _linked(self, tensor: Any) -> int | None:
        number = self._link_of.get(id(tensor))
        if number is not None and self._links.get(number) is tensor:
            return number
        return None

    def _release(self) -> None:
        """Drop the links that only this table still holds, and tell the kernel with the
        message about to leave. Only here, never when a tensor dies: the kernel names a
        linked tensor by its number, so every number it may name in its next message must
        still stand here. A link the message itself names stays until the next one.
        Without dropping, every message would fingerprint every tensor linked in the cell
        (a lent model's forward passes make thousands)."""
        import sys
        links, named = self._links, self._named
        # 2: the table's reference and getrefcount's argument; nothing else holds it.
        for number in [n for n in links if n not in named and sys.getrefcount(links[n]) <= 2]:
            tensor = links.pop(number)
            self._seen.pop(number, None)
            if self._link_of.get(id(tensor)) == number:
                del self._link_of[id(tensor)]
            self._dropped.append(number)

    def _drops(self, message: dict) -> None:
        """Put in `message` the links and graph results the kernel may drop (after it took
        the message's changes: the last ones of a dropped link still reach its copy)."""
        self._release()
        self._named.clear()
        if self._dropped:
            message["drop"] = list(self._dropped)
            self._dropped.clear()
        if self._dropped_nodes:
            message["drop_nodes"] = list(self._dropped_nodes)
            self._dropped_nodes.clear()

    def _outgoing(self) -> list:
        updates = []
        for number, obj in self._links.items():
            mark = judge_codec.fingerprint(obj)
            if self._seen.get(number) != mark:
                updates.append(judge_codec.update_of(number, obj))
                self._seen[number] = mark
        return updates

    def _incoming(self, updates: Any) -> None:
        for number, data, grad in updates if isinstance(updates, list) else []:
            obj = self._links.get(int(number))
            if obj is not None:
                judge_codec.apply_update(obj, data, grad)
                self._seen[int(number)] = judge_codec.fingerprint(obj)

    # torch's global generator: the grader's and the kernel's are one stream. A message
    # carries the sender's state when it changed since the two last agreed, and the other
    # side takes it; the kernel's first answer brings the learner's state here, so the
    # first request carries none.

    def _rng_out(self, message: dict) -> None:
        torch = _torch()
        if torch is None:
            return
        state = torch.get_rng_state().numpy()
        if self._rng_agreed is not None and state.tobytes() != self._rng_agreed:
            message["rng"] = judge_codec.array_data(state)
        self._rng_agreed = state.tobytes()

    def _rng_in(self, message: dict) -> None:
        torch = _torch()
        if torch is None or not isinstance(message.get("rng"), dict):
            return
        try:
            state = judge_codec.array_from(message["rng"])
            torch.set_rng_state(torch.from_numpy(state))
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise KernelGone(f"{BROKEN}: the kernel sent a random state that is none") from exc
        self._rng_agreed = state.tobytes()

    def ask(self, request: dict) -> Any:
        request = {**request, "sync": self._outgoing()}
        self._drops(request)
        self._rng_out(request)
        if _torch() is not None:
            request["grad_mode"] = _torch().is_grad_enabled()
        answer = self.ask_text(json.dumps(request))
        try:
            data = json.loads(answer)
        except ValueError as exc:
            raise KernelGone(f"{BROKEN}: the kernel answered the grader with something not JSON: {answer[:200]!r}") from exc
        if not isinstance(data, dict):
            raise KernelGone(f"{BROKEN}: the kernel answered the grader with something that is not an answer")
        if data.get("sync"):
            self._incoming(data["sync"])
        self._rng_in(data)
        if "error" in data:
            error = data["error"]
            raise learner_error([str(t) for t in error.get("types", [])], str(error.get("message", "")),
                                str(error.get("traceback", "")))
        return judge_codec.decode(data.get("ok"), _Incoming(self))

    def encode(self, value: Any) -> Any:
        return judge_codec.encode(value, _Outgoing(self))

    # The grader's objects lent to the kernel (see judge_kernel's GraderObject).

    def lend(self, obj: Any) -> int:
        number = self._lent_number.get(id(obj))
        if number is None or self._lent_objects.get(number) is not obj:
            number = next(_LENT_NUMBERS)
            self._lent_objects[number], self._lent_number[id(obj)] = obj, number
        return number

    def lent(self, number: int) -> Any:
        if number not in self._lent_objects:
            raise LookupError("the grader's object is gone: it was lent for an earlier test cell")
        return self._lent_objects[number]

    def callback_text(self, text: str) -> str:
        """Answer the kernel's request about one of the grader's objects (JSON text in and
        out): the learner's code called it, read it or ran a backward through it."""
        # The answer is made in its own frame: what the call returned is gone before the
        # links are released, so those only it held are dropped with this reply.
        reply = self._callback_reply(text)
        reply["sync"] = self._outgoing()
        self._drops(reply)
        self._rng_out(reply)
        return json.dumps(reply)

    def _callback_reply(self, text: str) -> dict:
        try:
            message = json.loads(text)
            request = message["cb"]
            self._incoming(message.get("sync"))
            self._rng_in(message)
            torch = _torch()
            if torch is not None and "grad_mode" in request:
                with torch.set_grad_enabled(bool(request["grad_mode"])):
                    result = self._callback(request)
            else:
                result = self._callback(request)
            return {"cbok": self.encode(result)}
        except KernelGone:
            raise
        except Exception as error:  # told to the learner's code as the built-in it is
            reply = {"cberr": {"types": [c.__name__ for c in type(error).__mro__
                                         if c.__module__ == "builtins"],
                               "message": str(error)[:2000]}}
            if all(type(a) in (str, int, float, bool) for a in error.args) and len(error.args) < 4:
                reply["cberr"]["args"] = [a[:2000] if type(a) is str else a for a in error.args]
            return reply

    def _callback(self, request: dict) -> Any:
        op = request.get("op")
        incoming = _Incoming(self)
        value = lambda key: judge_codec.decode(request.get(key), incoming)  # noqa: E731
        if op == "backward":
            _torch().autograd.backward(self._lent_nodes[int(request["node"])], value("grad"), retain_graph=True)
            return None
        target = self.lent(int(request.get("target", 0)))
        if op == "call":
            args, kwargs = value("args"), value("kwargs")
            if not (isinstance(args, tuple) and isinstance(kwargs, dict)
                    and all(isinstance(k, str) for k in kwargs)):
                raise TypeError("a call needs arguments and keyword arguments")
            return target(*args, **kwargs)
        if op == "getattr":
            name = request.get("name")
            if not isinstance(name, str) or name.startswith("_"):
                raise AttributeError(f"the grader's {type(target).__name__} does not show {name!r}")
            return getattr(target, name)
        if op == "train":
            if not isinstance(target, _torch().nn.Module):
                raise TypeError("only a module has a training mode")
            target.train(bool(request.get("mode")))
            return None
        if op == "getitem":
            return target[value("key")]
        if op == "len":
            return len(target)
        if op == "iter":
            return list(itertools.islice(iter(target), 1_000_000))
        if op == "contains":
            return value("item") in target
        if op == "str":
            return str(target)[:2000]
        raise ValueError(f"unknown request {op!r}")


class _Outgoing:
    """The codec's hooks for what this side sends: handles stay handles, tensors are linked
    (one with a graph here goes as one whose backward comes back here: a lent model's
    output, a check's log-probabilities), the grader's other objects are lent."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def __call__(self, obj: Any) -> Any:
        import dataclasses
        import pathlib
        if isinstance(obj, Remote):
            return object.__getattribute__(obj, "_number")
        if isinstance(obj, pathlib.PurePath):
            return {"$path": str(obj)}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            # A config: its fields, rebuilt in the kernel as the notebook's class of that
            # name; sent back, it is this object again.
            return {"$dc": type(obj).__name__, "g": self.connection.lend(obj),
                    "f": [[f.name, judge_codec.encode(getattr(obj, f.name), self)]
                          for f in dataclasses.fields(obj)]}
        if isinstance(obj, types.GeneratorType):  # parameters(), named_children(), ...
            return {"$it": [judge_codec.encode(v, self) for v in itertools.islice(obj, 1_000_000)]}
        if isinstance(obj, NOT_LENT):
            raise judge_codec.Unencodable(f"a {type(obj).__name__} cannot be sent to the kernel")
        info: dict[str, Any] = {"ty": type(obj).__name__, "ca": callable(obj)}
        torch = _torch()
        if torch is not None and isinstance(obj, torch.nn.Module):
            # A module: the kernel builds one whose parameters and buffers are linked to
            # these and whose forward comes back here (judge_kernel's grader_module), or,
            # for a class the assignment lets its kernel hold, one of that very class.
            info.update(mod=True, tr=obj.training,
                        mro=[[c.__module__, c.__qualname__] for c in type(obj).__mro__][:32],
                        p=[[n, judge_codec.encode(v, self)] for n, v in obj._parameters.items()],
                        b=[[n, judge_codec.encode(v, self)] for n, v in obj._buffers.items()],
                        c=[[n, judge_codec.encode(v, self)] for n, v in obj._modules.items()])
            home = type(obj).__module__
            if any(home == m or home.startswith(m + ".") for m in self.connection.built_here):
                info["build"] = [home, type(obj).__qualname__]
                info["a"] = [[k, judge_codec.encode(v, self)] for k, v in vars(obj).items()
                             if not k.startswith("_") and k != "training"
                             and not isinstance(v, (torch.nn.Module, torch.Tensor))]
        return {"$g": self.connection.lend(obj), "info": info}

    def array(self, value: Any, data: Callable[[], dict]) -> dict:
        """An array or tensor: by its number if linked already, else its data, now linked."""
        connection = self.connection
        number = connection._linked(value)
        if number is not None:
            connection._named.add(number)
            return {"$link": number}
        encoded = data()
        if getattr(value, "grad_fn", None) is not None:
            number = next(_LENT_NUMBERS)
            connection._lent_nodes[number] = value
            encoded["link"], encoded["gnode"] = number, True
            return encoded
        if hasattr(value, "grad_fn") and value.is_leaf and value.grad is not None:
            encoded["g"] = judge_codec.tensor_data(value.grad)
        encoded["link"] = number = connection._next_link
        connection._next_link -= 1
        connection._register(value, number)
        connection._named.add(number)
        return encoded

    tensor = array


class _Incoming:
    """The codec's hooks for what this side receives."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def __call__(self, number: int, info: dict) -> "Remote":
        return Remote(self.connection, number, info)

    def tensor(self, data: dict) -> Any:
        connection = self.connection
        number = data.get("link")
        grad = data.get("g")
        if not isinstance(number, int):
            return judge_codec.tensor_from(data)
        if data.get("node"):
            # A result with a graph in the kernel: here a tensor whose backward runs it there.
            torch = _torch()
            value = judge_codec.tensor_from({**data, "rg": False, "p": False})
            anchor = torch.zeros((), requires_grad=True)
            result = _remote_node_class().apply(anchor, value, connection, number)
            import weakref
            weakref.finalize(result, connection._dropped_nodes.append, number)
            return result
        existing = connection._links.get(number)
        if existing is not None:
            judge_codec.apply_update(existing, data, grad)
            connection._seen[number] = judge_codec.fingerprint(existing)
            return existing
        tensor = judge_codec.tensor_from(data)
        if grad is not None:
            tensor.grad = judge_codec.tensor_from(grad)
        connection._register(tensor, number)
        return tensor

    def link(self, number: int) -> Any:
        """A linked tensor the kernel names by its number (its values came with the sync)."""
        found = self.connection._links.get(number)
        if found is None:
            raise ValueError(f"the kernel named a tensor {number} that the grader never linked")
        return found

    def grader(self, number: int, data: dict) -> Any:
        """One of this side's objects the kernel sends back: the object itself."""
        return self.connection.lent(number)


class Remote:
    """An object in the learner's kernel. Reading an attribute, calling, indexing, iterating
    and taking the length go to the kernel; the values come back as copies."""

    __slots__ = ("_connection", "_number", "_info")

    def __init__(self, connection: Connection, number: int, info: dict):
        object.__setattr__(self, "_connection", connection)
        object.__setattr__(self, "_number", number)
        object.__setattr__(self, "_info", info or {})

    def _ask(self, op: str, **fields: Any) -> Any:
        connection = object.__getattribute__(self, "_connection")
        number = object.__getattribute__(self, "_number")
        return connection.ask({"op": op, "target": number, **fields})

    def _send(self, value: Any) -> Any:
        return object.__getattribute__(self, "_connection").encode(value)

    @property
    def __class__(self) -> type:  # noqa: F811 (isinstance() falls back to it)
        """What isinstance() sees: `type` for a class of the learner's, else the nearest
        library class of its type (nn.Module for a module of the learner's)."""
        info = object.__getattribute__(self, "_info")
        if info.get("cl"):
            return type
        bases = _library_classes(info.get("mro", []))
        return bases[0] if bases else object

    @property
    def __bases__(self) -> tuple:
        """For issubclass(): the library classes a class of the learner's derives from."""
        info = object.__getattribute__(self, "_info")
        if not info.get("cl"):
            raise AttributeError("__bases__")
        return tuple(_library_classes(info.get("mro", [])[1:])[:1]) or (object,)

    def __getattr__(self, name: str) -> Any:
        info = object.__getattribute__(self, "_info")
        if name == "__name__" and info.get("n"):
            return info["n"]
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", name=name, value=self._send(value))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        answer = self._ask("call", args=self._send(args), kwargs=self._send(kwargs))
        if not isinstance(answer, dict) or set(answer) != {"result", "args", "kwargs"}:
            raise KernelGone(f"{BROKEN}: the kernel answered a call with something that is not a call's answer")
        write_back(args, answer["args"])
        write_back(kwargs, answer["kwargs"])
        return answer["result"]

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key=self._send(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._ask("setitem", key=self._send(key), value=self._send(value))

    def __len__(self) -> int:
        length = self._ask("len")
        if type(length) is not int:
            raise TypeError("the object's len() is not an int")
        return length

    def __iter__(self):
        items = self._ask("iter")
        if type(items) is not list:
            raise TypeError("iterating the object gave no list")
        return iter(items)

    def __contains__(self, item: Any) -> bool:
        return self._ask("contains", item=self._send(item)) is True

    def __instancecheck__(self, instance: Any) -> bool:
        """isinstance(x, cls) for a class of the learner's: asked of the kernel for one of its
        objects; none of the grader's is an instance of the learner's class."""
        if not isinstance(instance, Remote):
            return False
        return self._ask("isinstance", obj=object.__getattribute__(instance, "_number")) is True

    def __bool__(self) -> bool:
        return self._ask("bool") is True

    def __repr__(self) -> str:
        info = object.__getattribute__(self, "_info")
        return f"<{info.get('ty', 'object')} {info.get('n', '')} in the learner's kernel>".replace("  ", " ")

    def __str__(self) -> str:
        text = self._ask("str")
        return text if isinstance(text, str) else repr(self)


# Where a class named by the kernel may be looked up here (never imported for it).
LIBRARY_MODULES = ("torch", "numpy", "collections", "builtins")


def _library_classes(mro: list) -> list[type]:
    """The classes of `mro` (module, qualified name) that are library classes loaded here."""
    import sys
    found = []
    for entry in mro if isinstance(mro, list) else []:
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
            continue
        module, qualname = entry
        if module.split(".")[0] not in LIBRARY_MODULES or module not in sys.modules:
            continue
        obj: Any = sys.modules[module]
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and (module != "builtins" or obj is object):
            found.append(obj)
    return found


def write_back(mine: Any, theirs: Any) -> None:
    """Make the arrays, tensors, lists and dicts of `mine` (sent to the kernel) what the
    learner's call left of their copies, `theirs`, in place, as if the call had run here."""
    import numpy as np
    torch = __import__("sys").modules.get("torch")
    if type(mine) is np.random.Generator and type(theirs) is np.random.Generator:
        mine.bit_generator.state = theirs.bit_generator.state  # the draws the call made
    elif torch is not None and type(mine) is torch.Generator and type(theirs) is torch.Generator:
        mine.set_state(theirs.get_state())
    elif type(mine) is np.ndarray:
        if type(theirs) is np.ndarray and theirs.shape == mine.shape and mine.flags.writeable \
                and not np.array_equal(mine, theirs, equal_nan=mine.dtype.kind in "fc"):
            np.copyto(mine, theirs, casting="unsafe")
    elif torch is not None and isinstance(mine, torch.Tensor):
        if isinstance(theirs, torch.Tensor) and theirs.shape == mine.shape:
            with torch.no_grad():
                if not torch.equal(mine.detach(), theirs.to(mine.dtype)):
                    mine.detach().copy_(theirs)
    elif isinstance(mine, (list, tuple)) and isinstance(theirs, (list, tuple)):
        for a, b in zip(mine, theirs):
            write_back(a, b)
        if type(mine) is list and type(theirs) is list and len(mine) != len(theirs) or (
                type(mine) is list and any(type(a) in (int, float, str, bool, type(None)) and a != b
                                           for a, b in zip(mine, theirs))):
            mine[:] = theirs
    elif type(mine) is dict and type(theirs) is dict:
        for key in mine.keys() & theirs.keys():
            write_back(mine[key], theirs[key])
        if mine.keys() != theirs.keys():
            for key in mine.keys() - theirs.keys():
                del mine[key]
            for key in theirs.keys() - mine.keys():
                mine[key] = theirs[key]


def describe_forbidden(key: Any) -> dict:
    """A forbidden thing (see `_core.watch_calls`) as the kernel can find it again: a
    package's name, or the places (module, dotted name) where the object lives."""
    if isinstance(key, str):
        return {"package": key}
    import sys
    places = []
    module, qualname = getattr(key, "__module__", None), getattr(key, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        places.append([module, qualname])
    name = getattr(key, "__name__", None)
    if isinstance(name, str):
        for home in ("torch.nn.functional", "torch", "torch.nn", "torch.optim", "torch.nn.utils", "numpy"):
            if getattr(sys.modules.get(home), name, None) is key:
                places.append([home, name])
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch.Tensor, name, None) is key:
            places.append(["torch", f"Tensor.{name}"])
    return {"object": places}


class RemoteWatch:
    """`_core.watch_calls` while a check runs here: the same watch, run in the kernel around
    each request (the learner's code runs there). `used` is filled when the watch ends."""

    def __init__(self, connection: Connection, forbidden: dict):
        self.connection = connection
        self.used: list[str] = []
        self.specs = [{**describe_forbidden(key), "name": name} for key, name in forbidden.items()]

    def note(self, name: str) -> None:
        if name not in self.used:
            self.used.append(name)

    def look_at(self, obj: Any) -> None:
        if isinstance(obj, Remote):
            self.connection.ask({"op": "watch_look", "target": object.__getattribute__(obj, "_number")})
            for name in self.connection.ask({"op": "watch_stop"}) or []:
                self.note(str(name))
            self.connection.ask({"op": "watch_start", "forbidden": self.specs})

    def __enter__(self) -> "RemoteWatch":
        self.connection.ask({"op": "watch_start", "forbidden": self.specs})
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in self.connection.ask({"op": "watch_stop"}) or []:
            self.note(str(name))
        # What the kernel cannot take back: the shortcuts and the tampering the learner's
        # cells show in their text, read here (the watch above runs beside the learner's
        # code, which could switch it off).
        scan = self.connection.scan
        if scan is None:
            return
        packages = [str(spec["package"]) for spec in self.specs if "package" in spec]
        for name in scan.shortcuts(shortcut_scan.places_of(self.specs), packages):
            self.note(name)
        tampering = scan.tampering()
        if tampering:
            # Failed here, told in its own words (a shortcut found as well is what
            # _core.refuse_shortcuts tells instead).
            from autograder.checks import _core
            _core.fail("Your cells reach for what watches the checks for library shortcuts ("
                       + "; ".join(tampering[:3]) + "), which could switch that watch off: a "
                       "check that watches gives no points while they do. Remove that code.")


def remote_set(connection: Connection, obj: Any, path: tuple, value: Any) -> Any:
    """`_core.set_inside` for an object in the kernel: set there, not in a copy here."""
    if not isinstance(obj, Remote):
        return NotImplemented
    connection.ask({"op": "set_inside", "target": object.__getattribute__(obj, "_number"),
                    "path": connection.encode(tuple(path)), "value": connection.encode(value)})
    return None


def remote_graft(connection: Connection, obj: Any, cls: Any, exclude: tuple, require: tuple) -> Any:
    """`_core.with_methods_of` for a class of the learner's: done in the kernel, on `obj` lent
    there; the result is a handle on it, whose calls of its own class reach `obj` here."""
    if not isinstance(cls, Remote):
        return NotImplemented
    return connection.ask({"op": "graft", "value": connection.encode(obj),
                           "cls": object.__getattribute__(cls, "_number"),
                           "exclude": [str(e) for e in exclude], "require": [str(r) for r in require]})


def remote_global(connection: Connection, fn: Any, name: str, value: Any) -> Any:
    """`_core.global_replaced` for a function in the kernel: the global swapped there."""
    if not isinstance(fn, Remote):
        return NotImplemented

    @contextlib.contextmanager
    def swapped():
        target = object.__getattribute__(fn, "_number")
        swapped = connection.ask({"op": "swap_global", "target": target, "name": name,
                                  "value": connection.encode(value)})
        try:
            yield
        finally:
            if swapped is True:
                connection.ask({"op": "restore_global", "target": target, "name": name})
    return swapped()


def global_names(source: str) -> list[str]:
    """The names a cell reads that it does not define and that are not built-ins."""
    tree = ast.parse(source)
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    loaded = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    seen: list[str] = []
    for name in loaded:
        if name not in stored and name not in seen and not hasattr(builtins, name):
            seen.append(name)
    return seen


def checks_module_name(cells: list) -> str | None:
    """The check module a notebook imports as `checks` (from its locked set-up cell)."""
    for cell in cells:
        if cell.get("cell_type") == "code":
            found = CHECKS_IMPORT.search(cell.get("source", ""))
            if found:
                return found.group(1)
    return None


def is_test_cell(cell: dict) -> bool:
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(nbgrader.get("grade")) and not nbgrader.get("solution")


def _error_output(error: BaseException) -> dict:
    """The error output a kernel would have shown: for a failed check, the learner's own
    frames (from the kernel) above the check's message, none of the grader's."""
    cause = error if isinstance(error, LearnerError) else error.__cause__
    remote = getattr(cause, "remote_traceback", "") if cause is not None else ""
    lines: list[str] = []
    if remote:
        lines += ["Your code raised an error:", *remote.rstrip("\n").splitlines(), ""]
    name = type(error).__name__
    if not isinstance(error, LearnerError):
        if remote or not hasattr(error, "_render_traceback_"):
            lines += f"{name}: {error}".splitlines()
        else:
            lines += error._render_traceback_()
    return {"output_type": "error", "ename": name, "evalue": str(error), "traceback": lines}


def run_cell(source: str, checks: Any, connection: Connection,
             scratch: Path | None = None) -> tuple[list[dict], bool]:
    """Run a test cell here with `checks` and the learner's names as handles; return the
    cell's outputs (printed lines, then the error if one was raised) and whether it passed.
    `scratch`: a folder both sides see (the kernel's own), for files the learner's code
    writes and the check reads."""
    from autograder.checks import _core

    printed = io.StringIO()
    namespace: dict[str, Any] = {"checks": checks, "__name__": "__course_judge__"}
    error: BaseException | None = None
    _core.REMOTE_WATCH = lambda forbidden: RemoteWatch(connection, forbidden)
    _core.REMOTE_SET = functools.partial(remote_set, connection)
    _core.REMOTE_GLOBAL = functools.partial(remote_global, connection)
    _core.SCRATCH = None if scratch is None else str(scratch)
    _core.REMOTE_ADOPT = lambda model: connection.ask({"op": "adopt", "value": connection.encode(model)})
    _core.REMOTE_GRAFT = functools.partial(remote_graft, connection)
    _core.REMOTE_SHAPES = lambda module: (
        {str(k): tuple(v) for k, v in module._ask("state_shapes").items()}
        if isinstance(module, Remote) else NotImplemented)
    _core.REMOTE_STEP_HOOK = lambda hook: connection.ask({"op": "step_hook", "hook": connection.encode(hook)})
    try:
        for name in global_names(source):
            if name != "checks":
                try:
                    namespace[name] = connection.ask({"op": "global", "name": name})
                except LearnerError as missing:
                    if not isinstance(missing, NameError):
                        raise
                    raise NameError(str(missing)) from None
        code = compile(source, "<test cell>", "exec")
        with contextlib.redirect_stdout(printed):
            exec(code, namespace)  # the test cell: trusted code, from the gradebook
    except KernelGone:
        raise
    except Exception as exc:  # the check's verdict, or the learner's error it did not catch
        error = exc
    finally:
        with contextlib.suppress(KernelGone, LearnerError):
            connection.ask({"op": "sync"})  # the kernel's generator as the cell leaves it
        _core.REMOTE_WATCH = _core.REMOTE_SET = _core.REMOTE_STEP_HOOK = None
        _core.REMOTE_GLOBAL = _core.SCRATCH = _core.REMOTE_ADOPT = None
        _core.REMOTE_GRAFT = _core.REMOTE_SHAPES = None
    outputs: list[dict] = []
    if printed.getvalue():
        outputs.append({"output_type": "stream", "name": "stdout", "text": printed.getvalue()})
    if error is not None:
        outputs.append(_error_output(error))
    return outputs, error is None


class KernelConnection(Connection):
    """Requests to a Jupyter kernel over a Unix socket in the kernel's own folder.

    For each test cell the grader listens on the socket and asks the kernel, in one execute
    request, to run `__course_serve__(path)`: the kernel's main thread then answers requests
    on it (`judge_kernel.serve`) until the grader sends "done", and the execute request
    ends. A request costs a socket round trip, not a Jupyter message."""

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop, alive: Callable[[], Any]):
        super().__init__()
        self.client, self.loop, self.alive = client, loop, alive
        self.socket: Any = None

    async def _reply(self, msg_id: str) -> dict:
        while True:
            try:
                reply = await self.client.shell_channel.get_msg(timeout=REQUEST_POLL_S)
            except queue.Empty:
                if not await self.alive():
                    raise KernelGone("the kernel stopped while the grader was checking") from None
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                await self._drain()
                return reply

    async def _drain(self) -> None:
        # What the requests printed, and their busy/idle messages: read and dropped, so
        # that they neither pile up nor reach the next cell.
        while True:
            try:
                await self.client.iopub_channel.get_msg(timeout=0)
            except queue.Empty:
                return

    async def boot(self) -> None:
        msg_id = self.client.execute(BOOT, silent=True, store_history=False)
        reply = await self._reply(msg_id)
        if reply["content"].get("status") != "ok":
            raise KernelGone("the grader could not start its helper in the kernel: "
                             + str(reply["content"].get("evalue", ""))[:200])

    async def open(self, folder: Path) -> str:
        """Start the kernel's session on a socket in `folder`; return the execute request's id."""
        import socket
        path = folder / "judge.sock"
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            path.chmod(0o777)  # the kernel's user in its namespace is not the grader's
            listener.listen(1)
            listener.setblocking(False)
            msg_id = self.client.execute(f"__course_serve__({str(path)!r})", silent=True,
                                         store_history=False)
            while True:
                try:
                    self.socket, _ = listener.accept()
                    break
                except BlockingIOError:
                    pass
                try:  # the kernel answered without connecting: its helper is gone
                    reply = await self.client.shell_channel.get_msg(timeout=0.005)
                    if reply.get("parent_header", {}).get("msg_id") == msg_id:
                        raise KernelGone(f"{BROKEN}: the kernel did not start the grader's session: "
                                         + str(reply["content"].get("evalue", ""))[:200])
                except queue.Empty:
                    pass
                if not await self.alive():
                    raise KernelGone("the kernel stopped while the grader was checking")
        finally:
            listener.close()
            path.unlink(missing_ok=True)
        self.socket.setblocking(True)
        return msg_id

    async def close(self, msg_id: str) -> None:
        """End the kernel's session and wait for its execute request to end."""
        import struct
        try:
            self.socket.sendall(struct.pack("!Q", 4) + b"done")
        except OSError:
            pass
        self.socket.close()
        await self._reply(msg_id)

    def _read(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.socket.recv(min(size - len(data), 1 << 20))
            if not chunk:
                raise KernelGone("the kernel stopped while the grader was checking")
            data += chunk
        return bytes(data)

    def _send(self, text: str) -> None:
        import struct
        payload = text.encode()
        try:
            self.socket.sendall(struct.pack("!Q", len(payload)) + payload)
        except OSError as exc:
            raise KernelGone("the kernel stopped while the grader was checking") from exc

    def ask_text(self, text: str) -> str:
        """Send a request; answer the kernel's requests about the grader's lent objects
        (the learner's code calling them) until the request's own answer comes."""
        import struct
        self._send(text)
        while True:
            try:
                (size,) = struct.unpack("!Q", self._read(8))
            except OSError as exc:
                raise KernelGone("the kernel stopped while the grader was checking") from exc
            if size > MAX_ANSWER_BYTES:
                raise KernelGone(f"{BROKEN}: the kernel answered with {size} bytes")
            message = self._read(size).decode("utf-8", errors="replace")
            if not message.startswith('{"cb"'):
                return message
            self._send(self.callback_text(message))


class NotebookJudge:
    """Runs the test cells of one notebook in the grader, against one kernel. `trusted`: the
    source of each test cell (grade id -> source) as the gradebook holds it; only those run
    here, never what a submission wrote."""

    def __init__(self, checks_module: str, trusted: dict[str, str], built_here: tuple[str, ...] = (),
                 scan: shortcut_scan.Scan | None = None):
        self.checks = importlib.import_module(f"autograder.checks.{checks_module}")
        self.built_here, self.scan = built_here, scan
        if _torch() is not None:
            _torch().set_num_threads(1)  # see pool.start_worker
        self.trusted = trusted
        self.booted_for: Any = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge")

    async def run(self, cell: dict, client: Any, alive: Callable[[], Any], folder: Path) -> bool:
        """Run a test cell here; `folder`: the kernel's own, where the session's socket goes."""
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if self.trusted.get(grade_id) != cell.get("source"):
            # nbgrader restores every test cell it knows; one it put back commented out (the
            # learner deleted it) or one it does not know earns nothing, and runs nowhere.
            cell["outputs"] = [_as_node(_error_output(RuntimeError(
                "This test cell is not the assignment's (it was deleted, or added): it earns no "
                "points. Start from the released notebook to keep its test cells.")))]
            return False
        loop = asyncio.get_running_loop()
        connection = KernelConnection(client, loop, alive)
        connection.built_here, connection.scan = self.built_here, self.scan
        if self.booted_for is not client:
            await connection.boot()
            self.booted_for = client
        msg_id = await connection.open(folder)
        try:
            outputs, ok = await loop.run_in_executor(self._pool, run_cell, cell["source"], self.checks,
                                                     connection, folder)
        finally:
            await connection.close(msg_id)
        cell["outputs"] = [_as_node(o) for o in outputs]
        return ok

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _as_node(output: dict) -> Any:
    import nbformat
    return nbformat.from_dict(output)


def trusted_cells(db_url: str, notebook: str, assignment: str) -> tuple[dict[str, str], list[str]]:
    """From the gradebook (where nbgrader's assignment registration put them, as its own
    OverwriteCells reads them), in one session: grade id -> source of the notebook's test
    cells, and the sources of all the cells it tracks (the set-up cell names the check module)."""
    from nbgrader.api import Gradebook
    with Gradebook(db_url) as gradebook:
        source = gradebook.find_notebook(notebook, assignment)
        graded = {cell.name for cell in source.grade_cells}
        solutions = {cell.name for cell in source.solution_cells}
        tests = {cell.name: cell.source for cell in source.source_cells
                 if cell.name in graded and cell.name not in solutions}
        return tests, [cell.source for cell in source.source_cells]


def judge_for(resources: dict, cells: list, given: frozenset[str] = frozenset()) -> NotebookJudge | None:
    """The judge of a notebook (nbgrader's `resources` say which), or None if its checks run
    in the kernel. `cells`: the submission's, read for shortcuts (shortcut_scan); `given`:
    the sources of the cells the assignment gives, which are not the learner's."""
    info = (resources or {}).get("nbgrader") or {}
    if info.get("assignment") not in JUDGED:
        return None
    trusted, tracked = trusted_cells(info["db_url"], info["notebook"], info["assignment"])
    module = checks_module_name([{"cell_type": "code", "source": source} for source in tracked])
    if not module:
        return None
    return NotebookJudge(module, trusted, BUILT_IN_KERNEL.get(info["assignment"], ()),
                         shortcut_scan.Scan(cells, given))
