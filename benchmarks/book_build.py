"""How long the book takes to build: cold (every page executed), cached, and after editing
one chapter, per page and part.

    .venv/bin/python benchmarks/book_build.py

Builds into a temporary folder (the repository's _build/ is left alone) and writes
benchmarks/results/book_build.json. The one-page rebuild is what an author waits for after
an edit: a line is added to a code cell of EDITED_PAGE (so jupyter-cache runs that page
again and Sphinx rewrites it), the book is rebuilt, and the file is restored. Target: at most
ONE_PAGE_TARGET_SECONDS.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parents[1]
EDITED_PAGE = ROOT / "book" / "02-frameworks" / "05-other-frameworks.md"
EDIT = "# edited by benchmarks/book_build.py: a changed code cell runs again\n"
ONE_PAGE_TARGET_SECONDS = 60


def build(config: Path, output: Path) -> float:
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    done = subprocess.run([str(jupyter_book), "build", str(ROOT), "--config", str(config),
                           "--path-output", str(output), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode:
        log = (done.stdout + done.stderr).splitlines()
        sys.exit("the book did not build:\n" + "\n".join(
            [line for line in log if "WARNING" in line or "ERROR" in line] + log[-30:]))
    return seconds


def main() -> None:
    load_before = [round(x, 2) for x in os.getloadavg()]   # others' work distorts the times
    with tempfile.TemporaryDirectory(prefix="book-bench-") as scratch:
        scratch = Path(scratch)
        config = yaml.safe_load((ROOT / "_config.yml").read_text())
        config["execute"]["cache"] = str(scratch / "cache")
        config["sphinx"]["config"]["html_static_path"] = [
            str(ROOT / p) for p in config["sphinx"]["config"]["html_static_path"]]
        (scratch / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        cold = build(scratch / "config.yml", scratch / "out")
        warm = build(scratch / "config.yml", scratch / "out")
        original = EDITED_PAGE.read_text()
        first_cell = "```{code-cell} ipython3\n"
        assert first_cell in original, f"{EDITED_PAGE} has no code cell to edit"
        try:
            EDITED_PAGE.write_text(original.replace(first_cell, first_cell + EDIT, 1))
            one_page = build(scratch / "config.yml", scratch / "out")
        finally:
            EDITED_PAGE.write_text(original)
        pages = {Path(r.uri).relative_to(ROOT).as_posix(): round(r.data["execution_seconds"], 1)
                 for r in get_cache(str(scratch / "cache")).list_cache_records()}
    parts: dict[str, float] = {}
    for page, seconds in pages.items():
        part = page.split("/")[1] if page.startswith("book/") else "other"
        parts[part] = round(parts.get(part, 0.0) + seconds, 1)
    result = {
        "what": "jupyter-book build -W: cold (empty jupyter-cache), again with nothing changed, "
                "and again after a code cell of one chapter changed",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "cold_build_seconds": round(cold, 1),
        "cached_rebuild_seconds": round(warm, 1),
        "one_page_rebuild": {
            "page": EDITED_PAGE.relative_to(ROOT).as_posix(),
            "seconds": round(one_page, 1),
            "target_seconds": ONE_PAGE_TARGET_SECONDS,
            "page_execution_seconds": pages.get(EDITED_PAGE.relative_to(ROOT).as_posix()),
        },
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "execution_seconds_by_part": parts,
        "execution_seconds_by_page": dict(sorted(pages.items())),
    }
    out = ROOT / "benchmarks" / "results" / "book_build.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
