"""Grading throughput: `course grade` against plain `nbgrader autograde`, in one run, on the
same machine and the same class.

    .venv/bin/python benchmarks/grading.py [--students 60] [--exercise 06_multihead] [--jobs 2]

The class mixes what instructors receive: correct notebooks, partial ones (one known
mistake), wrong ones (the untouched release, or a mistake in every graded function) and
hostile ones (a kernel that exits, a no-op patch of the checks, 5 MB of output, a syntax
error). Plain nbgrader grades it with one sequential `nbgrader autograde NAME` over the whole
class (its only mode); `course grade` with its workers. Both times include registering the
assignment. Scores of the non-hostile submissions must be identical. Writes
benchmarks/results/grading.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from coursetools.grading import grade_class  # noqa: E402
from coursetools.release import nbgrader  # noqa: E402
from exercise_tools import read, release_path, solution_path, with_cells  # noqa: E402
from mistakes import for_exercise  # noqa: E402

HOSTILE = {
    "exits": "\nimport os\nos._exit(3)\n",
    "patches_checks": ("\nimport autograder.checks as _c\nfor _n in dir(_c):\n"
                       "    if _n.startswith('check_'):\n        setattr(_c, _n, lambda *a, **k: None)\n"),
    "floods_output": "\nprint('x' * (5 << 20))\n",
    "syntax_error": "\ndef broken(:\n",
}


def build_class(name: str, students: int, folder: Path) -> dict[str, str]:
    """Write STUDENT/NAME/NAME.ipynb for each student; return student -> kind."""
    release = read(release_path(name))
    solution = {c.metadata["nbgrader"]["grade_id"]: c.source for c in read(solution_path(name)).cells
                if c.metadata.get("nbgrader", {}).get("solution")}
    mistakes = for_exercise(name)
    first_per_cell = {}
    for mistake in mistakes:
        first_per_cell.setdefault(mistake.cell, mistake)
    kinds = {}
    for i in range(students):
        student = f"student{i:03d}"
        kind = ("correct", "correct", "partial", "wrong", "hostile")[i % 5]
        if kind == "correct":
            cells = solution
        elif kind == "partial":
            mistake = mistakes[(i // 5) % len(mistakes)]
            cells = {**solution, mistake.cell: mistake.source}
        elif kind == "wrong":
            cells = {} if (i // 5) % 2 else {**solution, **{m.cell: m.source for m in first_per_cell.values()}}
        else:
            attack = list(HOSTILE)[(i // 5) % len(HOSTILE)]
            cell = next(iter(solution))
            cells = {**solution, cell: solution[cell] + HOSTILE[attack]}
            kind = f"hostile:{attack}"
        kinds[student] = kind
        path = folder / student / name / f"{name}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(with_cells(release, cells), path)
    return kinds


def scores(class_dir: Path, name: str, students) -> dict[str, float | None]:
    found = {}
    with Gradebook(f"sqlite:///{class_dir / 'gradebook.db'}") as gb:
        for student in students:
            try:
                found[student] = float(gb.find_submission(name, student).score)
            except Exception:  # no grades: the submission failed to grade
                found[student] = None
    return found


def plain_nbgrader(name: str, submissions: Path, class_dir: Path) -> float:
    start = time.perf_counter()
    shutil.copytree(ROOT / "solutions" / name, class_dir / "source" / name)
    shutil.copytree(submissions, class_dir / "submitted")
    done = nbgrader("generate_assignment", name, "--force", root=class_dir)
    assert done.returncode == 0, done.stderr
    nbgrader("autograde", name, "--force", root=class_dir)  # exits 1 when a submission fails
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--exercise", default="06_multihead")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    name = args.exercise
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        kinds = build_class(name, args.students, scratch / "submissions")
        plain_seconds = plain_nbgrader(name, scratch / "submissions", scratch / "plain")
        print(f"plain nbgrader: {plain_seconds:.1f} s")
        start = time.perf_counter()
        results = grade_class(ROOT, name, scratch / "submissions", scratch / "course", jobs=args.jobs)
        course_seconds = time.perf_counter() - start
        print(f"course grade: {course_seconds:.1f} s")
        plain = scores(scratch / "plain", name, kinds)
        course = {r.student: (r.score if not r.reason else None) for r in results}
        fair = [s for s, kind in kinds.items() if not kind.startswith("hostile")]
        differing = {s: (plain[s], course[s]) for s in fair if plain[s] != course[s]}
        hostile = {s: {"kind": kinds[s], "plain_nbgrader": plain[s], "course_grade": course[s],
                       "reason": next(r.reason for r in results if r.student == s)}
                   for s in kinds if kinds[s].startswith("hostile")}
    mix = {}
    for kind in kinds.values():
        mix[kind.split(":")[0]] = mix.get(kind.split(":")[0], 0) + 1
    record = {
        "what": (f"{args.students} submissions of {name} ({mix}), graded by plain sequential "
                 f"`nbgrader autograde` and by `course grade --jobs {args.jobs}` in the same run; "
                 "both include registering the assignment"),
        "command": "python benchmarks/grading.py" + ("" if args.students == 60 else f" --students {args.students}"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "plain_nbgrader_seconds": round(plain_seconds, 1),
        "course_grade_seconds": round(course_seconds, 1),
        "plain_seconds_per_submission": round(plain_seconds / args.students, 2),
        "course_seconds_per_submission": round(course_seconds / args.students, 2),
        "throughput_ratio": round(plain_seconds / course_seconds, 2),
        "non_hostile_submissions": len(fair),
        "non_hostile_scores_identical": not differing,
        "differing": differing,
        "hostile": hostile,
    }
    out = ROOT / "benchmarks" / "results" / "grading.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "hostile"}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
