"""One source of truth: llmref/ and notebooks/ are exactly what solutions/ generates."""
import shutil

import nbformat
import pytest

from coursetools import library, release
from exercise_tools import ROOT

NAMES = release.assignment_names(ROOT)


def test_every_exercise_is_checked():
    assert "02_attention" in NAMES


def test_library_is_extracted_from_the_solutions():
    assert library.stale(ROOT) == [], "run `course library` and commit the result"


def test_a_hand_edit_of_the_library_is_caught(tmp_path):
    fake_root = tmp_path
    shutil.copytree(ROOT / "solutions", fake_root / "solutions")
    for path, text in library.generated_modules(ROOT).items():
        copy = fake_root / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(text)
    assert library.stale(fake_root) == []
    target = fake_root / "llmref" / "attention.py"
    target.write_text(target.read_text().replace("np.sqrt(d_k)", "d_k"))
    assert library.stale(fake_root) == [target]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)  # one nbgrader generation each: spread over the workers
def test_notebooks_match_a_fresh_generation_and_leak_nothing(name):
    assert release.check(ROOT, [name]) == []


def test_leak_scan_finds_a_planted_solution_line():
    secrets = release.secret_lines(ROOT, "02_attention")
    assert secrets["solution"] and secrets["hidden test"]
    planted = "print('hi')\n" + sorted(secrets["solution"])[0]
    assert release.leaks(planted, secrets)
    assert release.leaks("\n".join(sorted(secrets["hidden test"])), secrets)


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_committed_without_outputs(name):
    for folder in ("solutions", "notebooks"):
        for path in (ROOT / folder / name).glob("*.ipynb"):
            nb = nbformat.read(path, as_version=4)
            dirty = [i for i, c in enumerate(nb.cells)
                     if c.cell_type == "code" and (c.outputs or c.execution_count)]
            assert not dirty, f"{path.relative_to(ROOT)}: cells {dirty} have outputs"


@pytest.mark.parametrize("name", NAMES)
def test_graded_cells_have_ids_and_points(name):
    nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded, "an exercise without graded cells"
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), "grade_ids must be unique"
    for cell in graded:
        assert cell.metadata["nbgrader"].get("points", 0) > 0
        assert "### BEGIN HIDDEN TESTS" in cell.source, "every graded cell adds hidden cases"


@pytest.mark.slow
def test_the_course_package_installs_from_the_repository(tmp_path):
    # Learners install the checks with pip; a wheel must carry every module they import.
    import subprocess
    import sys
    import zipfile
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("llm_course-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for package in ("llmref", "autograder")
                for p in (ROOT / package).rglob("*.py")}
    assert expected <= names, sorted(expected - names)
