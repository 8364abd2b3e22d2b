"""`course selfcheck`: grade, for each assignment, what must score full marks, what must score
zero and what must lose points, exactly as a class would be graded.

For an assignment NAME the class is built from the release notebook a learner starts from:
- `solution`: the release with every solution cell filled in from solutions/NAME;
- `untouched`: the release as it is (every stub raises NotImplementedError);
- one student per known mistake (tests/mistakes/, the instructor's repository), the release
  with that mistake's cell and the solution's other cells.
Then `grading.grade_class` grades it, sandbox and all. The assignment passes when the solution
gets full marks, the release zero, and every mistake loses points, each without a grading
failure (a reason).
"""
from __future__ import annotations

import copy
import importlib
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import grading


@dataclass
class AssignmentCheck:
    name: str
    max_score: float
    solution: float
    untouched: float
    mistakes: dict[str, float]  # mistake name -> score
    problems: list[str] = field(default_factory=list)
    class_dir: Path | None = None
    results: list[grading.Result] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def grade_id(cell) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id", "")


def with_cells(nb, replacements: dict[str, str]):
    """A copy of `nb` whose cells with the given grade_ids hold new source."""
    nb = copy.deepcopy(nb)
    missing = set(replacements)
    for cell in nb.cells:
        if grade_id(cell) in replacements:
            cell.source = replacements[grade_id(cell)]
            missing.discard(grade_id(cell))
    if missing:
        raise ValueError(f"no cells with grade_id {sorted(missing)}")
    return nb


def solution_cells(root: Path, name: str) -> dict[str, str]:
    nb = nbformat.read(root / "solutions" / name / f"{name}.ipynb", as_version=4)
    return {grade_id(c): c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def known_mistakes(root: Path, name: str, per_cell: int | None = None) -> list:
    """The known mistakes of `name` from the repository's tests/mistakes, the first
    `per_cell` of each graded function (all of them when None)."""
    tests = str(root / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    mistakes = importlib.import_module("mistakes").for_exercise(name)
    if per_cell is None:
        return mistakes
    chosen, seen = [], {}
    for mistake in mistakes:
        seen[mistake.cell] = seen.get(mistake.cell, 0) + 1
        if seen[mistake.cell] <= per_cell:
            chosen.append(mistake)
    return chosen


def build_class(root: Path, name: str, submissions: Path, per_cell: int | None = None) -> list:
    """Write the selfcheck class of `name` into `submissions`; return the mistakes used."""
    release = nbformat.read(root / "notebooks" / name / f"{name}.ipynb", as_version=4)
    solution = solution_cells(root, name)
    mistakes = known_mistakes(root, name, per_cell)
    notebooks = {"solution": with_cells(release, solution), "untouched": release}
    for mistake in mistakes:
        notebooks[mistake.name] = with_cells(release, {**solution, mistake.cell: mistake.source})
    for student, nb in notebooks.items():
        path = submissions / student / name / f"{name}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
    return mistakes


def check_assignment(root: Path, name: str, *, per_cell: int | None = None, jobs: int = 2,
                     timeout: float = 600.0, isolate: bool = True, workdir: Path | None = None) -> AssignmentCheck:
    base = Path(tempfile.mkdtemp(prefix=f"selfcheck-{name}-", dir=workdir))
    mistakes = build_class(root, name, base / "submissions", per_cell)
    results = grading.grade_class(root, name, base / "submissions", base / "class", timeout=timeout,
                                  jobs=jobs, isolate=isolate)
    rows = {r.student: r for r in results}
    max_score = rows["solution"].max_score
    check = AssignmentCheck(name, max_score, rows["solution"].score, rows["untouched"].score,
                            {m.name: rows[m.name].score for m in mistakes}, class_dir=base / "class",
                            results=results)
    for student, row in rows.items():
        if row.reason:
            check.problems.append(f"{student}: not graded ({row.reason})")
    if rows["solution"].score != max_score:
        check.problems.append(f"the solution scored {rows['solution'].score:g} of {max_score:g}")
    if rows["untouched"].score != 0:
        check.problems.append(f"the untouched release scored {rows['untouched'].score:g}, not 0")
    for mistake in mistakes:
        if rows[mistake.name].score >= max_score:
            check.problems.append(f"the known mistake {mistake.name!r} ({mistake.cell}) lost no points")
    if not mistakes:
        check.problems.append("no known mistakes in tests/mistakes for this assignment")
    return check
