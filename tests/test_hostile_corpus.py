"""The hostile-submission corpus (tests/hostile_corpus.py) graded by `grade_class`, the engine
of `course grade`, for one NumPy and one PyTorch exercise (issue 8).

One class per exercise holds every case of the corpus plus two bystanders, a correct solution
and a known mistake. For each case: the run goes on (every student has a row), the score is the
one the case must get, and a reason, when there is one, names the problem in plain words.
For the run: the bystanders keep the scores their code earns in-process, the gradebook agrees
with every row and holds no other student, nothing is planted in the class folder or the
repository, no kernel reaches the host's network, and a handful of cases graded again in a
second class get the same rows.
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook, MissingEntry

from coursetools import judge, sandbox
from coursetools.grading import Result, grade_class, write_csv
from exercise_tools import ROOT, Listener, graded_cells, read, release_path, run_in_process, solution_path, with_cells
from hostile_corpus import Case, Expect, Setting, cases, solution_cells
from mistakes import for_exercise

pytestmark = pytest.mark.slow

EXERCISES = ("02_attention", "06_multihead")
OTHER = {"02_attention": "01_softmax", "06_multihead": "05_modules"}
# Short, so that the cases that run too long cost little; a normal submission takes ~1-5 s.
TIMEOUT = 30
# The memory_bomb case writes every page it hoards, and page faults are slow on these VMs
# (~0.5 GB/s of system time): under grading.MEMORY_GB (6 GiB) the hoard alone took 10 s on
# an idle machine and ran past TIMEOUT under CI's load. A smaller cap proves the same thing
# (the hog is stopped inside its own kernel) in a third of the time; the solution still fits.
MEMORY_GB = 3.0
BYSTANDERS = ("solution", "mistake")
# Graded a second time, in a class of their own: the same rows must come back.
AGAIN = ("gradebook_relative", "edited_test_cells", "duplicated_test_cells", "always_equal_list",
         "os_exit", "non_utf8", "other_assignment", "no_nbgrader_metadata", "patched_shell")

ISSUE_8 = "issue 8: this exercise's checks still run in the learner's kernel (not judged)"
# (exercise, case) -> why it still wins today. Strict: the test reports when the hole closes.
# A judged exercise (coursetools/judge.py) runs its checks in the grader: none of these win.
HOLES: dict[tuple[str, str], str] = {
    **{(name, case): ISSUE_8 for name in EXERCISES if name not in judge.JUDGED
       for case in ("import_reference", "noop_checks_module", "rebind_checks_name", "patched_shell",
                    "patch_reference", "patch_numpy_allclose")},
}

# Words that only a traceback or a raw tool log would put in a reason.
UNREADABLE = ("Traceback", 'File "', "[AutogradeApp", "| ERROR", "nbgrader autograde failed",
              "grading failed:", "Exception", "Error:")


def _setting(name: str, class_dir: Path, port: int) -> Setting:
    return Setting(name=name, root=ROOT, class_dir=class_dir, timeout=TIMEOUT,
                   mistake=for_exercise(name)[0], port=port, other=OTHER[name])


def _case_names(name: str) -> list[str]:
    return [c.name for c in cases(_setting(name, Path("/collecting"), 0))]


def _params():
    for name in EXERCISES:
        for case in _case_names(name):
            reason = HOLES.get((name, case))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(name, case, id=f"{name}-{case}", marks=marks)


def _honest_score(name: str, code: dict[str, str]) -> float:
    """What `code` earns with the checks run in this process on the source notebook, hidden
    tests included: the score no tampering may change."""
    nb = read(solution_path(name))
    outcome = run_in_process(with_cells(nb, code))
    points = graded_cells(nb)
    return float(sum(points[cell] for cell, ok in outcome.passed.items() if ok))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _write(folder: Path, student: str, name: str, built) -> None:
    path = folder / student / name / f"{name}.ipynb"
    path.parent.mkdir(parents=True)
    if isinstance(built, bytes):
        path.write_bytes(built)
    else:
        nbformat.write(built, path)


@dataclass
class Run:
    name: str
    points: float
    cases: dict[str, Case]
    rows: dict[str, Result]
    expected: dict[str, float]  # student -> the score they must get
    class_dir: Path
    submissions: Path
    listener: Listener
    repository_before: dict[str, str]
    submissions_before: dict[str, str]


class Runs:
    """One graded class per exercise, shared by every test of this module."""

    def __init__(self, factory: pytest.TempPathFactory):
        self.factory, self.done, self.again = factory, {}, {}

    def __call__(self, name: str) -> Run:
        if name not in self.done:
            self.done[name] = self._grade(name)
        return self.done[name]

    def _grade(self, name: str) -> Run:
        sandbox.check_available()  # says which package to install where bubblewrap is missing
        base = self.factory.mktemp(f"hostile-{name}")
        class_dir, submissions, listener = base / "class", base / "submissions", Listener()
        setting = _setting(name, class_dir, listener.port)
        release, solution = read(release_path(name)), solution_cells(name)
        points = float(sum(graded_cells(read(solution_path(name))).values()))
        corpus = {c.name: c for c in cases(setting)}
        expected = {"solution": points, "mistake": _honest_score(name, {setting.mistake.cell: setting.mistake.source})}
        _write(submissions, "solution", name, with_cells(release, solution))
        _write(submissions, "mistake", name, with_cells(release, {setting.mistake.cell: setting.mistake.source}))
        for case in corpus.values():
            _write(submissions, case.name, name, case.build(release, solution))
            expected[case.name] = {Expect.FULL: points, Expect.ZERO: 0.0}.get(case.expect.score)
            if case.expect.score == Expect.IN_PROCESS:
                expected[case.name] = _honest_score(name, case.code)
                assert expected[case.name] < points, f"{case.name}: its code earns full marks in-process"
        before = _digest(ROOT / "solutions" / name)
        submitted = _digest(submissions)
        rows = grade_class(ROOT, name, submissions, class_dir, timeout=TIMEOUT, jobs=2,
                           memory_gb=MEMORY_GB)
        write_csv(rows, base / f"grades_{name}.csv")  # the table of outcomes, for a failure's reader
        return Run(name, points, corpus, {r.student: r for r in rows}, expected, class_dir,
                   submissions, listener, before, submitted)

    def graded_again(self, name: str) -> dict[str, Result]:
        """The bystanders and the AGAIN cases, copied as submitted and graded in a new class."""
        if name not in self.again:
            run = self(name)
            base = self.factory.mktemp(f"hostile-again-{name}")
            for student in (*BYSTANDERS, *AGAIN):
                shutil.copytree(run.submissions / student, base / "submissions" / student)
            rows = grade_class(ROOT, name, base / "submissions", base / "class", timeout=TIMEOUT, jobs=2,
                               memory_gb=MEMORY_GB)
            self.again[name] = {r.student: r for r in rows}
        return self.again[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory)


def _shown(row: Result) -> str:
    return f"{row.student}: score {row.score:g}/{row.max_score:g}, reason {row.reason!r}, cells {row.cells}"


def assert_readable(reason: str, phrase: str) -> None:
    assert phrase in reason, f"the reason should say {phrase!r}: {reason!r}"
    leaked = [word for word in UNREADABLE if word in reason]
    assert not leaked, f"the reason shows {leaked} from a traceback or a tool's log: {reason!r}"
    assert len(reason) < 400 and "\n" not in reason, f"the reason should be one short line: {reason!r}"


@pytest.mark.parametrize("name, case", list(_params()))
def test_a_hostile_case_gets_the_grade_it_must(runs, name, case):
    run = runs(name)
    assert case in run.rows, f"{case} has no row: the run did not go on past it"
    row, expect = run.rows[case], run.cases[case].expect
    assert row.max_score == run.points, _shown(row)
    if expect.reason == Expect.ANY_READABLE:
        if row.reason:
            assert_readable(row.reason, "")
    elif expect.reason:
        assert_readable(row.reason, expect.reason)
    else:
        assert row.reason == "", f"expected to be graded normally; {_shown(row)}"
    assert row.score == run.expected[case], f"expected {run.expected[case]:g}; {_shown(row)}"


@pytest.mark.parametrize("name", EXERCISES)
def test_the_bystanders_keep_their_grades(runs, name):
    run = runs(name)
    assert set(run.rows) == {*BYSTANDERS, *run.cases}, "every student, and only they, has a row"
    for student in BYSTANDERS:
        row = run.rows[student]
        assert (row.score, row.reason) == (run.expected[student], ""), _shown(row)
    assert run.expected["mistake"] < run.points, "the mistake bystander must lose points"


@pytest.mark.parametrize("name", EXERCISES)
def test_the_gradebook_agrees_with_every_row(runs, name):
    run = runs(name)
    with Gradebook(f"sqlite:///{run.class_dir / 'gradebook.db'}") as gb:
        assert gb.find_assignment(name).max_score == run.points, "the assignment's points changed"
        students = {s.id for s in gb.students}
        assert students <= set(run.rows), f"students nobody submitted: {students - set(run.rows)}"
        for row in run.rows.values():
            try:
                stored = gb.find_submission(name, row.student).score
            except MissingEntry:
                assert row.score == 0 and row.reason, f"no submission in the gradebook: {_shown(row)}"
                continue
            assert stored == row.score, f"gradebook says {stored:g}; {_shown(row)}"
        for student in BYSTANDERS:
            submission = gb.find_submission(name, student)
            cells = {g.name: g.score for nb in submission.notebooks for g in nb.grades}
            assert cells == run.rows[student].cells, (student, cells)


@pytest.mark.parametrize("name", EXERCISES)
def test_nothing_is_planted_and_nothing_reached_out(runs, name):
    run = runs(name)
    notebook = f"{name}.ipynb"
    planted = [p for p in [*run.class_dir.rglob("planted.py"), *(ROOT / "solutions").rglob("planted.py")]]
    assert planted == [], f"a submission planted files: {planted}"
    top = {p.name for p in run.class_dir.iterdir()}
    assert top <= {"gradebook.db", "source", "release", "submitted", "autograded"}, top
    assert [p.name for p in (run.class_dir / "source" / name).iterdir()] == [notebook]
    assert [p.name for p in (run.class_dir / "source").iterdir()] == [name]
    graded = sorted(p.name for p in (run.class_dir / "submitted").iterdir())
    # Only those whose file was a readable notebook reach submitted/, each with that one file.
    assert set(graded) <= set(run.rows) and "solution" in graded and "mistake" in graded
    for folder in ("submitted", "autograded"):
        for student in (run.class_dir / folder).iterdir():
            files = sorted(str(p.relative_to(student)) for p in student.rglob("*") if p.is_file())
            assert set(files) <= {f"{name}/{notebook}", f"{name}/timestamp.txt"}, (folder, student.name, files)
    assert _digest(ROOT / "solutions" / name) == run.repository_before, "solutions/ changed"
    assert _digest(run.submissions) == run.submissions_before, "the submissions folder changed"
    assert run.listener.connections == 0, "a kernel reached a service on the host's loopback"


@pytest.mark.parametrize("name", EXERCISES)
def test_grading_again_gives_the_same_rows(runs, name):
    first, second = runs(name).rows, runs.graded_again(name)
    assert set(second) == {*BYSTANDERS, *AGAIN}
    for student, row in second.items():
        assert (row.score, row.reason, row.cells) == \
            (first[student].score, first[student].reason, first[student].cells), \
            f"first {_shown(first[student])}; again {_shown(row)}"
