"""Export a class's grades from its nbgrader gradebook as one CSV an LMS can import.

One row per student in the gradebook (sorted by id), one column per assignment (sorted by
name, which is course order for NN_topic), then `total` and `max`:

    student,01_softmax,02_attention,total,max
    alice,6,5.5,11.5,12

A student without a submission of an assignment gets 0 there and is listed in
`Grades.missing`, so a 0 for work never handed in can be told from a 0 earned. Scores are
nbgrader's (autograded and manual points), less any late-submission penalty, never below
0. Numbers are written without float noise (0.1 + 0.2 is written 0.3).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.api import Gradebook
from sqlalchemy.exc import SQLAlchemyError

# Points in nbgrader are small decimals (0.5, 1.25): six places keep every real score and
# drop the binary-fraction noise of sums.
DECIMALS = 6


class ExportError(Exception):
    """The class folder has no gradebook to export, or nothing in it."""


@dataclass
class Grades:
    assignments: list[str]
    max_scores: dict[str, float]  # assignment -> points
    scores: dict[str, dict[str, float]]  # student -> assignment -> points (0 when missing)
    missing: dict[str, list[str]] = field(default_factory=dict)  # student -> assignments not submitted

    @property
    def max_total(self) -> float:
        return sum(self.max_scores.values())

    def total(self, student: str) -> float:
        return sum(self.scores[student].values())


def plain_number(value: float, decimals: int = DECIMALS) -> str:
    """`value` as a spreadsheet reads it: no exponent, no trailing zeros, no -0."""
    text = f"{round(float(value), decimals):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def read_gradebook(class_dir: Path, db_url: str | None = None) -> Grades:
    """Every student's score in every assignment of the class folder's gradebook, or of the
    gradebook at `db_url` (an SQLAlchemy URL, such as `course grade --db-url` wrote to)."""
    if db_url:
        from .release import course_id
        try:
            return _read(Gradebook(db_url, course_id=course_id(db_url)), db_url.split("@")[-1])
        except SQLAlchemyError as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise ExportError(f"cannot read the gradebook at {db_url.split('@')[-1]} ({first})") from None
    database = Path(class_dir) / "gradebook.db"
    # Gradebook() would create (and write) a database where none exists: check first.
    if not database.is_file() or database.stat().st_size == 0:
        raise ExportError(f"no gradebook at {database}: pass the --class-dir that `course grade` "
                          "wrote to")
    try:
        return _read(Gradebook(f"sqlite:///{database}"), str(database))
    except SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise ExportError(f"{database} is not a readable nbgrader gradebook ({first})") from None


def _read(gradebook: Gradebook, database: str) -> Grades:
    with gradebook as gb:
        assignments = sorted(gb.assignments, key=lambda a: a.name)
        if not assignments:
            raise ExportError(f"the gradebook {database} holds no assignment yet: grade one with "
                              "`course grade` first")
        students = sorted(s.id for s in gb.students)
        scores = {student: {a.name: 0.0 for a in assignments} for student in students}
        submitted: dict[str, set[str]] = {student: set() for student in students}
        for assignment in assignments:
            for submission in assignment.submissions:
                student = submission.student.id
                penalty = submission.late_submission_penalty or 0.0
                scores[student][assignment.name] = max(0.0, float(submission.score) - float(penalty))
                submitted[student].add(assignment.name)
        names = [a.name for a in assignments]
        missing = {student: [n for n in names if n not in submitted[student]] for student in students}
        return Grades(assignments=names,
                      max_scores={a.name: float(a.max_score) for a in assignments},
                      scores=scores,
                      missing={s: m for s, m in missing.items() if m})


def write_csv(grades: Grades, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *grades.assignments, "total", "max"])
        for student, row in grades.scores.items():
            writer.writerow([student, *(plain_number(row[a]) for a in grades.assignments),
                             plain_number(grades.total(student)), plain_number(grades.max_total)])
    return path


def export(class_dir: Path, out: Path | None = None, db_url: str | None = None) -> tuple[Grades, Path]:
    """Read the gradebook of `class_dir` (or at `db_url`) and write the CSV (default:
    CLASS_DIR/grades.csv)."""
    grades = read_gradebook(class_dir, db_url)
    return grades, write_csv(grades, out if out is not None else Path(class_dir) / "grades.csv")
