"""A corpus of hostile and broken submissions, generated for any exercise (issue 8).

Every case is built from the exercise's release notebook (what a learner receives) and the
code of its solution cells, so the same attacks apply to every exercise without being written
again: `cases(setting)` returns them for one exercise, and tests/test_hostile_corpus.py grades
them all in one class with `course grade`'s own `grade_class`.

Each case states the outcome a grader that cannot be fooled must give (`Expect`): full marks,
zero, or the score its honest code earns when the checks run in the test process
(`Expect.IN_PROCESS`, for submissions that tamper with the notebook around a known mistake);
and, for a zero without grades, a phrase its reason must contain. An attack that wins today is
still written with the outcome it must get: the test file marks it as a known hole.

Attacks that only try to do harm (rewrite the gradebook, plant files, kill processes) are
appended to a correct solution, so that their score stays full and any harm shows as a changed
grade or a stray file. Attacks that try to forge a score leave the stub (or a known mistake) in
place, so that any success shows as points the code did not earn.
"""
from __future__ import annotations

import ast
import base64
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import nbformat
from nbformat import NotebookNode

from coursetools.judge import JUDGED
from exercise_tools import read, release_path, solution_path, with_cells
from mistakes import Mistake, for_exercise

Built = Union[bytes, NotebookNode]


@dataclass(frozen=True)
class Expect:
    """The outcome a case must get: its score, and what its reason must say."""
    FULL, ZERO, IN_PROCESS = "full", "zero", "in_process"
    # For `reason`: nbgrader cannot grade the file as it is, so either a readable reason or
    # none (graded normally) is right; no particular wording is asked for.
    ANY_READABLE = "*"
    score: str
    # "" : graded normally (no reason); ANY_READABLE; otherwise a phrase the reason must contain.
    reason: str = ""


@dataclass(frozen=True)
class Case:
    name: str  # also the student id it is graded under
    build: Callable[[NotebookNode, dict[str, str]], Built]  # (release, solution cells) -> file
    expect: Expect
    # For Expect.IN_PROCESS: the cells (grade_id -> source) whose honest score it must get.
    code: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Setting:
    """What some attacks need to know about the run they attack."""
    name: str          # the exercise
    root: Path         # the course repository (its solutions/ are a target)
    class_dir: Path    # absolute: the gradebook's absolute path is an attack
    timeout: float     # seconds per submission, for the sleeps just under and over it
    mistake: Mistake   # the known mistake that the tampering cases wrap
    port: int          # a listener on the host's loopback, which no kernel may reach
    other: str         # another assignment, whose notebook is submitted as this one


SHORTCUT = "does the exercise for you"


# ---------------------------------------------------------------- notebook surgery

def solution_cells(name: str) -> dict[str, str]:
    """grade_id -> source of the solution cells of `name`'s source notebook (markers kept, as a
    learner who pasted the solution would have them)."""
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in read(solution_path(name)).cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def defined_names(cells: dict[str, str]) -> dict[str, ast.stmt]:
    """The functions and classes the solution cells define at top level, by name."""
    found = {}
    for source in cells.values():
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found[node.name] = node
    return found


