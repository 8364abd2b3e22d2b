"""Known-wrong implementations of each graded function: the mistakes learners really make.

Every graded check must be proven by a wrong implementation it rejects. Each module here
sets EXERCISE (the exercise's name, e.g. "02_attention") and MISTAKES (a list of Mistake).
The tests run every mistake against the checks in-process, where the failure message must
contain the diagnosis, and through real nbgrader, where it must lose points.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nbformat


@dataclass(frozen=True)
class Mistake:
    name: str    # short identifier, also the fake student's id when graded
    cell: str    # grade_id of the solution cell whose source it replaces
    source: str  # the wrong implementation, a whole cell
    says: str    # a phrase the failure message must contain: the diagnosis the learner reads


def edited(right: str, *changes: tuple[str, str]) -> str:
    """`right` (a right implementation, usually the solution cell's code) with each
    ``(old, new)`` change made in turn: how every known mistake is written, so that it stays
    the solution's own code but for the one thing the learner got wrong.

    Each `old` must occur exactly once in the text it changes: a change that no longer finds
    its place (the solution was edited) or that could land in two places fails here, loudly,
    instead of silently building another mistake than the one named.
    """
    source = right
    for old, new in changes:
        found = source.count(old)
        assert found == 1, (
            f"{old!r} occurs {found} times in the right implementation, where the mistake must "
            "change exactly one place: update it to the solution's current text, or quote more "
            "of the line so that it is unique")
        source = source.replace(old, new)
    return source


SOLUTIONS = Path(__file__).resolve().parents[2] / "solutions"
_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


@lru_cache(maxsize=None)
def solution_source(exercise: str, grade_id: str) -> str:
    """The code of the solution cell `grade_id` of `exercise`'s source notebook, without the
    solution markers: the right implementation the mistakes of that cell edit."""
    path = SOLUTIONS / exercise / f"{exercise}.ipynb"
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert cells, f"{path} has no cell with grade_id {grade_id!r}: was the cell renamed?"
    lines = cells[0].source.splitlines()
    return "\n".join(line for line in lines if line.strip() not in _MARKERS) + "\n"


def _registry() -> dict[str, list[Mistake]]:
    found: dict[str, list[Mistake]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.setdefault(module.EXERCISE, []).extend(module.MISTAKES)
    return found


def for_exercise(name: str) -> list[Mistake]:
    return _registry().get(name, [])


# The test suite's round trip through real nbgrader (tests/test_grading.py) grades this many
# mistakes per solution cell, the first ones declared, to keep `make test` within its time;
# every mistake still runs in-process (tests/test_exercises.py), where its failure message
# must also contain its diagnosis, and `course selfcheck` grades all of them.
PER_CELL_THROUGH_NBGRADER = 1


def for_nbgrader(name: str) -> list[Mistake]:
    """The mistakes graded through real nbgrader: up to PER_CELL_THROUGH_NBGRADER per cell."""
    chosen, per_cell = [], {}
    for mistake in for_exercise(name):
        per_cell[mistake.cell] = per_cell.get(mistake.cell, 0) + 1
        if per_cell[mistake.cell] <= PER_CELL_THROUGH_NBGRADER:
            chosen.append(mistake)
    return chosen

