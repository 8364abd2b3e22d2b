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


@dataclass(frozen=True)
class Mistake:
    name: str    # short identifier, also the fake student's id when graded
    cell: str    # grade_id of the solution cell whose source it replaces
    source: str  # the wrong implementation, a whole cell
    says: str    # a phrase the failure message must contain: the diagnosis the learner reads


def _registry() -> dict[str, list[Mistake]]:
    found: dict[str, list[Mistake]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.setdefault(module.EXERCISE, []).extend(module.MISTAKES)
    return found


def for_exercise(name: str) -> list[Mistake]:
    return _registry().get(name, [])


# Real nbgrader costs seconds per submission (a process, a kernel, torch's import), so the
# round trip through it grades this many mistakes per solution cell, the first ones
# declared; every mistake still runs in-process (tests/test_exercises.py), where its
# failure message must also contain its diagnosis.
PER_CELL_THROUGH_NBGRADER = 3


def for_nbgrader(name: str) -> list[Mistake]:
    """The mistakes graded through real nbgrader: up to PER_CELL_THROUGH_NBGRADER per cell."""
    chosen, per_cell = [], {}
    for mistake in for_exercise(name):
        per_cell[mistake.cell] = per_cell.get(mistake.cell, 0) + 1
        if per_cell[mistake.cell] <= PER_CELL_THROUGH_NBGRADER:
            chosen.append(mistake)
    return chosen