def _grade(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _is_test(cell) -> bool:
    return bool(_grade(cell).get("grade")) and cell.cell_type == "code"


def _appended(release: NotebookNode, cells: dict[str, str], extra: str) -> NotebookNode:
    """`release` with every solution cell filled in and `extra` run at the end of the last one."""
    last = list(cells)[-1]
    return with_cells(release, {**cells, last: cells[last] + "\n\n" + extra.strip() + "\n"})


def _stub_plus(release: NotebookNode, extra: str) -> NotebookNode:
    """`release` as handed out (the stub raises NotImplementedError), `extra` after the last stub."""
    last = [c for c in release.cells if _grade(c).get("solution")][-1]
    stub = _grade(last)["grade_id"]
    return with_cells(release, {stub: last.source + "\n\n" + extra.strip() + "\n"})


def _mistaken(release: NotebookNode, mistake: Mistake) -> NotebookNode:
    return with_cells(release, {mistake.cell: mistake.source})


def _tests_edited(nb: NotebookNode, edit: Callable[[list], list]) -> NotebookNode:
    """`nb` with its list of test cells replaced by `edit(test cells)`, in place of the first one."""
    nb = copy.deepcopy(nb)
    first = next(i for i, c in enumerate(nb.cells) if _is_test(c))
    tests = [c for c in nb.cells if _is_test(c)]
    rest = [c for c in nb.cells if not _is_test(c)]
    nb.cells = rest[:first] + edit(tests) + rest[first:]
    return nb


def _with_each_test(nb: NotebookNode, change: Callable[[NotebookNode], None]) -> NotebookNode:
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if _is_test(cell):
            change(cell)
    return nb


def _pasted(cell) -> NotebookNode:
    """A copy of `cell` as Jupyter pastes it: the same metadata, a cell id of its own."""
    cell = copy.deepcopy(cell)
    if "id" in cell:
        cell.id = (cell.id + "-pasted")[-64:]
    return cell


def _bytes(nb: NotebookNode) -> bytes:
    return nbformat.writes(nb).encode()


# ---------------------------------------------------------------- attack code (runs in the kernel)

GRADEBOOK = '''
import sqlite3
_outcome = []
for _path in {paths!r}:
    try:
        _db = sqlite3.connect(f"file:{{_path}}?mode=rw", uri=True)
        _db.execute("UPDATE grade SET manual_score = 0, auto_score = 0")
        _db.execute("UPDATE grade_cells SET max_score = 1000")
        _db.commit()
        _outcome.append("WROTE " + _path)
    except Exception as _exc:
        _outcome.append(f"FAILED {{type(_exc).__name__}}")
print("GRADEBOOK", _outcome)
'''

# Executes, from the first notebook found, only the definitions and imports of its solution
# cells: what a cheater would copy, and none of another hostile student's side effects.
STEAL = '''
import ast as _ast, glob as _glob, json as _json
def _steal(patterns):
    for _pattern in patterns:
        for _path in sorted(_glob.glob(_pattern), key=lambda p: "/solution/" not in p):
            try:
                _cells = _json.load(open(_path))["cells"]
            except Exception:
                continue
            _code = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in _cells if c.get("metadata", {{}}).get("nbgrader", {{}}).get("solution")]
            if not _code or any("NotImplementedError()" in s for s in _code):
                continue
            for _source in _code:
                try:
                    _tree = _ast.parse(_source)
                except SyntaxError:
                    continue
                _tree.body = [n for n in _tree.body if isinstance(
                    n, (_ast.FunctionDef, _ast.ClassDef, _ast.Import, _ast.ImportFrom))]
                exec(compile(_tree, _path, "exec"), globals())
            return _path
    return None
print("STOLEN FROM", _steal({patterns!r}))
'''

NOOP_CHECKS = '''
import sys as _sys
for _name, _module in list(_sys.modules.items()):
    if _name.startswith("autograder.checks") and _module is not None:
        for _attr, _value in list(vars(_module).items()):
            if callable(_value) and not isinstance(_value, type):
                setattr(_module, _attr, lambda *args, **kwargs: None)
'''

REBIND_CHECKS = '''
class _Pass:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None
checks = _Pass()
'''

# Every later cell is wrapped in try/except before it runs, and what still escapes is not shown.
# The grader calls a judged notebook's functions through `__course_rpc__`: replace it.
HIJACK_JUDGE = '''
def _hijack():
    get_ipython().user_ns["__course_serve__"] = lambda path: "full marks, please"
'''

PATCHED_SHELL = '''
_shell = get_ipython()
def _swallow(lines):
    return ["try:\\n", *["    " + line for line in lines], "\\n    pass\\nexcept BaseException:\\n    pass\\n"]
_shell.input_transformers_post.append(_swallow)
_shell.set_custom_exc((Exception,), lambda shell, etype, value, tb, tb_offset=None: None)
_shell.showtraceback = lambda *args, **kwargs: None
'''

# Replaces the reference implementation inside the checks by the learner's own objects, so that
# a wrong implementation is compared with itself.
PATCH_REFERENCE = '''
import sys as _sys
_mine = {{n: globals()[n] for n in {names!r}}}
for _name, _module in list(_sys.modules.items()):
    if _name.startswith("autograder.checks") and _module is not None:
        for _attr, _value in list(vars(_module).items()):
            if getattr(_value, "__module__", "") == {module!r} and getattr(_value, "__name__", "") in _mine:
                setattr(_module, _attr, _mine[_value.__name__])
'''

# The kernel's watch for library shortcuts, switched off where it runs (beside the learner's
# code): only the grader's own reading of the cells (shortcut_scan) still sees the shortcut.
WATCH_OFF = '''
import autograder.checks._core as _c
_c.Watch.__enter__ = lambda self: self
_c.Watch.__exit__ = lambda self, *exc: None
_c.Watch.look_at = lambda self, obj: None
'''

PATCH_NUMPY = '''
import numpy as _np
_np.allclose = lambda *args, **kwargs: True
_np.testing.assert_allclose = lambda *args, **kwargs: None
'''

PLANT = '''
import os as _os
for _folder in {folders!r}:
    try:
        _os.makedirs(_folder, exist_ok=True)
        with open(_os.path.join(_folder, "planted.py"), "w") as _handle:
            _handle.write("raise SystemExit('planted')")
    except OSError:
        pass
'''

# Only as the sandbox's unprivileged user (uid 65534) does it touch /tmp or signal every
# process in reach: should the sandbox ever fail to start around a kernel, these two attacks
# must not wipe the machine's real /tmp or kill the grader's own processes (the class folder
# and the kernels' pool, which belong to the test, are still attacked, so the test fails).
SANDBOXED_USER = 65534

DELETE = '''
import glob as _glob, os as _os, shutil as _shutil
from ipykernel.kernelapp import IPKernelApp as _App
_pool = _os.path.dirname(_os.path.dirname(_os.path.abspath(_App.instance().connection_file)))
_targets = [*_glob.glob("*"), *_glob.glob(".*"), *_glob.glob({class_dir!r} + "/*"), *_glob.glob(_pool + "/*")]
if _os.getuid() == {nobody}:
    _targets += _glob.glob("/tmp/*")
for _path in _targets:
    try:
        _shutil.rmtree(_path) if _os.path.isdir(_path) and not _os.path.islink(_path) else _os.remove(_path)
    except OSError:
        pass
print("DELETED", len(_targets))
'''

NETWORK = '''
import socket as _socket
for _address in [("127.0.0.1", {port}), ("1.1.1.1", 80), ("pypi.org", 443)]:
    try:
        _socket.create_connection(_address, timeout=3).close()
        print("NETWORK CONNECTED", _address)
    except OSError as _exc:
        print("NETWORK REFUSED", _address, type(_exc).__name__)
'''

KILL_OTHERS = '''
import os as _os, signal as _signal
_killed = 0
if _os.getuid() == {nobody}:
    try:
        _os.kill(-1, _signal.SIGKILL)
    except OSError:
        pass
    for _n in range(2, 4096):
        for _kill in (_os.kill, _os.killpg):
            if _n in (_os.getpid(), _os.getpgrp()):
                continue
            try:
                _kill(_n, _signal.SIGKILL)
                _killed += 1
            except OSError:
                pass
print("KILLED", _killed, "as uid", _os.getuid())
'''

# A few hundred processes, bounded: each sleeps, then leaves.
FORK_BOMB = '''
import os as _os, time as _time
_children = []
for _ in range(300):
    try:
        _pid = _os.fork()
    except OSError:
        break
    if _pid == 0:
        _time.sleep(60)
        _os._exit(0)
    _children.append(_pid)
print("FORKED", len(_children))
'''

# Touches memory until the address-space limit refuses more, then lets go of it (the traceback
# keeps the frame alive, so the list is emptied before the error leaves it).
MEMORY_BOMB = '''
import numpy as _np
def _hoard():
    held = []
    try:
        while True:
            held.append(_np.ones(1 << 25))  # 256 MiB, written
    except MemoryError:
        held.clear()
        raise
_hoard()
'''

OUTPUT_100MB = '''
import sys as _sys
_line = ("x" * 1023 + "\\n") * 1024
for _ in range(100):
    _sys.stdout.write(_line)
'''

ALWAYS_EQUAL_LIST = '''
class AlwaysEqual(list):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = None
'''

ALWAYS_EQUAL_ARRAY = '''
import numpy as _np
class AlwaysEqual(_np.ndarray):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = None
def _like(args):
    first = next((a for a in args if hasattr(a, "shape")), None)
    shape = tuple(first.shape) if first is not None else (1,)
    return _np.zeros(shape).view(AlwaysEqual)
'''


def _forged(cells: dict[str, str], header: str, value: str, init: str = "") -> str:
    """A cell defining every function and class of the solution so that they return `value`
    (an expression of `args`), with `header` before them; a class also runs `init` when built."""
    parts = [header.strip()]
    for name, node in defined_names(cells).items():
        if isinstance(node, ast.FunctionDef):
            parts.append(f"def {name}(*args, **kwargs):\n    return {value}\n")
        else:
            bases = ", ".join(ast.unparse(b) for b in node.bases) or "object"
            parts.append(f"class {name}({bases}):\n"
                         "    def __init__(self, *args, **kwargs):\n"
                         "        super().__init__()\n"
                         + (f"        {init}\n" if init else "") +
                         "    def load_state_dict(self, *args, **kwargs):\n"
                         "        return None\n"
                         "    def forward(self, *args, **kwargs):\n"
                         f"        return {value}\n"
                         "    def __eq__(self, other):\n"
                         "        return True\n"
                         "    __hash__ = object.__hash__\n")
    return "\n\n".join(parts) + "\n"


def _library_module(release: NotebookNode) -> str:
    """The reference module the exercise's solution is extracted into (llmref.attention, ...)."""
    return release.metadata["course"]["library_module"].removesuffix(".py").replace("/", ".")


def _reference_import(release: NotebookNode, cells: dict[str, str]) -> str:
    return f"from {_library_module(release)} import {', '.join(defined_names(cells))}\n"


def _non_utf8(nb: NotebookNode) -> bytes:
    text = _bytes(nb)
    marker = b"# Exercise"
    # Latin-1 bytes in a markdown cell, as an editor set to another encoding would save them.
    return text.replace(marker, b"# Exerc\xeece \xff\xfe", 1) if marker in text else b"\xff\xfe" + text


def _huge(nb: NotebookNode) -> NotebookNode:
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb.cells if c.cell_type == "code" and not _grade(c).get("solution")
                and not _is_test(c) and not _grade(c).get("locked"))
    blob = base64.b64encode(bytes(range(256)) * (150 << 10)).decode()  # 37.5 MiB -> 50 MiB of text
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": blob})]
    return nb


