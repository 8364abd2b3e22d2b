"""A PostgreSQL gradebook (issue 8, "Speed and scale"): `course grade --db-url` registers,
grades and reads scores back through a real PostgreSQL server that these tests start
(pgserver: the server's binaries in a wheel, no root or system service), and two
`course grade` runs writing into one gradebook at once lose nothing and duplicate nothing.
An unreachable database stops the run before anything is graded, saying so."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook, GradeCell
from sqlalchemy import text
from sqlalchemy.engine import make_url

from coursetools import grading
from exercise_tools import ROOT, graded_cells, read, release_path, solution_path, with_cells
from mistakes import for_exercise

NAME = "02_attention"
TIMEOUT = 60  # seconds per submission; a normal one takes ~5 s on a busy 2-core machine
NOTEBOOK = f"{NAME}/{NAME}.ipynb"
POINTS = sum(graded_cells(read(solution_path(NAME))).values())


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server; yields a function making a fresh, empty database's URL."""
    import pgserver  # in requirements.txt: a missing one is a broken install, not a skip

    # A short folder: the server's Unix socket path must fit in 107 bytes.
    data = Path(tempfile.mkdtemp(prefix="pg-"))
    try:
        server = pgserver.get_server(data, cleanup_mode="delete")
    except Exception as exc:
        pytest.skip(f"PostgreSQL could not start here (pgserver in {data}): {exc}")

    def fresh_database() -> str:
        database = f"gradebook_{uuid.uuid4().hex[:8]}"
        server.psql(f"CREATE DATABASE {database};")
        return make_url(server.get_uri()).set(database=database).render_as_string(hide_password=False)

    try:
        yield fresh_database
    finally:
        server.cleanup()


def _solution_cells() -> dict[str, str]:
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in read(solution_path(NAME)).cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def _submissions(folder: Path, suffix: str, mistakes) -> dict[str, str]:
    """A solution, the untouched release and `mistakes`; return student -> what it is."""
    release = read(release_path(NAME))
    kinds = {f"solution{suffix}": with_cells(release, _solution_cells()),
             f"untouched{suffix}": release}
    kinds.update({f"{m.name}{suffix}": with_cells(release, {m.cell: m.source}) for m in mistakes})
    for student, nb in kinds.items():
        path = folder / student / NOTEBOOK
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
    return {student: student.removesuffix(suffix) for student in kinds}


def _expect(kind: str, score: float) -> None:
    if kind == "solution":
        assert score == POINTS, "the solution must get full marks"
    elif kind == "untouched":
        assert score == 0, "the untouched release must score zero"
    else:
        assert 0 <= score < POINTS, f"the mistake {kind} lost no points"


@pytest.mark.slow
def test_grading_into_postgresql(postgres, tmp_path):
    url = postgres()
    kinds = _submissions(tmp_path / "submissions", "", for_exercise(NAME)[:2])
    class_dir = tmp_path / "class"
    results = grading.grade_class(ROOT, NAME, tmp_path / "submissions", class_dir, timeout=TIMEOUT,
                                  jobs=2, db_url=url)
    assert {r.student: r.reason for r in results} == dict.fromkeys(kinds, "")
    for r in results:
        _expect(kinds[r.student], r.score)
    # Everything went to PostgreSQL: the class folder has no SQLite gradebook of its own.
    assert not (class_dir / "gradebook.db").exists()
    with Gradebook(url) as gb:
        assert gb.find_assignment(NAME).max_score == POINTS
        for r in results:
            submission = gb.find_submission(NAME, r.student)
            assert submission.score == r.score
            assert {g.name: g.score for nb in submission.notebooks for g in nb.grades} == r.cells
    # Feedback reads the same gradebook.
    pages = grading.generate_feedback(class_dir, NAME, db_url=url)
    assert set(pages) == set(kinds)
    # So does `course export`: one row per student, their score in the assignment's column.
    out = tmp_path / "export.csv"
    done = subprocess.run([sys.executable, "-m", "coursetools.cli", "--root", str(ROOT), "export",
                           "--class-dir", str(class_dir), "--db-url", url, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(out) as handle:
        exported = {row["student"]: row for row in csv.DictReader(handle)}
    assert set(exported) == set(kinds)
    for r in results:
        assert float(exported[r.student][NAME]) == r.score == float(exported[r.student]["total"])
        assert float(exported[r.student]["max"]) == POINTS


@pytest.mark.slow
def test_two_graders_writing_into_one_gradebook_at_once(postgres, tmp_path):
    """Two `course grade` runs, each with its own class folder and half of the students,
    start together on an empty database: both register the assignment (nbgrader creates
    the tables then) and write scores at the same time."""
    url = postgres()
    mistakes = for_exercise(NAME)[:2]
    halves = {"a": _submissions(tmp_path / "submissions_a", "_a", mistakes[:1]),
              "b": _submissions(tmp_path / "submissions_b", "_b", mistakes[1:2])}
    # One grader is given the gradebook with --db-url, the other through COURSE_DB_URL.
    gradebook = {"a": (["--db-url", url], {}), "b": ([], {"COURSE_DB_URL": url})}
    runs = {half: subprocess.Popen(
                [sys.executable, "-m", "coursetools.cli", "--root", str(ROOT), "grade", NAME,
                 str(tmp_path / f"submissions_{half}"), "--class-dir", str(tmp_path / f"class_{half}"),
                 "--timeout", str(TIMEOUT), "--jobs", "2", *gradebook[half][0]],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, **gradebook[half][1]})
            for half in halves}
    for half, run in runs.items():
        output, _ = run.communicate(timeout=900)
        assert run.returncode == 0, f"grader {half} failed:\n{output[-3000:]}"

    kinds = {**halves["a"], **halves["b"]}
    rows = {}
    for half in halves:
        with open(tmp_path / f"class_{half}" / f"grades_{NAME}.csv") as handle:
            rows.update({row["student"]: row for row in csv.DictReader(handle)})
    assert set(rows) == set(kinds)
    graded_ids = set(graded_cells(read(solution_path(NAME))))
    with Gradebook(url) as gb:
        # One assignment, one notebook, its graded cells once: the two registrations did not
        # insert twice.
        assert [a.name for a in gb.assignments] == [NAME]
        assert [nb.name for nb in gb.find_assignment(NAME).notebooks] == [NAME]
        assert sorted(c.name for c in gb.db.query(GradeCell).all()) == sorted(graded_ids)
        assert sorted(s.id for s in gb.students) == sorted(kinds)
        for student, kind in kinds.items():
            submission = gb.find_submission(NAME, student)
            grades = {g.name: g.score for nb in submission.notebooks for g in nb.grades}
            assert set(grades) == graded_ids, f"{student} lacks grades: {grades}"
            assert submission.score == float(rows[student]["score"]) == sum(grades.values())
            assert rows[student]["reason"] == ""
            _expect(kind, submission.score)
        assert gb.db.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_an_unreachable_database_stops_before_grading(tmp_path):
    url = "postgresql://grader:s3cret@127.0.0.1:1/gradebook"  # nothing listens on port 1
    with pytest.raises(SystemExit) as stopped:
        grading.grade_class(ROOT, NAME, tmp_path, tmp_path / "class", db_url=url)
    message = str(stopped.value)
    assert "cannot reach the gradebook database" in message and "127.0.0.1:1" in message
    assert "s3cret" not in message, "the password must not be printed"
    assert not (tmp_path / "class").exists(), "nothing may be written before the database answers"
