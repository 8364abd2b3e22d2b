"""Grading end to end through the `course grade` CLI, real nbgrader autograde and a real
SQLite gradebook. For every exercise: full marks for the solution, zero for the untouched
release, points lost for three known mistakes of every graded function (all of them run
in-process in test_exercises.py). For 02_attention also the hostile cases: an
endless loop, a malformed file, a renamed notebook, a bad student id."""
from __future__ import annotations

import csv
import functools
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from coursetools import selfcheck
from coursetools.release import assignment_names, leaks, secret_lines
from exercise_tools import ROOT, graded_cells, read, release_path, solution_path, with_cells
from mistakes import PER_CELL_THROUGH_NBGRADER, for_exercise, for_nbgrader

pytestmark = pytest.mark.slow
NAMES = assignment_names(ROOT)
HOSTILE = "02_attention"
ENDLESS = "def scaled_dot_product_attention(Q, K, V, mask=None):\n    while True:\n        pass\n"
TIMEOUT = 40  # seconds per submission: far above the ~5 s a normal one takes on a busy CI
# 20_export runs torch.onnx.export four times per submission (visible and hidden cases):
# about 15 s of CPU, 35-45 s on a loaded 2-core machine.
# The judged assignments whose checks train or generate through a lent model pay a round trip
# per forward pass: 07_training's and 12_pretrain's slowest submissions took 40 s on a 2-core
# machine also running other suites (CI of 2026-12-01), against 10-25 s alone.
TIMEOUTS = {"20_export": 150, "07_training": 150, "12_pretrain": 150, "13_encoder": 150,
            "16_kv_cache": 150}


def _submit(folder: Path, student: str, nb, filename: str) -> None:
    path = folder / student / filename
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)


def _course_grade(name: str, submissions: Path, class_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coursetools.cli", "--root", str(ROOT), "grade", name,
         str(submissions), "--class-dir", str(class_dir),
         "--timeout", str(TIMEOUTS.get(name, TIMEOUT))],
        capture_output=True, text=True, timeout=1800)


def _rows(class_dir: Path, name: str) -> dict[str, dict]:
    with open(class_dir / f"grades_{name}.csv") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def _solution_cells(name: str) -> dict[str, str]:
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in read(solution_path(name)).cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def _grade_all(name: str, submissions: Path, base: Path):
    done = _course_grade(name, submissions, base / "class")
    assert done.returncode == 0, done.stdout + done.stderr
    return _rows(base / "class", name), base / "class", done.stdout


@functools.cache  # shared by the hostile and feedback tests when they run in one process
def graded_hostile():
    """A class of 02_attention with submissions that try to break the run."""
    base = Path(tempfile.mkdtemp(prefix="grading-hostile-"))
    submissions, notebook = base / "submissions", f"{HOSTILE}/{HOSTILE}.ipynb"
    release = read(release_path(HOSTILE))
    _submit(submissions, "solution", with_cells(release, _solution_cells(HOSTILE)), notebook)
    for mistake in for_exercise(HOSTILE):
        if mistake.name in ("missing_scale", "mask_after_softmax", "transposes_batch_axes"):
            _submit(submissions, mistake.name, with_cells(release, {mistake.cell: mistake.source}), notebook)
    _submit(submissions, "renamed", with_cells(release, _solution_cells(HOSTILE)),
            f"{HOSTILE}/my attempt.ipynb")
    _submit(submissions, "endless_loop",
            with_cells(release, {"scaled_dot_product_attention": ENDLESS}), notebook)
    (submissions / "malformed.ipynb").write_text('{"cells": [ this is not json')
    (submissions / "bad id!").mkdir()
    return _grade_all(HOSTILE, submissions, base)


@pytest.mark.parametrize("name", NAMES)
def test_grading_an_exercise(name):
    """`course selfcheck` for one exercise (one test per exercise, so that parallel workers never
    grade a class twice): full marks for the solution, zero for the release, points lost for
    the first known mistakes of every graded function (all of them run in-process in
    test_exercises.py)."""
    check = selfcheck.check_assignment(ROOT, name, per_cell=PER_CELL_THROUGH_NBGRADER,
                                       timeout=TIMEOUTS.get(name, TIMEOUT))
    points = sum(graded_cells(read(solution_path(name))).values())
    assert check.max_score == points > 0
    assert check.passed, check.problems
    assert (check.solution, check.untouched) == (points, 0)
    # Every graded function meets real nbgrader through its first mistakes.
    for cell in {m.cell for m in for_exercise(name)}:
        assert len([m for m in for_nbgrader(name) if m.cell == cell]) >= min(2, PER_CELL_THROUGH_NBGRADER)
    assert set(check.mistakes) == {m.name for m in for_nbgrader(name)}
    # What grade_class reported is what the gradebook holds.
    with Gradebook(f"sqlite:///{check.class_dir / 'gradebook.db'}") as gb:
        for result in check.results:
            assert gb.find_submission(name, result.student).score == result.score, result.student


