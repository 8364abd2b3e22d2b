"""`course export`: the gradebook as one LMS-ready CSV, on gradebooks built here (no grading run)."""
import csv
import os
import shutil
import sys
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from coursetools import cli, grades

# nbgrader's own add_submission trips this SQLAlchemy warning while building the fixtures.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

# Points chosen so that their float sums carry noise: 0.1 + 0.2 is 0.30000000000000004.
CELLS = {"02_attention": {"q1": 0.1, "q2": 0.2, "q3": 5.7}, "01_softmax": {"s1": 2.0, "s2": 4.0}}


@pytest.fixture(scope="module")
def blank(tmp_path_factory) -> Path:
    """An empty gradebook, created once: nbgrader starts `alembic` (a second) for each new one."""
    path = tmp_path_factory.mktemp("blank") / "gradebook.db"
    saved = os.environ["PATH"]
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), saved])
    try:
        Gradebook(f"sqlite:///{path}").close()
    finally:
        os.environ["PATH"] = saved
    return path


def build_class(blank: Path, class_dir: Path, scores: dict[tuple[str, str], dict[str, float]],
                students=("zoe", "alice", "bob"), penalties: dict[tuple[str, str], float] | None = None) -> Path:
    """A gradebook with CELLS' assignments; scores[(assignment, student)] = {cell: points}."""
    class_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(blank, class_dir / "gradebook.db")
    with Gradebook(f"sqlite:///{class_dir / 'gradebook.db'}") as gb:
        for assignment, cells in CELLS.items():
            gb.add_assignment(assignment)
            gb.add_notebook(assignment, assignment)
            for cell, points in cells.items():
                gb.add_grade_cell(cell, assignment, assignment, max_score=points, cell_type="code")
        for student in students:
            gb.add_student(student)
        for (assignment, student), cells in scores.items():
            gb.add_submission(assignment, student)
            for cell, points in cells.items():
                gb.find_grade(cell, assignment, assignment, student).auto_score = points
            penalty = (penalties or {}).get((assignment, student))
            if penalty:
                gb.find_submission_notebook(assignment, assignment, student).late_submission_penalty = penalty
        gb.db.commit()
    return class_dir


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_one_row_per_student_one_column_per_assignment_totals_and_max(blank, tmp_path):
    class_dir = build_class(blank, tmp_path / "class", {
        ("02_attention", "alice"): {"q1": 0.1, "q2": 0.2, "q3": 5.7},
        ("01_softmax", "alice"): {"s1": 2.0, "s2": 1.5},
        ("02_attention", "zoe"): {"q1": 0.1, "q2": 0.2, "q3": 0.0},
    })

    result, path = grades.export(class_dir)

    assert path == class_dir / "grades.csv"
    assert rows(path) == [
        ["student", "01_softmax", "02_attention", "total", "max"],
        ["alice", "3.5", "6", "9.5", "12"],
        ["bob", "0", "0", "0", "12"],
        ["zoe", "0", "0.3", "0.3", "12"],
    ]
    assert result.missing == {"bob": ["01_softmax", "02_attention"], "zoe": ["01_softmax"]}


def test_a_submission_scored_zero_is_not_listed_as_missing(blank, tmp_path):
    class_dir = build_class(blank, tmp_path / "class", {
        ("02_attention", "alice"): {"q1": 0.0, "q2": 0.0, "q3": 0.0},
        ("01_softmax", "alice"): {"s1": 0.0, "s2": 0.0},
    }, students=("alice",))
    result = grades.read_gradebook(class_dir)
    assert result.scores == {"alice": {"01_softmax": 0.0, "02_attention": 0.0}}
    assert result.missing == {}


def test_late_penalties_are_subtracted_but_never_below_zero(blank, tmp_path):
    class_dir = build_class(blank, tmp_path / "class", {
        ("01_softmax", "alice"): {"s1": 2.0, "s2": 4.0},
        ("01_softmax", "bob"): {"s1": 1.0, "s2": 0.0},
    }, students=("alice", "bob"), penalties={("01_softmax", "alice"): 1.5, ("01_softmax", "bob"): 3.0})
    result = grades.read_gradebook(class_dir)
    assert result.scores["alice"]["01_softmax"] == 4.5
    assert result.scores["bob"]["01_softmax"] == 0.0


def test_columns_are_stable_whatever_order_things_were_added(blank, tmp_path):
    one = build_class(blank, tmp_path / "one", {("02_attention", "bob"): {"q3": 1.0}}, students=("zoe", "bob"))
    two = build_class(blank, tmp_path / "two", {("02_attention", "bob"): {"q3": 1.0}}, students=("bob", "zoe"))
    assert rows(grades.export(one)[1]) == rows(grades.export(two)[1])
    assert [r[0] for r in rows(grades.export(one)[1])] == ["student", "bob", "zoe"]


@pytest.mark.parametrize("value, text", [
    (0.1 + 0.2, "0.3"), (6.0, "6"), (5.5, "5.5"), (-0.0, "0"), (1e-9, "0"), (1234567.0, "1234567"),
    (2 / 3, "0.666667"),
])
def test_numbers_are_written_without_float_noise_or_exponents(value, text):
    assert grades.plain_number(value) == text


def test_missing_or_broken_gradebooks_raise_with_what_to_do(blank, tmp_path):
    with pytest.raises(grades.ExportError, match="no gradebook at .*--class-dir"):
        grades.read_gradebook(tmp_path)
    assert not (tmp_path / "gradebook.db").exists(), "export must not create a gradebook"
    (tmp_path / "gradebook.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(grades.ExportError, match="not a readable nbgrader gradebook"):
        grades.read_gradebook(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copyfile(blank, empty / "gradebook.db")
    with pytest.raises(grades.ExportError, match="holds no assignment yet"):
        grades.read_gradebook(empty)


def test_the_cli_writes_the_csv_and_lists_missing_submissions(blank, tmp_path, capsys):
    class_dir = build_class(blank, tmp_path / "class", {("02_attention", "alice"): {"q1": 0.1}},
                            students=("alice", "bob"))
    out = tmp_path / "lms" / "grades.csv"

    assert cli.main(["export", "--class-dir", str(class_dir), "--out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert f"wrote {out}: 2 students, 2 assignments (01_softmax, 02_attention), out of 12 points" in printed
    assert "alice: 01_softmax" in printed and "bob: 01_softmax, 02_attention" in printed
    assert rows(out)[1] == ["alice", "0", "0.1", "0.1", "12"]
    assert cli.main(["export", "--class-dir", str(tmp_path / "nowhere")]) == 2
    assert "no gradebook at" in capsys.readouterr().err