def _prefilled(nb: NotebookNode) -> NotebookNode:
    """Every test cell already shows a pass (and no error) from a run that never happened."""
    def fake(cell):
        cell.execution_count = 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="\N{CHECK MARK} passed\n")]
    return _with_each_test(nb, fake)


def _strip_nbgrader(nb: NotebookNode) -> NotebookNode:
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    return nb


def _other_assignment(other: str) -> NotebookNode:
    """Another assignment's notebook, with that assignment's solution: full marks over there."""
    return with_cells(read(release_path(other)), solution_cells(other))


def _renamed_ids(cell) -> None:
    cell.metadata.nbgrader["grade_id"] = "renamed_" + cell.metadata.nbgrader["grade_id"]


def _inflated_points(cell) -> None:
    cell.metadata.nbgrader["points"] = 100 * cell.metadata.nbgrader["points"]


def _emptied(cell) -> None:
    cell.source = "pass  # the test was here"


def _as_markdown(cell) -> None:
    cell.cell_type = "markdown"
    cell.pop("outputs", None)
    cell.pop("execution_count", None)


def _setup_forged(nb: NotebookNode) -> NotebookNode:
    """The locked set-up cell rewritten so that `checks` is a stand-in that passes everything."""
    nb = copy.deepcopy(nb)
    setup = next(c for c in nb.cells if c.cell_type == "code" and _grade(c).get("locked")
                 and not _is_test(c))
    setup.source = setup.source + "\n\n" + REBIND_CHECKS.strip() + "\n"
    return nb


