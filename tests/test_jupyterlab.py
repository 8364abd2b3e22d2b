"""The learner's JupyterLab: the course's settings (lab/) show a notebook and nbgrader's
Validate button, and none of the instructor's tools or JupyterLab's news question.

JupyterLab runs as `make lab` starts it (lab/ on JUPYTER_CONFIG_PATH), on a free port with
no token, with empty user settings so that nothing of the machine's own ~/.jupyter counts.
The browser test opens a release notebook with a right answer filled in, runs it, presses
Validate and reads nbgrader's result dialog.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from exercise_tools import ROOT, grade_id, read, release_path, solution_path

pytestmark = pytest.mark.slow
SETTINGS = ROOT / "lab"
EXERCISE = "01_softmax"
# Front-end plugins a learner must not see, and the server extensions behind them.
INSTRUCTOR_PLUGINS = ["@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:formgrader",
                      "@jupyter/nbgrader:menu", "@jupyter/nbgrader:course-list",
                      "@jupyter/nbgrader:assignment-list"]
NEWS_PLUGIN = "@jupyterlab/apputils-extension:announcements"


def answered_release(name: str, folder: Path) -> Path:
    """The release notebook of `name` with each solution cell holding the solution's code
    (markers dropped), written under folder/name/ as a learner's copy would be."""
    solved = {grade_id(c): c.source for c in read(solution_path(name)).cells
              if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"}
    nb = read(release_path(name))
    filled = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and grade_id(cell) in solved:
            cell.source = "\n".join(line for line in solved[grade_id(cell)].splitlines()
                                    if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
            filled += 1
    assert filled, f"{name}: no solution cell of the release matched the source's"
    path = folder / name / f"{name}.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab serving a folder with an answered and an untouched release notebook."""
    home = tmp_path_factory.mktemp("lab")
    work = home / "work"
    answered_release(EXERCISE, work)
    (work / "untouched").mkdir()
    (work / "untouched" / f"{EXERCISE}.ipynb").write_bytes(release_path(EXERCISE).read_bytes())
    port = free_port()
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(SETTINGS),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    jupyter = Path(sys.executable).with_name("jupyter")
    log = open(home / "lab.log", "w")
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={work}"],
        env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "api/status", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (home / "lab.log").read_text(),
                                pytrace=False)
                time.sleep(0.5)
        yield url, home / "lab.log"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def page_config(url: str) -> dict:
    with urllib.request.urlopen(url + "lab", timeout=30) as response:
        page = response.read().decode()
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      page, re.S)
    assert found, "the JupyterLab page carries no jupyter-config-data"
    return json.loads(found.group(1))


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_instructor_tools_and_news_are_switched_off(lab):
    url, _ = lab
    config = page_config(url)
    disabled = set(config["disabledExtensions"])
    assert not set(INSTRUCTOR_PLUGINS + [NEWS_PLUGIN]) - disabled, disabled
    assert "@jupyter/nbgrader:validate-assignment" not in disabled
    assert config.get("news", {}).get("disabled") is True, config.get("news")
    assert status(url + "formgrader") == 404, "the formgrader is served to learners"
    assert status(url + "courses") == 404 and status(url + "assignments") == 404
    assert status(url + "nbgrader_version?version=0.9.6") == 200, "Validate has no server"


def _open(browser, url: str, notebook: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    # ?reset: start from an empty workspace, not the previous test's open tabs.
    page.goto(f"{url}lab/tree/{notebook}?reset", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    panels = page.locator(".jp-NotebookPanel")
    assert panels.count() == 1, f"{panels.count()} notebooks open, expected only {notebook}"
    # The kernel is up once its status reads Idle in the status bar or the toolbar.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-Notebook-ExecutionIndicator, .jp-KernelStatus')]"
        ".some(n => /idle/i.test(n.getAttribute('data-status') || n.textContent || ''))",
        timeout=60_000)
    return page


PROMPTS = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(n => n.textContent.trim())"


def _run_all(page) -> None:
    """Run All Cells and wait until the run has ended, whether every cell ran or one
    stopped it, so that a failure shows what the notebook printed rather than a timeout."""
    # On a loaded machine a click can land before the notebook listens to it: click again
    # until some cell is queued or running ([*]) or has run ([n]).
    for _ in range(5):
        # Run All acts on the notebook that has focus; under load the page may not have
        # given it yet, so select a cell first.
        page.locator(".jp-NotebookPanel .jp-Cell .jp-InputPrompt").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            page.wait_for_function(
                f"() => {PROMPTS}.some(t => /^\\[(\\*|\\d+)\\]:$/.test(t))", timeout=20_000)
            break
        except Exception:  # playwright's TimeoutError: nothing started, try again
            continue
    # The run has ended once no cell is queued or running: Run All marks every cell [*]
    # at once, and a cell that raises sends the cells after it back to [ ].
    try:
        page.wait_for_function(
            f"() => {{ const p = {PROMPTS}; return p.length && !p.some(t => t === '[*]:')"
            " && p.some(t => /^\\[\\d+\\]:$/.test(t)); }", timeout=240_000)
    except Exception as timeout:
        raise AssertionError(f"Run All did not end; prompts: {page.evaluate(f'() => {PROMPTS}')}"
                             ) from timeout
    prompts = page.evaluate(f"() => {PROMPTS}")
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    assert all(re.fullmatch(r"\[\d+\]:", t) for t in prompts), (
        f"not every cell ran: prompts {prompts}; outputs {outputs}")


def _validate(page) -> str:
    page.locator(".validate-button").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=180_000)
    text = dialog.inner_text()
    dialog.locator("button", has_text="OK").first.click()
    return text


@pytest.mark.browser
def test_a_learner_runs_and_validates_a_notebook(lab, browser):
    url, log = lab
    page = _open(browser, url, f"{EXERCISE}/{EXERCISE}.ipynb")
    try:
        assert page.locator(".validate-button").count() == 1, "no Validate button in the toolbar"
        # The instructor's tools: the right sidebar's "Create Assignment" tab and the menu.
        assert page.locator("#nbgrader-create_assignemnt").count() == 0
        assert page.locator(".lm-TabBar-tab[title*='Create Assignment']").count() == 0
        menus = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
        assert "Nbgrader" not in menus, menus
        _run_all(page)
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        errors = [o for o in outputs if "Traceback" in o or "Error" in o.split("\n", 1)[0]]
        assert not errors, errors
        assert any("✓" in o for o in outputs), "the checks printed no ✓ line"
        result = _validate(page)
        # No news question, toast or otherwise, at any point.
        toasts = page.locator(".Toastify__toast, .jp-Notification-Toast").all_inner_texts()
    finally:
        page.close()
    assert "Success! Your notebook passes all the tests." in result, (result, log.read_text()[-3000:])
    assert not [t for t in toasts if "news" in t.lower()], toasts


@pytest.mark.browser
def test_validate_reports_what_is_left_in_an_untouched_release(lab, browser):
    url, _ = lab
    page = _open(browser, url, f"untouched/{EXERCISE}.ipynb")
    try:
        result = _validate(page)
    finally:
        page.close()
    assert "Success!" not in result
    assert "NotImplementedError" in result, result
