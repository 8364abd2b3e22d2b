import os
import sys
from pathlib import Path

import pytest

# Test helpers (exercise_tools, mistakes) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


# One browser per test process, shared by every module: playwright's sync API allows only
# one running instance per thread.
@pytest.fixture(scope="session")
def browser():
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = reason or "the playwright package is missing (pip install playwright)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# --------------------------------------------------------------------------- test order
# `make test` runs on two workers, so the suite lasts as long as its busier worker. Each test
# file goes to one worker whole (`--dist loadfile`, Makefile): the files that share an
# expensive set-up among their tests (the built book, a hostile class graded once, the
# learners' bundles, test_grading's hostile class) then pay it once. Files are handed out
# longest first (the sum of their tests' durations, measured by a whole run with
# COURSE_TEST_DURATIONS set to a file, `make durations`, committed as tests/durations.json), so
# that no long file starts last; a test not yet measured counts as short. (xdist's
# `--dist loadgroup` would group finer, but its groups were not kept together here: measured
# with xdist 3.8 and pytest 9.2, tests of one group ran on both workers.)
DURATIONS = Path(__file__).with_name("durations.json")
_measured: dict[str, float] = {}


def _known_durations() -> dict[str, float]:
    import json
    try:
        return json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}


def pytest_collection_modifyitems(config, items):
    durations = _known_durations()
    per_file: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        per_file[path] = per_file.get(path, 0.0) + durations.get(item.nodeid, 0.0)
    # stable: a file's tests keep their order, files of equal cost keep theirs
    items.sort(key=lambda item: (per_file[item.nodeid.split("::")[0]], item.nodeid.split("::")[0]),
               reverse=True)


def pytest_runtest_logreport(report):
    if os.environ.get("COURSE_TEST_DURATIONS"):
        _measured[report.nodeid] = _measured.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    path = os.environ.get("COURSE_TEST_DURATIONS")
    # Under xdist every report reaches the controller; a worker (workerinput) writes nothing.
    if path and _measured and not hasattr(session.config, "workerinput"):
        import json
        Path(path).write_text(json.dumps({k: round(v, 2) for k, v in sorted(_measured.items())},
                                         indent=0) + "\n")