def test_selfcheck_fails_an_assignment_whose_mistake_earns_full_marks(tmp_path, monkeypatch):
    """The selfcheck can fail: a 'mistake' that is really the solution loses no points."""
    name = "01_softmax"
    real = selfcheck.known_mistakes

    def with_a_correct_one(root, exercise, per_cell=None):
        mistakes = real(root, exercise, 1)
        first = mistakes[0]
        solution = selfcheck.solution_cells(ROOT, exercise)[first.cell]
        return [type(first)("not_a_mistake", first.cell, solution, first.says)]

    monkeypatch.setattr(selfcheck, "known_mistakes", with_a_correct_one)
    done = subprocess.run([sys.executable, "-c", "import sys; from coursetools.cli import main; sys.exit(main())",
                           "--root", str(ROOT), "selfcheck", name, "--per-cell", "1"], capture_output=True, text=True,
                          timeout=600)
    # In-process too, so that the monkeypatch applies:
    check = selfcheck.check_assignment(ROOT, name, workdir=tmp_path)
    assert not check.passed
    assert check.problems == ["the known mistake 'not_a_mistake' (softmax) lost no points"], check.problems
    # The real CLI on the real mistakes passes.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 1 assignments pass" in done.stdout


def test_hostile_submissions_cost_only_their_own_grade(tmp_path):
    rows, class_dir, stdout = graded_hostile()
    # A notebook under another name is graded as the assignment.
    assert float(rows["renamed"]["score"]) == float(rows["renamed"]["max_score"])
    # An endless loop is stopped and scores 0, with the reason.
    assert float(rows["endless_loop"]["score"]) == 0
    assert f"ran longer than {TIMEOUT} s in cell " in rows["endless_loop"]["reason"]
    # Malformed files and bad ids score 0 with a reason the instructor sees on the console.
    assert float(rows["malformed"]["score"]) == 0
    assert "not a valid notebook" in rows["malformed"]["reason"]
    assert "student id may only hold" in rows["bad id!"]["reason"]
    assert "malformed" in stdout

    # Feedback names the mistake, without tracebacks from the course's code ...
    text = _error_text(class_dir, "missing_scale")
    assert "the scores are not scaled" in text
    assert "autograder" not in text and "_core.py" not in text
    # ... and when the learner's own code raises, they see their line, still none of ours.
    text = _error_text(class_dir, "transposes_batch_axes")
    assert "Your code raised an error" in text and "K.T" in text
    assert "autograder" not in text

    # Deterministic: regrading some submissions into a fresh class gives the same rows.
    again = tmp_path / "again"
    for student in ("solution", "missing_scale", "mask_after_softmax"):
        shutil.copytree(class_dir / "submitted" / student, again / student)
    done = _course_grade(HOSTILE, again, tmp_path / "class")
    assert done.returncode == 0, done.stderr
    second = _rows(tmp_path / "class", HOSTILE)
    for student in second:
        assert second[student] == rows[student]


def _error_text(class_dir: Path, student: str) -> str:
    nb = nbformat.read(class_dir / "autograded" / student / HOSTILE / f"{HOSTILE}.ipynb", as_version=4)
    return "\n".join("\n".join(o.traceback) for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.output_type == "error")


def test_feedback_pages_hide_the_hidden_tests_and_explain_failures():
    rows, class_dir, _ = graded_hostile()
    done = subprocess.run([sys.executable, "-m", "coursetools.cli", "--root", str(ROOT), "feedback",
                           HOSTILE, "--class-dir", str(class_dir)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    pages = {p.parents[1].name: p.read_text() for p in (class_dir / "feedback").glob(f"*/{HOSTILE}/*.html")}
    graded_students = {s for s, row in rows.items() if row["reason"] == ""}
    assert graded_students <= set(pages), graded_students - set(pages)
    secrets = secret_lines(ROOT, HOSTILE)
    for student, page in pages.items():
        unescaped = html.unescape(re.sub(r"<[^>]+>", "", page))
        assert not leaks(unescaped, {"hidden test": secrets["hidden test"]}), student
    assert "the scores are not scaled" in html.unescape(pages["missing_scale"])


MEMORY_BOMB = '''def scaled_dot_product_attention(Q, K, V, mask=None):
    # 8 GiB of address space, more than a grading kernel may have: refused at once under
    # the limit. Left untouched (np.empty), so that without the limit it costs nothing and
    # the function returns the right answer, and the test fails on the score.
    hoard = np.empty(8 << 30, dtype=np.uint8)
    d_k = Q.shape[-1]
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(d_k)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    w = w / w.sum(axis=-1, keepdims=True)
    return w @ V, w
'''


def test_a_memory_hog_is_stopped_inside_its_own_kernel(tmp_path):
    release = read(release_path(HOSTILE))
    submissions = tmp_path / "submissions"
    _submit(submissions, "memory_bomb", with_cells(release, {"scaled_dot_product_attention": MEMORY_BOMB}),
            f"{HOSTILE}/{HOSTILE}.ipynb")
    _submit(submissions, "solution", with_cells(release, _solution_cells(HOSTILE)), f"{HOSTILE}/{HOSTILE}.ipynb")
    rows, class_dir, _ = _grade_all(HOSTILE, submissions, tmp_path)
    assert rows["memory_bomb"]["reason"] == ""  # graded normally: its cells failed
    assert float(rows["memory_bomb"]["score"]) == 0
    assert "MemoryError" in _error_text(class_dir, "memory_bomb")
    assert float(rows["solution"]["score"]) == float(rows["solution"]["max_score"])
