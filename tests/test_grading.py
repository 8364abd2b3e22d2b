"""Grading end to end through the `course grade` CLI, real nbgrader autograde and a real
SQLite gradebook. For every exercise: full marks for the solution, zero for the untouched
release, points lost for each known mistake. For 02_attention also the hostile cases: an
endless loop, a malformed file, a renamed notebook, a bad student id."""
from __future__ import annotations

import csv
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder.release import assignment_names
from exercise_tools import ROOT, graded_cells, read, release_path, solution_path, with_cells
from mistakes import for_exercise

pytestmark = pytest.mark.slow
NAMES = assignment_names(ROOT)
HOSTILE = "02_attention"
ENDLESS = "def scaled_dot_product_attention(Q, K, V, mask=None):\n    while True:\n        pass\n"
TIMEOUT = 40  # seconds per submission: far above the ~5 s a normal one takes on a busy CI


def _submit(folder: Path, student: str, nb, filename: str) -> None:
    path = folder / student / filename
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)


def _course_grade(name: str, submissions: Path, class_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autograder.cli", "--root", str(ROOT), "grade", name,
         str(submissions), "--class-dir", str(class_dir), "--timeout", str(TIMEOUT)],
        capture_output=True, text=True, timeout=1800)


def _rows(class_dir: Path, name: str) -> dict[str, dict]:
    with open(class_dir / f"grades_{name}.csv") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


@functools.cache
def graded(name: str):
    """Grade one exercise's class once per test process; return (rows, class_dir, stdout)."""
    base = Path(tempfile.mkdtemp(prefix=f"grading-{name}-"))
    submissions = base / "submissions"
    notebook = f"{name}.ipynb"
    release = read(release_path(name))
    solution_cells = {c.metadata["nbgrader"]["grade_id"]: c.source for c in read(solution_path(name)).cells
                      if c.metadata.get("nbgrader", {}).get("solution")}
    # A learner's real submission: the release notebook with their code in the stub cells.
    _submit(submissions, "solution", with_cells(release, solution_cells), f"{name}/{notebook}")
    _submit(submissions, "untouched", release, f"{name}/{notebook}")
    for mistake in for_exercise(name):
        _submit(submissions, mistake.name, with_cells(release, {mistake.cell: mistake.source}),
                f"{name}/{notebook}")
    if name == HOSTILE:
        _submit(submissions, "renamed", with_cells(release, solution_cells), f"{name}/my attempt.ipynb")
        _submit(submissions, "endless_loop",
                with_cells(release, {"scaled_dot_product_attention": ENDLESS}), f"{name}/{notebook}")
        (submissions / "malformed.ipynb").write_text('{"cells": [ this is not json')
        (submissions / "bad id!").mkdir()
    done = _course_grade(name, submissions, base / "class")
    assert done.returncode == 0, done.stdout + done.stderr
    return _rows(base / "class", name), base / "class", done.stdout


def _by_exercise(names):
    # One xdist group per exercise: its tests share one graded class on one worker.
    return [pytest.param(n, marks=pytest.mark.xdist_group(f"grading-{n}"), id=n) for n in names]


@pytest.mark.parametrize("name", _by_exercise(NAMES))
def test_solution_gets_full_marks(name):
    rows, _, _ = graded(name)
    points = sum(graded_cells(read(solution_path(name))).values())
    assert float(rows["solution"]["max_score"]) == points > 0
    assert float(rows["solution"]["score"]) == points
    assert rows["solution"]["reason"] == ""


@pytest.mark.parametrize("name", _by_exercise(NAMES))
def test_untouched_release_scores_zero(name):
    rows, _, _ = graded(name)
    assert float(rows["untouched"]["score"]) == 0
    assert rows["untouched"]["reason"] == ""  # graded normally, every test failed


@pytest.mark.parametrize("name", _by_exercise(NAMES))
def test_each_known_mistake_loses_points(name):
    rows, _, _ = graded(name)
    mistakes = for_exercise(name)
    assert len(mistakes) >= 3
    for mistake in mistakes:
        row = rows[mistake.name]
        assert row["reason"] == "", (mistake.name, row)
        assert 0 <= float(row["score"]) < float(row["max_score"]), (mistake.name, row)


@pytest.mark.parametrize("name", _by_exercise(NAMES))
def test_scores_are_in_the_gradebook(name):
    rows, class_dir, _ = graded(name)
    with Gradebook(f"sqlite:///{class_dir / 'gradebook.db'}") as gb:
        for student in ("solution", "untouched", for_exercise(name)[0].name):
            assert gb.find_submission(name, student).score == float(rows[student]["score"])


hostile = pytest.mark.xdist_group(f"grading-{HOSTILE}")


@hostile
def test_a_renamed_notebook_is_graded_as_the_assignment():
    rows, _, _ = graded(HOSTILE)
    assert float(rows["renamed"]["score"]) == float(rows["renamed"]["max_score"])


@hostile
def test_an_endless_loop_costs_only_its_own_grade():
    rows, _, _ = graded(HOSTILE)
    assert float(rows["endless_loop"]["score"]) == 0
    assert f"stopped after {TIMEOUT} s" in rows["endless_loop"]["reason"]


@hostile
def test_malformed_submissions_score_zero_with_a_reason():
    rows, _, stdout = graded(HOSTILE)
    assert float(rows["malformed"]["score"]) == 0
    assert "not a valid notebook" in rows["malformed"]["reason"]
    assert "student id may only hold" in rows["bad id!"]["reason"]
    assert "malformed" in stdout  # the instructor sees the reason without opening the CSV


def _error_text(class_dir: Path, student: str) -> str:
    nb = nbformat.read(class_dir / "autograded" / student / HOSTILE / f"{HOSTILE}.ipynb", as_version=4)
    return "\n".join("\n".join(o.traceback) for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.output_type == "error")


@hostile
def test_feedback_names_the_mistake_without_our_tracebacks():
    _, class_dir, _ = graded(HOSTILE)
    text = _error_text(class_dir, "missing_scale")
    assert "the scores are not scaled" in text
    assert "autograder" not in text and "_core.py" not in text
    # When the learner's own code raises, they see their line, still none of ours.
    text = _error_text(class_dir, "transposes_batch_axes")
    assert "Your code raised an error" in text and "K.T" in text
    assert "autograder" not in text


@hostile
def test_grading_is_deterministic(tmp_path):
    rows, class_dir, _ = graded(HOSTILE)
    # Regrade a few submissions into a fresh class folder: same scores, cell by cell.
    again = tmp_path / "again"
    for student in ("solution", "missing_scale", "mask_after_softmax"):
        shutil.copytree(class_dir / "submitted" / student, again / student)
    done = _course_grade(HOSTILE, again, tmp_path / "class")
    assert done.returncode == 0, done.stderr
    second = _rows(tmp_path / "class", HOSTILE)
    for student in second:
        assert second[student] == rows[student]
