"""Known-wrong implementations of each graded function: the mistakes learners really make.

Every graded check must be proven by a wrong implementation it rejects. Each exercise's
module lists its mistakes; the tests run them against the checks in-process (fast, and the
failure message must name the diagnosis) and through real nbgrader (each must lose points).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    name: str    # short identifier, also the fake student's id when graded
    cell: str    # grade_id of the solution cell whose source it replaces
    source: str  # the wrong implementation, a whole cell
    says: str    # a phrase the failure message must contain: the diagnosis the learner reads


MODULES = {"02_attention": "attention"}


def for_exercise(name: str) -> list[Mistake]:
    return importlib.import_module(f"{__name__}.{MODULES[name]}").MISTAKES
