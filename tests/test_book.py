"""The rendered book: it builds warning-free, works with no network, never shows a solution.

The browser tests serve the built site on 127.0.0.1, abort every other request and drive
Debian's headless Chromium through playwright. Without /usr/bin/chromium they skip, except
under CI (the CI environment variable set), where they fail so that CI cannot skip silently.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from coursetools.release import assignment_names, leaks, secret_lines

ROOT = Path(__file__).resolve().parents[1]
# Known and harmless: pydata-sphinx-theme on a first visit; sphinx-thebe writes its inline
# config script twice, so the second `const` declaration throws (thebe itself is off).
HARMLESS_CONSOLE = ("Got invalid theme mode",)
HARMLESS_PAGE_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
# <link rel=...> values that name a related page rather than load a resource.
NAVIGATION_RELS = {"canonical", "alternate", "author", "license", "help", "search",
                   "next", "prev", "index", "genindex", "me"}
TEXT_SUFFIXES = {".html", ".js", ".ipynb", ".md", ".txt", ".py", ".json"}


def jupyter_book() -> list[str]:
    beside = Path(sys.executable).with_name("jupyter-book")
    found = beside if beside.exists() else shutil.which("jupyter-book")
    if not found:
        pytest.fail("jupyter-book is not installed (pip install -r requirements.txt)")
    return [str(found)]


def build(book: Path, timeout: float = 1800) -> Path:
    """Build the book at `book` as CI does (-W: a warning fails); fail with the log if it does.

    Under xdist each worker has its own session: the first to ask builds, under a lock, and
    the others reuse its result (two builds in one _build/ would race).
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    stamp = book / "_build" / ".test-build.json"
    with exclusive(book / "_build" / ".test-build.lock"):
        done = json.loads(stamp.read_text()) if run and stamp.exists() else {}
        if not run or done.get("run") != run:
            done = {"run": run, "error": _build(book, timeout)}
            stamp.write_text(json.dumps(done))
    if done["error"]:
        pytest.fail(done["error"], pytrace=False)
    return book / "_build" / "html"


