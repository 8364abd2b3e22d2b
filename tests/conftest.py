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
# to a file, committed as tests/durations.json), so that no long test starts last; a test not
# yet measured counts as short. The rendered book's tests share one build, which takes minutes:
# they form one xdist group, so that one worker builds it while the other grades.
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
    book = {item.nodeid for item in items if item.nodeid.startswith("tests/test_book.py")}
    group = sum(durations.get(nodeid, 0.0) for nodeid in book)
    for item in items:
        if item.nodeid in book:
            item.add_marker(pytest.mark.xdist_group("book"))

    def cost(item) -> float:
        return group if item.nodeid in book else durations.get(item.nodeid, 0.0)

    items.sort(key=cost, reverse=True)  # stable: equal costs keep the files' order


def pytest_runtest_logreport(report):
    if os.environ.get("COURSE_TEST_DURATIONS"):
        nodeid = report.nodeid.removesuffix("@book")  # the group's name, added by --dist loadgroup
        _measured[nodeid] = _measured.get(nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    path = os.environ.get("COURSE_TEST_DURATIONS")
    # Under xdist every report reaches the controller; a worker (workerinput) writes nothing.
    if path and _measured and not hasattr(session.config, "workerinput"):
        import json
        Path(path).write_text(json.dumps({k: round(v, 2) for k, v in sorted(_measured.items())},
                                         indent=0) + "\n")
