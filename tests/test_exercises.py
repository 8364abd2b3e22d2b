"""Every exercise, in-process (fast): the solution passes every graded cell, the release
stub fails every one, and each known mistake fails at least one with its diagnosis."""
from __future__ import annotations

import pytest

from coursetools.release import assignment_names
from exercise_tools import ROOT, grade_id, read, release_path, run_in_process, solution_path, with_cells
from mistakes import Mistake, for_exercise

NAMES = assignment_names(ROOT)
MISTAKES = [(name, m) for name in NAMES for m in for_exercise(name)]


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes_every_graded_cell(name):
    outcome = run_in_process(read(solution_path(name)))
    assert outcome.passed and all(outcome.passed.values()), outcome.messages


@pytest.mark.parametrize("name", NAMES)
def test_release_stub_fails_every_graded_cell(name):
    outcome = run_in_process(read(release_path(name)))
    assert outcome.passed and not any(outcome.passed.values()), outcome.passed


@pytest.mark.parametrize("name", NAMES)
def test_every_graded_function_has_at_least_three_known_mistakes(name):
    solution_cells = [grade_id(c) for c in read(solution_path(name)).cells
                      if c.metadata.get("nbgrader", {}).get("solution")]
    assert solution_cells
    for cell in solution_cells:
        mistakes = [m.name for m in for_exercise(name) if m.cell == cell]
        assert len(mistakes) >= 3, f"{name}: only {mistakes} target `{cell}`"


@pytest.mark.parametrize("name, mistake", MISTAKES, ids=[f"{n}-{m.name}" for n, m in MISTAKES])
def test_each_mistake_fails_with_its_diagnosis(name, mistake: Mistake):
    nb = with_cells(read(solution_path(name)), {mistake.cell: mistake.source})
    outcome = run_in_process(nb)
    failed = [cell for cell, ok in outcome.passed.items() if not ok]
    assert failed, f"{mistake.name} passed every graded cell"
    assert any(mistake.says in outcome.messages[c] for c in failed), outcome.messages


@pytest.mark.parametrize("name", NAMES)
def test_missing_course_package_is_explained_in_one_line(name, monkeypatch):
    # A learner who opens a notebook in a kernel without the course package must be told
    # how to install it, not shown a bare ModuleNotFoundError.
    setup = [c for c in read(release_path(name)).cells
             if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("locked")
             and not c.metadata["nbgrader"].get("grade")][0]
    for module in ("autograder", "autograder.checks", "llmref"):
        monkeypatch.setitem(__import__("sys").modules, module, None)
    with pytest.raises(ImportError) as caught:
        exec(setup.source, {})
    assert "pip install" in str(caught.value)
