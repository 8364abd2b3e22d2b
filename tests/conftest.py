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
# `make test` runs on two workers, so the suite lasts as long as its busier worker. Tests are
# handed out longest first (durations measured by a whole run with COURSE_TEST_DURATIONS set
# to a file, `make durations`, committed as tests/durations.json), so that no long test starts
# last; a test not yet measured counts as short. Tests that share an expensive set-up (the
# built book, a hostile class graded once, the learners' bundles) form one xdist group, run
# by one worker, so that the set-up is not paid twice; a group counts as long as its tests
# together (`--dist loadgroup --no-loadscope-reorder`, Makefile).
DURATIONS = Path(__file__).with_name("durations.json")
_measured: dict[str, float] = {}
SHARED_HOSTILE = ("test_hostile_submissions_cost_only_their_own_grade",
                  "test_feedback_pages_hide_the_hidden_tests_and_explain_failures")


def _known_durations() -> dict[str, float]:
    import json
    try:
        return json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}


def _group(item) -> str | None:
    fixtures = getattr(item, "fixturenames", ())
    if item.nodeid.startswith("tests/test_book.py"):
        return "book"
    if "runs" in fixtures and item.nodeid.startswith("tests/test_hostile_corpus.py"):
        return f"hostile-{item.callspec.params['name']}"
    if "bundles" in fixtures:
        return "bundles"
    if item.nodeid.startswith("tests/test_grading.py") and item.originalname in SHARED_HOSTILE:
        return "grading-hostile"
    return None


def pytest_collection_modifyitems(config, items):
    durations = _known_durations()
    groups = {item.nodeid: _group(item) for item in items}
    cost_of_group: dict[str, float] = {}
    for item in items:
        if groups[item.nodeid]:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
            cost_of_group[groups[item.nodeid]] = (cost_of_group.get(groups[item.nodeid], 0.0)
                                                  + durations.get(item.nodeid, 0.0))

    def cost(item) -> tuple[float, str]:
        group = groups[item.nodeid]
        # a group's tests stay together, in the files' order
        return (cost_of_group[group], group) if group else (durations.get(item.nodeid, 0.0), "")

    items.sort(key=cost, reverse=True)  # stable: equal costs keep the files' order


def pytest_runtest_logreport(report):
    if os.environ.get("COURSE_TEST_DURATIONS"):
        import re
        nodeid = re.sub(r"@[\w-]+$", "", report.nodeid)  # less the group --dist loadgroup appends
        _measured[nodeid] = _measured.get(nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    path = os.environ.get("COURSE_TEST_DURATIONS")
    # Under xdist every report reaches the controller; a worker (workerinput) writes nothing.
    if path and _measured and not hasattr(session.config, "workerinput"):
        import json
        Path(path).write_text(json.dumps({k: round(v, 2) for k, v in sorted(_measured.items())},
                                         indent=0) + "\n")