def _kernelspec_swapped(nb: NotebookNode) -> NotebookNode:
    nb = copy.deepcopy(nb)
    nb.metadata["kernelspec"] = {"name": "bash", "display_name": "Bash", "language": "bash"}
    return nb


def cases(s: Setting) -> list[Case]:
    """Every hostile or broken submission of the corpus, for the exercise of `s`."""
    name, class_dir = s.name, str(s.class_dir)
    full, zero = Expect(Expect.FULL), Expect(Expect.ZERO)
    honest = Expect(Expect.IN_PROCESS)
    mistake = {s.mistake.cell: s.mistake.source}
    stopped = Expect(Expect.ZERO, "stopped the Python process")
    too_long = Expect(Expect.ZERO, f"ran longer than {s.timeout:g} s")
    invalid = Expect(Expect.ZERO, "not a valid notebook")
    refused = Expect(Expect.ZERO, "your notebook could not be graded: ")
    others = [f"../../../submitted/*/{name}/*.ipynb", f"{class_dir}/submitted/*/{name}/*.ipynb"]
    sources = [f"../../../source/{name}/*.ipynb", f"{class_dir}/source/{name}/*.ipynb",
               f"{s.root}/solutions/{name}/*.ipynb", f"{s.root}/solutions/*/*.ipynb"]

    def appended(extra):
        return lambda release, cells: _appended(release, cells, extra)

    def stub_plus(extra):
        return lambda release, cells: _stub_plus(release, extra)

    def around_mistake(change):
        return lambda release, cells: change(_mistaken(release, s.mistake))

    found = [
        # The gradebook, rewritten by a relative path and by the class's absolute path.
        Case("gradebook_relative", appended(GRADEBOOK.format(
            paths=["../../../gradebook.db", "../../gradebook.db", "../gradebook.db", "gradebook.db"])), full),
        Case("gradebook_absolute", appended(GRADEBOOK.format(paths=[f"{class_dir}/gradebook.db"])), full),
        # Answers taken from somewhere else: the reference, a classmate, the source notebook.
        Case("import_reference", lambda release, cells: with_cells(
            release, {list(cells)[-1]: _reference_import(release, cells),
                      **{k: "" for k in list(cells)[:-1]}}), zero),
        Case("copy_other_student", stub_plus(STEAL.format(patterns=others)), zero),
        Case("read_hidden_tests", stub_plus(STEAL.format(patterns=sources)), zero),
        # Scores forged in the learner's kernel.
        Case("noop_checks_module", stub_plus(NOOP_CHECKS), zero),
        Case("rebind_checks_name", stub_plus(REBIND_CHECKS), zero),
        Case("patched_shell", stub_plus(PATCHED_SHELL), zero),
        Case("hijack_judge", lambda release, cells: with_cells(
            release, {list(cells)[-1]: _forged(cells, HIJACK_JUDGE, "_hijack()", init="_hijack()"),
                      **{k: "" for k in list(cells)[:-1]}}),
             Expect(Expect.ZERO, "broke the grader's connection" if name in JUDGED else "")),
        # Reaching into the checks' modules is tampering, which the grader reads in the cell
        # itself (shortcut_scan): every check that watches for shortcuts loses its points,
        # and in these exercises every check does.
        Case("patch_reference", lambda release, cells: _appended(
            release, mistake, PATCH_REFERENCE.format(names=list(defined_names(cells)),
                                                     module=_library_module(release))),
             zero),
        Case("patch_numpy_allclose", lambda release, cells: _appended(release, mistake, PATCH_NUMPY),
             honest, mistake),
        Case("setup_cell_forged", lambda release, cells: _setup_forged(release), zero),
        Case("prefilled_outputs", lambda release, cells: _prefilled(release), zero),
        Case("always_equal_list", lambda release, cells: with_cells(
            release, {list(cells)[-1]: _forged(cells, ALWAYS_EQUAL_LIST, "AlwaysEqual([AlwaysEqual(), AlwaysEqual()])"),
                      **{k: "" for k in list(cells)[:-1]}}), zero),
        Case("always_equal_ndarray", lambda release, cells: with_cells(
            release, {list(cells)[-1]: _forged(cells, ALWAYS_EQUAL_ARRAY, "(_like(args), _like(args))"),
                      **{k: "" for k in list(cells)[:-1]}}), zero),
        # The test cells and their metadata tampered with, around a known mistake: the mistake's
        # own score, no more.
        Case("edited_test_cells", around_mistake(lambda nb: _with_each_test(nb, _emptied)), honest, mistake),
        # nbgrader puts deleted test cells back commented out: they run nothing and earn nothing.
        Case("deleted_test_cells", around_mistake(lambda nb: _tests_edited(nb, lambda t: [])), zero),
        Case("reordered_test_cells", around_mistake(lambda nb: _tests_edited(nb, lambda t: t[::-1])),
             honest, mistake),
        Case("duplicated_test_cells", around_mistake(lambda nb: _tests_edited(
            nb, lambda t: [each for c in t for each in (c, _pasted(c))])), refused),
        Case("test_cells_to_markdown", around_mistake(lambda nb: _with_each_test(nb, _as_markdown)),
             honest, mistake),
        Case("edited_points", around_mistake(lambda nb: _with_each_test(nb, _inflated_points)),
             honest, mistake),
        Case("edited_grade_ids", around_mistake(lambda nb: _with_each_test(nb, _renamed_ids)),
             refused),
        Case("no_nbgrader_metadata", lambda release, cells: _strip_nbgrader(with_cells(release, cells)), zero),
        Case("kernelspec_swapped", lambda release, cells: _kernelspec_swapped(with_cells(release, cells)), full),
        # Harm to the class folder and the machine, next to a correct solution.
        Case("plant_in_source", appended(PLANT.format(folders=[
            f"../../../source/{name}", f"{class_dir}/source/{name}", f"{class_dir}/autograded",
            f"{s.root}/solutions/{name}", "."])), full),
        Case("delete_files", appended(DELETE.format(class_dir=class_dir, nobody=SANDBOXED_USER)), full),
        Case("network", appended(NETWORK.format(port=s.port)), full),
        Case("kill_other_processes", appended(KILL_OTHERS.format(nobody=SANDBOXED_USER)), full),
        Case("fork_bomb", appended(FORK_BOMB), full),
        Case("memory_bomb", appended(MEMORY_BOMB), full),
        Case("output_100mb", appended(OUTPUT_100MB), full),
        Case("asks_for_input", appended("input('your name? ')"), full),
        Case("os_exit", appended("import os\nos._exit(1)"), stopped),
        Case("segfault", appended("import ctypes\nctypes.string_at(0)"), stopped),
        Case("endless_loop", appended("while True:\n    pass"), too_long),
        Case("sleep_under_limit", appended(f"import time\ntime.sleep({s.timeout - 8:g})"), full),
        Case("sleep_over_limit", appended(f"import time\ntime.sleep({s.timeout + 10:g})"), too_long),
        Case("syntax_error", lambda release, cells: with_cells(
            release, {k: v.replace("def ", "def def ", 1).replace("class ", "class class ", 1)
                      for k, v in cells.items()}), zero),
        # Files that are not this assignment's notebook, or not a notebook at all.
        Case("other_assignment", lambda release, cells: _other_assignment(s.other), refused),
        Case("huge_notebook", lambda release, cells: _huge(with_cells(release, cells)), full),
        Case("non_utf8", lambda release, cells: _non_utf8(with_cells(release, cells)), invalid),
        Case("empty_file", lambda release, cells: b"", invalid),
        Case("truncated_json", lambda release, cells: _bytes(with_cells(release, cells))[:5000], invalid),
        Case("json_not_a_notebook", lambda release, cells: json.dumps({"cells": 5, "metadata": []}).encode(),
             invalid),
    ]
    # Each library shortcut the exercise's known mistakes use (nn.MultiheadAttention,
    # F.scaled_dot_product_attention, ...): refused, so its honest score is below full marks.
    for known in for_exercise(name):
        if SHORTCUT in known.says:
            found.append(Case(f"shortcut_{known.name}", (lambda m: lambda release, cells:
                                                         _mistaken(release, m))(known),
                              honest, {known.cell: known.source}))
            # The same shortcut with the kernel's watch switched off first: no better off.
            found.append(Case(f"shortcut_{known.name}_watch_off", (lambda m: lambda release, cells:
                                                                   _appended(release, {m.cell: m.source},
                                                                             WATCH_OFF))(known),
                              honest, {known.cell: known.source}))
    return found
