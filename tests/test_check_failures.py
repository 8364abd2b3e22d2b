"""Every exercise's checks fail in words, never with a raw exception or our own frames.

One test for all twenty exercises, in-process (tests/exercise_tools.run_in_process): each
solution notebook is run with every function and class its solution cells define replaced
by a broken copy — one that raises, one that returns the wrong type, one that returns arrays
of the wrong shape — and every graded cell that fails must fail with a CheckFailure whose
message names one of the learner's functions or classes. Where the learner's code raised,
the display IPython shows (CheckFailure._render_traceback_) must hold the learner's own line
and no frame of the autograder package.
"""
from __future__ import annotations

import ast
import functools
import inspect
import sys

import nbformat
import pytest

from autograder.checks import CheckFailure, probability
from autograder.checks._core import PACKAGE_DIR
from coursetools.release import assignment_names
from exercise_tools import ROOT, read, run_in_process, solution_path

NAMES = assignment_names(ROOT)

# The broken copies: what each kind does instead of the learner's function (or, for a class,
# instead of each of its own methods other than __init__). "is not callable" replaces the
# name itself with None, as a later cell that reassigns it would.
BUG = "a bug in the learner's code"
KINDS = ("raises", "is still the stub", "is not callable", "returns None",
         "returns the wrong type", "returns an object equal to everything",
         "returns the wrong shape")

# A kind that may not apply to every function (a float or a list has no shape to get wrong;
# None may be the right answer of a method such as step()): some graded cell must fail for
# every other kind.
MAY_NOT_APPLY = {"returns the wrong shape", "returns None"}

# Known gaps, each a message that does not name the learner's function or class: the owners
# of those check modules fix them, then delete the line here (the test is strict: a fixed
# gap fails as XPASS until its line goes: whoever fixes one deletes its line).
UNNAMED = {
    ("07_training", "returns the wrong shape"): "training.py get_batch: 'x has shape (8, 16, 1), expected'",
    ("09_positions", "returns None"): "positions.py: 'The result for ids of shape (7,) is None'",
    ("09_positions", "returns the wrong type"): "positions.py: 'The result for ids of shape (7,) should be'",
    ("09_positions", "returns an object equal to everything"): "positions.py: 'The result for ids of shape (7,) should be'",
    ("09_positions", "returns the wrong shape"): "positions.py: 'The result for ids of shape (7,) has shape'",
    ("11_gpt", "returns the wrong shape"): "gpt.py: 'The logits (first returned value) has shape'",
    ("12_pretrain", "returns the wrong shape"): "pretrain.py: 'x has shape (8, 16, 1), expected'",
    ("16_kv_cache", "returns the wrong shape"): "kvcache.py: 'Layer 0's cached k has shape'",
    ("20_export", "returns the wrong shape"): "export.py: 'present_keys has shape'",
}
# Known raw exceptions: a check that lets the learner's mistake through as a traceback.
RAW: dict[tuple[str, str], str] = {}

# The cell inserted after each solution cell finds this module here (run_in_process runs the
# cells in a namespace of their own).
sys.modules.setdefault("check_failures_under_test", sys.modules[__name__])


class AlwaysEqual:
    """A result that claims to equal anything: the checks must compare numbers, not ==."""

    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


def _wrong_shape(value):
    """An extra trailing axis on every array or tensor in the result (tuples and lists too)."""
    if isinstance(value, (tuple, list)) and any(hasattr(v, "shape") for v in value):
        return type(value)(_wrong_shape(v) for v in value)
    if hasattr(value, "shape") and hasattr(value, "__getitem__"):
        return value[..., None]
    return value


def _broken_function(fn, kind: str):
    @functools.wraps(fn)
    def broken(*args, **kwargs):
        if kind == "raises":
            raise RuntimeError(BUG)
        if kind == "is still the stub":
            raise NotImplementedError()
        if kind == "returns None":
            return None
        if kind == "returns the wrong type":
            return "not what was asked for"
        if kind == "returns an object equal to everything":
            return AlwaysEqual()
        return _wrong_shape(fn(*args, **kwargs))
    return broken


def _broken(obj, kind: str):
    if kind == "is not callable":
        return None
    if isinstance(obj, type):
        methods = {k: _broken_function(v, kind) for k, v in vars(obj).items()
                   if inspect.isfunction(v) and (k == "__call__" or not k.startswith("__"))}
        if not methods:
            return obj
        return type(obj.__name__, (obj,), {**methods, "__module__": obj.__module__,
                                            "__qualname__": obj.__qualname__})
    if inspect.isfunction(obj):
        return _broken_function(obj, kind)
    return obj


