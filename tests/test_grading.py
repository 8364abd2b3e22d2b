"""Grading a class end to end through the `course grade` CLI, real nbgrader autograde and a
real SQLite gradebook: full marks for the solution, zero for the untouched release, points
lost for every known mistake, and bad submissions scored 0 with a reason, not a crash."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbgrader.api import Gradebook

from exercise_tools import ROOT, graded_cells, read, release_path, solution_path, with_cells
from mistakes import for_exercise

pytestmark = pytest.mark.slow
NAME = "02_attention"
ENDLESS = "def scaled_dot_product_attention(Q, K, V, mask=None):\n    while True:\n        pass\n"


def _submit(folder, student, nb, filename=f"{NAME}.ipynb"):
    path = folder / student / NAME / filename
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("class")
    submissions = base / "submissions"
    release = read(release_path(NAME))
    solution_cells = {c.metadata["nbgrader"]["grade_id"]: c.source for c in read(solution_path(NAME)).cells
                      if c.metadata.get("nbgrader", {}).get("solution")}
    # A learner's real submission: the release notebook with their code in the stub cells.
    _submit(submissions, "solution", with_cells(release, solution_cells))
    _submit(submissions, "untouched", release)
    _submit(submissions, "renamed", with_cells(release, solution_cells), "my attempt.ipynb")
    for mistake in for_exercise(NAME):
        _submit(submissions, mistake.name, with_cells(release, {mistake.cell: mistake.source}))
    _submit(submissions, "endless_loop", with_cells(release, {"scaled_dot_product_attention": ENDLESS}))
    (submissions / "malformed.ipynb").write_text('{"cells": [ this is not json')
    (submissions / "bad id!").mkdir()

    done = subprocess.run(
        [sys.executable, "-m", "autograder.cli", "--root", str(ROOT), "grade", NAME,
         str(submissions), "--class-dir", str(base / "class"), "--timeout", "30"],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(base / "class" / f"grades_{NAME}.csv") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    return rows, base / "class", done.stdout


def test_solution_gets_full_marks(graded):
    rows, _, _ = graded
    points = sum(graded_cells(read(solution_path(NAME))).values())
    assert float(rows["solution"]["max_score"]) == points == 6
    assert float(rows["solution"]["score"]) == points
    assert rows["solution"]["reason"] == ""


def test_untouched_release_scores_zero(graded):
    rows, _, _ = graded
    assert float(rows["untouched"]["score"]) == 0
    assert rows["untouched"]["reason"] == ""  # graded normally, every test failed


@pytest.mark.parametrize("mistake", for_exercise(NAME), ids=lambda m: m.name)
def test_each_known_mistake_loses_points(graded, mistake):
    rows, _, _ = graded
    row = rows[mistake.name]
    assert row["reason"] == ""
    assert 0 <= float(row["score"]) < float(row["max_score"])


def test_scores_are_in_the_gradebook(graded):
    rows, class_dir, _ = graded
    with Gradebook(f"sqlite:///{class_dir / 'gradebook.db'}") as gb:
        assert gb.find_submission(NAME, "solution").score == 6
        assert gb.find_submission(NAME, "missing_scale").score == float(rows["missing_scale"]["score"])


def test_a_renamed_notebook_is_graded_as_the_assignment(graded):
    rows, _, _ = graded
    assert float(rows["renamed"]["score"]) == 6


def test_an_endless_loop_costs_only_its_own_grade(graded):
    rows, _, _ = graded
    assert float(rows["endless_loop"]["score"]) == 0
    assert "stopped after 30 s" in rows["endless_loop"]["reason"]


def test_malformed_submissions_score_zero_with_a_reason(graded):
    rows, _, stdout = graded
    assert float(rows["malformed"]["score"]) == 0
    assert "not a valid notebook" in rows["malformed"]["reason"]
    assert "no notebook submitted" in rows["bad id!"]["reason"] or "student id" in rows["bad id!"]["reason"]
    assert "malformed" in stdout  # the instructor sees the reason without opening the CSV


def test_grading_is_deterministic(graded):
    rows, class_dir, _ = graded
    # Regrade some submissions from the class's own submitted/ folder: same scores, cell by cell.
    regrade = class_dir / "submitted"
    for student in list(regrade.iterdir()):
        if student.name not in ("solution", "missing_scale", "mask_after_softmax"):
            shutil.rmtree(student)
    again = subprocess.run(
        [sys.executable, "-m", "autograder.cli", "--root", str(ROOT), "grade", NAME,
         str(regrade), "--class-dir", str(class_dir)],
        capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    with open(class_dir / f"grades_{NAME}.csv") as handle:
        second = {row["student"]: row for row in csv.DictReader(handle)}
    for student in ("solution", "missing_scale", "mask_after_softmax"):
        assert second[student] == rows[student]


def _error_text(class_dir, student):
    nb = nbformat.read(class_dir / "autograded" / student / NAME / f"{NAME}.ipynb", as_version=4)
    return "\n".join("\n".join(o.traceback) for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.output_type == "error")


def test_feedback_names_the_mistake_without_our_tracebacks(graded):
    _, class_dir, _ = graded
    text = _error_text(class_dir, "missing_scale")
    assert "the scores are not scaled" in text
    assert "autograder" not in text and "_core.py" not in text
    # When the learner's own code raises, they see their line, still none of ours.
    text = _error_text(class_dir, "transposes_batch_axes")
    assert "Your code raised an error" in text and "K.T" in text
    assert "autograder" not in text