def _build(book: Path, timeout: float) -> str | None:
    # Sphinx never deletes stale pages; the doctrees and jupyter-cache kept beside keep it fast.
    shutil.rmtree(book / "_build" / "html", ignore_errors=True)
    done = subprocess.run([*jupyter_book(), "build", str(book), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode == 0:
        return None
    log = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr).splitlines()
    problems = [line for line in log if "WARNING" in line or "ERROR" in line or "Error" in line]
    return (f"jupyter-book build {book} exited {done.returncode}\n" + "\n".join(problems)
            + "\n--- last lines of the log ---\n" + "\n".join(log[-60:]))


@contextlib.contextmanager
def exclusive(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: builds are not serialised there
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def site() -> Path:
    """The main book, built once per session (jupyter-cache makes a rebuild fast)."""
    return build(ROOT)


def pages(site: Path) -> list[Path]:
    # _static/ holds theme template fragments, not pages.
    found = sorted(p for p in site.rglob("*.html") if p.relative_to(site).parts[0] != "_static")
    assert found, f"no HTML pages under {site}"
    return found


# --- what a page loads --------------------------------------------------------------------

class _Resources(HTMLParser):
    """URLs a page makes the browser fetch (scripts, stylesheets, fonts, images, frames)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "link" and not set(a.get("rel", "").lower().split()) & NAVIGATION_RELS:
            self.urls.append(a.get("href", ""))
        elif tag in {"script", "img", "iframe", "source", "audio", "video", "embed", "track"}:
            self.urls.append(a.get("src", ""))
        elif tag == "object":
            self.urls.append(a.get("data", ""))


def external_resources(page_html: str) -> list[str]:
    parser = _Resources()
    parser.feed(page_html)
    return [u for u in parser.urls if u.strip().lower().startswith(("http:", "https:", "//"))]


def test_external_resources_are_detected():
    page = ('<link rel="stylesheet" href="https://cdn.example.org/a.css">'
            '<script defer src="//cdn.example.org/b.js"></script><script src="_static/c.js"></script>'
            '<link rel="canonical" href="https://example.org/"><a href="https://example.org/">ok</a>')
    assert external_resources(page) == ["https://cdn.example.org/a.css", "//cdn.example.org/b.js"]


@pytest.mark.slow
def test_no_page_loads_anything_from_another_host(site):
    offenders = {str(p.relative_to(site)): external
                 for p in pages(site) if (external := external_resources(p.read_text()))}
    assert not offenders, f"pages that load resources from the network: {offenders}"
    css = [str(p.relative_to(site)) for p in site.rglob("*.css")
           if any(s in p.read_text(errors="replace") for s in ("url(http", "url('http", 'url("http',
                                                               "url(//", "@import url(http"))]
    assert not css, f"stylesheets that fetch from the network: {css}"


def test_configured_scripts_are_vendored():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    static = ROOT / "book" / "_static"
    assert (static / config["mathjax_path"]).is_file(), config["mathjax_path"]
    for path in config["nb_ipywidgets_js"]:
        assert (static / path).is_file(), path


def test_vendored_files_are_the_pinned_ones():
    """Hand edits show up here; book/_static/vendor/update.sh --check compares with npm."""
    vendor = ROOT / "book" / "_static" / "vendor"
    listed = {}
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    present = {str(p.relative_to(vendor)) for p in vendor.rglob("*") if p.is_file()}
    assert present - set(listed) == {"SHA256SUMS", "update.sh", "LICENSES.md"}
    changed = [n for n, d in listed.items()
               if not (vendor / n).is_file() or hashlib.sha256((vendor / n).read_bytes()).hexdigest() != d]
    assert not changed, f"vendored files differ from SHA256SUMS: {changed}"


# --- no solution reaches the book ---------------------------------------------------------

class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def visible_text(page_html: str) -> str:
    """Text with tags removed and entities decoded: highlighted code splits a line into spans."""
    parser = _Text()
    parser.feed(page_html)
    return "".join(parser.parts)


def secrets() -> dict[str, dict[str, set[str]]]:
    found = {name: secret_lines(ROOT, name) for name in assignment_names(ROOT)}
    assert found, "no assignments under solutions/"
    for name, kinds in found.items():
        assert kinds["solution"], f"solutions/{name} has no solution lines to look for"
    return found


def test_leaks_finds_a_solution_line_in_highlighted_html():
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    name, kinds = next(iter(secrets().items()))
    line = sorted(kinds["solution"])[0]
    page = "<html><body>" + highlight(f"def f(x):\n    {line}\n", PythonLexer(), HtmlFormatter()) + "</body></html>"
    assert leaks(visible_text(page), kinds), f"{line!r} planted in a page was not found"
    assert not leaks(visible_text("<p>nothing to see</p>"), kinds)


@pytest.mark.slow
def test_no_solution_or_hidden_test_line_in_the_built_site(site):
    found, by_name = [], secrets()
    for path in sorted(site.rglob("*")):
        if path.suffix not in TEXT_SUFFIXES or "vendor" in path.relative_to(site).parts:
            continue
        raw = path.read_text(errors="replace")
        text = visible_text(raw) if path.suffix == ".html" else raw
        for name, kinds in by_name.items():
            found += [f"{path.relative_to(site)}: {name} {leak}" for leak in set(leaks(raw, kinds) + leaks(text, kinds))]
    assert not found, "the built book reveals:\n" + "\n".join(found)


# --- in a browser, offline ----------------------------------------------------------------

@contextlib.contextmanager
def serve(directory: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


class Visit:
    """One page load with every request off 127.0.0.1 aborted and every problem recorded."""

    def __init__(self, browser, base: str, path: str):
        self.aborted: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} (HTTP {r.status})"))
        self.page.route("**/*", self._route)
        self.base = base
        self.page.goto(base + path, wait_until="networkidle")
        # MathJax typesets after load; wait for it where it is present.
        self.page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                           " ? MathJax.startup.promise.then(() => true) : false")

    def _route(self, route):
        if route.request.url.startswith(self.base):
            route.continue_()
        else:
            self.aborted.append(route.request.url)
            route.abort()

    def problems(self) -> list[str]:
        errors = [e for e in self.errors
                  if not any(h in e for h in HARMLESS_CONSOLE + HARMLESS_PAGE_ERRORS)]
        # An aborted request also fails: report it once, as aborted.
        failed = [f for f in self.failed if not any(f.startswith(a) for a in self.aborted)]
        return ([f"left localhost: {u}" for u in self.aborted]
                + [f"failed: {f}" for f in failed] + errors)

    def close(self):
        self.page.close()


@pytest.mark.slow
@pytest.mark.browser
def test_math_is_typeset_offline(site, browser):
    path = "book/01-theory/index.html"
    assert r"\operatorname{Attention}" in (site / path).read_text(), "the page lost its display math"
    with serve(site) as base:
        visit = Visit(browser, base, path)
        try:
            typeset = visit.page.locator("mjx-container").count()
            text = visit.page.inner_text("body")
            problems = visit.problems()
        finally:
            visit.close()
    assert typeset, f"MathJax typeset nothing on {path}; problems: {problems}"
    assert r"\operatorname{Attention}" not in text, "raw TeX is visible"
    assert not problems, problems


@pytest.mark.slow
@pytest.mark.browser
def test_every_page_loads_offline_without_errors(site, browser):
    found = {}
    with serve(site) as base:
        for page in pages(site):
            visit = Visit(browser, base, str(page.relative_to(site)))
            try:
                if problems := visit.problems():
                    found[str(page.relative_to(site))] = problems
            finally:
                visit.close()
    assert not found, found


WIDGET_PAGE = """\
---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# Widget

$$\\operatorname{softmax}(x)_i = \\frac{e^{x_i}}{\\sum_j e^{x_j}}$$

```{code-cell} ipython3
import ipywidgets
ipywidgets.IntSlider(value=7, min=0, max=10, description=r"\\(d_k\\)")
```
"""


def build_scratch_book(book: Path, pages: dict[str, str]) -> Path:
    """Build a throwaway book at `book` with the repository's configuration and these pages
    (path without suffix -> MyST text); return its HTML folder."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["sphinx"]["config"]["html_static_path"] = [
        str(ROOT / p) for p in config["sphinx"]["config"]["html_static_path"]]
    # sort_keys=False: the order of nb_ipywidgets_js is the order the scripts load in.
    (book / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    chapters = "".join(f"  - file: {name}\n" for name in pages)
    (book / "_toc.yml").write_text(f"format: jb-book\nroot: index\nchapters:\n{chapters}")
    (book / "index.md").write_text("# Index\n")
    for name, text in pages.items():
        (book / name).parent.mkdir(parents=True, exist_ok=True)
        (book / f"{name}.md").write_text(text)
    return build(book, timeout=600)


@pytest.fixture(scope="session")
def widget_site(tmp_path_factory) -> Path:
    """A throwaway book with one nested page holding a slider."""
    return build_scratch_book(tmp_path_factory.mktemp("widget-book"), {"part/widget": WIDGET_PAGE})


@pytest.mark.slow
@pytest.mark.browser
def test_widget_renders_live_offline(widget_site, browser):
    path = "part/widget.html"
    page_html = (widget_site / path).read_text()
    assert "application/vnd.jupyter.widget-state+json" in page_html, "no widget state was saved"
    assert not external_resources(page_html), external_resources(page_html)
    assert "vendor/requirejs/require.js" in page_html
    with serve(widget_site) as base:
        visit = Visit(browser, base, path)
        try:
            visit.page.wait_for_selector(".widget-slider", timeout=15_000)
            readout = visit.page.locator(".widget-readout")
            before = readout.inner_text()
            visit.page.locator(".widget-slider [role=slider]").focus()
            visit.page.keyboard.press("ArrowRight")
            visit.page.wait_for_function(
                "() => document.querySelector('.widget-readout').innerText === '8'", timeout=5_000)
            visit.page.wait_for_load_state("networkidle")
            typeset = visit.page.locator("mjx-container").count()
            label_typeset = visit.page.locator(".widget-label mjx-container").count()
            text = visit.page.inner_text("body")
            problems = visit.problems()
        finally:
            visit.close()
    assert before == "7"
    assert "Error displaying widget" not in text
    assert typeset, "MathJax and require.js on one page: nothing typeset"
    assert label_typeset, "the widget's d_k label was not typeset (widgets-offline.js bridge)"
    assert not problems, problems


# --- on a phone and on a desktop ----------------------------------------------------------

WIDTHS = {"phone": (390, 844), "desktop": (1366, 900)}
SCREENSHOTS = ROOT / "_build" / "screenshots"   # build artefacts (CI keeps _build/screenshots)

# Everything in <main> that reaches past the right edge of the window, except what sits in
# a box that scrolls on its own (code blocks, wide tables and display math, where the
# theme wraps them so). Only the outermost offender of each subtree is named.
OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth, found = [], named = new Set();
  const scroller = document.scrollingElement;
  if (scroller.scrollWidth > width + 1)
    found.push(`the page is ${scroller.scrollWidth}px wide in a ${width}px window`);
  const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + [...el.classList].slice(0, 3).map(c => '.' + c).join('');
  for (const el of (document.querySelector('main') || document.body).querySelectorAll('*')) {
    if (named.has(el.parentElement)) { named.add(el); continue; }
    if (el.closest('mjx-assistive-mml')) continue;   // clipped copy for screen readers
    const box = el.getBoundingClientRect();
    if (!box.width || box.right <= width + 1) continue;
    let up = el.parentElement, scrolls = false;
    for (; up && up !== document.body; up = up.parentElement) {
      const overflow = getComputedStyle(up).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') { scrolls = true; break; }
    }
    if (scrolls || getComputedStyle(el).visibility === 'hidden') continue;
    named.add(el);
    found.push(`${describe(el)} ("${(el.innerText || '').trim().slice(0, 40)}") reaches `
               + `${Math.round(box.right)}px`);
  }
  return found.slice(0, 6);
}"""


def screenshot_pages(paths: list[str]) -> list[str]:
    """The landing page and the first chapter of each part."""
    chosen = ["book/index.html"]
    for part in sorted({p.split("/")[1] for p in paths if p.startswith("book/0")}):
        chapters = sorted(p for p in paths if p.startswith(f"book/{part}/") and not p.endswith("index.html"))
        chosen += chapters[:1]
    return [p for p in chosen if p in paths]


def layout_problems(browser, base: str, paths: list[str], shots: Path) -> dict[str, list[str]]:
    """Load every page once per width (one browser context each) and return, per page and
    width, what reaches past the window; screenshots of screenshot_pages go to `shots`."""
    found: dict[str, list[str]] = {}
    keep = set(screenshot_pages(paths))
    for name, (width, height) in WIDTHS.items():
        context = browser.new_context(viewport={"width": width, "height": height})
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
                      else route.abort())
        page = context.new_page()
        try:
            for path in paths:
                page.goto(base + path, wait_until="load")
                page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                              " ? MathJax.startup.promise.then(() => true) : false")
                if problems := page.evaluate(OVERFLOW_JS):
                    found[f"{path} at {width}px"] = problems
                if path in keep:
                    target = shots / name / (path.replace("/", "__").removesuffix(".html") + ".png")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(target), full_page=True)
        finally:
            context.close()
    return found


@pytest.mark.slow
@pytest.mark.browser
def test_every_page_fits_a_phone_and_a_desktop(site, browser):
    # Every page but the top-level index.html, a redirect to book/index.html.
    paths = [str(p.relative_to(site)) for p in pages(site) if p != site / "index.html"]
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    with serve(site) as base:
        found = layout_problems(browser, base, paths, SCREENSHOTS)
    shots = sorted(SCREENSHOTS.rglob("*.png"))
    assert len(shots) == 2 * len(screenshot_pages(paths)) >= 2 * 4, shots
    assert not found, "pages wider than the window outside a scrolling box:\n" + "\n".join(
        f"{page}: {problems}" for page, problems in found.items())


def search_results(browser, base: str, query: str) -> list[str]:
    """Type `query` into the book's search box as a reader would; the result links."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
               else route.abort())
    try:
        page.goto(base + "book/index.html", wait_until="load")
        page.locator(".search-button__button:visible").first.click()
        box = page.locator("#pst-search-dialog input[type=search]")
        box.fill(query)
        box.press("Enter")
        page.wait_for_url("**/search.html?*", timeout=15_000)
        # Results appear one by one; the title changes to "Search Results" once all are in.
        page.wait_for_function("() => document.querySelector('#search-results h2')"
                               " && document.querySelector('#search-results h2').innerText"
                               " === 'Search Results'", timeout=60_000)
        return page.eval_on_selector_all("#search-results ul.search li a",
                                         "links => links.map(a => a.getAttribute('href'))")
    finally:
        page.close()


@pytest.mark.slow
@pytest.mark.browser
def test_search_finds_the_attention_chapter(site, browser):
    with serve(site) as base:
        links = search_results(browser, base, "attention")
    assert any("book/01-theory/03-attention" in link for link in links), links