def break_names(namespace: dict, names: list[str], kind: str) -> None:
    """Replace the learner's `names` in a notebook's namespace with broken copies."""
    for name in names:
        if name in namespace:
            namespace[name] = _broken(namespace[name], kind)


def _defined(source: str, *, methods: bool = False) -> list[str]:
    """The functions and classes a cell defines at its top level (and their methods)."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        if methods and isinstance(node, ast.ClassDef):
            names += [f.name for f in node.body
                      if isinstance(f, ast.FunctionDef) and not f.name.startswith("__")]
    return names


def _with_broken_solutions(nb, kind: str):
    """The notebook with a cell after each solution cell that breaks what it defined; also
    returns the names a message may use for the learner's code: every function and class
    the notebook defines, and the methods of those in solution cells."""
    cells, broken, named = [], [], []
    for cell in nb.cells:
        cells.append(cell)
        if cell.cell_type != "code" or cell.source.lstrip().startswith(("%", "!")):
            continue
        if cell.metadata.get("nbgrader", {}).get("solution"):
            names = _defined(cell.source)
            broken += names
            named += _defined(cell.source, methods=True)
            cells.append(nbformat.v4.new_code_cell(
                "import check_failures_under_test as _t\n"
                f"_t.break_names(globals(), {names!r}, {kind!r})\n"))
        else:
            try:
                named += _defined(cell.source)
            except SyntaxError:  # IPython syntax in a scratch cell
                pass
    return nbformat.from_dict({**nb, "cells": cells}), broken, named


def _shown(error: BaseException) -> str:
    return "\n".join(error._render_traceback_())


def _marks(name: str, kind: str) -> list:
    reason = UNNAMED.get((name, kind)) or RAW.get((name, kind))
    # strict: a fixed gap fails (XPASS) until its line above goes; only this test's own
    # assertions count as the gap, not an error elsewhere in the notebook.
    return [pytest.mark.xfail(reason=reason, strict=True, raises=AssertionError)] if reason else []


CASES = [pytest.param(name, kind, id=f"{name}-{kind.replace(' ', '_')}", marks=_marks(name, kind))
         for name in NAMES for kind in KINDS]


@pytest.mark.parametrize("name, kind", CASES)
def test_broken_learner_code_fails_in_words_naming_it(name, kind):
    """Every graded cell that fails does so with a CheckFailure that names the learner's
    function or class; the display of one that reports the learner's error shows the
    learner's line and no frame of the autograder package."""
    nb, broken, named = _with_broken_solutions(read(solution_path(name)), kind)
    assert broken, f"{name}: no solution cell defines a function or class"
    outcome = run_in_process(nb)
    failed = {cell: outcome.messages[cell] for cell, ok in outcome.passed.items() if not ok}
    if kind not in MAY_NOT_APPLY:
        assert failed, f"{name}: every graded cell passed with learner code that {kind}"
    for cell, message in failed.items():
        error = outcome.errors[cell]
        assert isinstance(error, CheckFailure), f"{name}, {cell}: not a CheckFailure: {message}"
        assert any(n in message for n in named), (
            f"{name}, {cell}: the message names none of {sorted(set(named))}: {message}")
        if kind == "is still the stub":
            assert "NotImplementedError" in message, f"{name}, {cell}: {message}"
        cause = error.__cause__
        if kind == "raises" and isinstance(cause, RuntimeError) and str(cause) == BUG:
            shown = _shown(error)
            assert "raise RuntimeError(BUG)" in shown, f"{name}, {cell}: {shown}"
            assert PACKAGE_DIR not in shown and "autograder" not in shown, f"{name}, {cell}: {shown}"


def test_a_failure_display_hides_our_frames_when_the_learners_error_is_deep():
    """The learner's own frames stay in order, however deep, with their error last."""
    def helper(x):
        return x @ x  # the learner's bug, two calls down: (4, 7) @ (4, 7)

    def softmax(x, axis=-1):
        return helper(x)

    with pytest.raises(CheckFailure) as caught:
        probability.check_softmax(softmax)
    shown = _shown(caught.value)
    assert shown.index("return helper(x)") < shown.index("return x @ x")
    assert shown.index("ValueError") > shown.index("return x @ x")
    assert shown.index("CheckFailure: `softmax` raised ValueError") > shown.index("return x @ x")
    assert PACKAGE_DIR not in shown
