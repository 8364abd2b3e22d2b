"""What the README tells a learner to run: `nbgrader validate` on a notebook.

nbgrader validate exits 0 whatever it finds, so these read what it prints."""
import subprocess
import sys
from pathlib import Path

import pytest

from coursetools.release import assignment_names
from exercise_tools import ROOT, release_path, solution_path

pytestmark = pytest.mark.slow
NAMES = assignment_names(ROOT)


def _validate(path: Path, *flags: str) -> str:
    nbgrader = Path(sys.executable).with_name("nbgrader")
    done = subprocess.run([str(nbgrader), "validate", *flags, str(path)], capture_output=True,
                          text=True, timeout=600, cwd=path.parent)
    return done.stdout + done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_validate_accepts_the_solution(name):
    assert "Success! Your notebook passes all the tests." in _validate(solution_path(name))


@pytest.mark.parametrize("name", NAMES)
def test_validate_reports_the_untouched_release_as_failing(name):
    out = _validate(release_path(name))
    assert "Success!" not in out
    assert "NotImplementedError" in out  # the learner is told what is left to do
    # That no test cell passes on the untouched release is test_grading's (real autograde
    # scores it 0), not repeated here with `validate --invert`: a second run of the notebook.
