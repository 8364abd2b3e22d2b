"""How long the book takes to build: cold (every page executed) and cached, per page and part.

    .venv/bin/python benchmarks/book_build.py

Builds into a temporary folder (the repository's _build/ is left alone) and writes
benchmarks/results/book_build.json.
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


def build(config: Path, output: Path) -> float:
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    subprocess.run([str(jupyter_book), "build", str(ROOT), "--config", str(config),
                    "--path-output", str(output), "-W", "-n", "--keep-going"],
                   check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="book-bench-") as scratch:
        scratch = Path(scratch)
        config = yaml.safe_load((ROOT / "_config.yml").read_text())
        config["execute"]["cache"] = str(scratch / "cache")
        config["sphinx"]["config"]["html_static_path"] = [
            str(ROOT / p) for p in config["sphinx"]["config"]["html_static_path"]]
        (scratch / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        cold = build(scratch / "config.yml", scratch / "out")
        warm = build(scratch / "config.yml", scratch / "out")
        pages = {Path(r.uri).relative_to(ROOT).as_posix(): round(r.data["execution_seconds"], 1)
                 for r in get_cache(str(scratch / "cache")).list_cache_records()}
    parts: dict[str, float] = {}
    for page, seconds in pages.items():
        part = page.split("/")[1] if page.startswith("book/") else "other"
        parts[part] = round(parts.get(part, 0.0) + seconds, 1)
    result = {
        "what": "jupyter-book build -W: cold (empty jupyter-cache) and again with nothing changed",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "cold_build_seconds": round(cold, 1),
        "cached_rebuild_seconds": round(warm, 1),
        "execution_seconds_by_part": parts,
        "execution_seconds_by_page": dict(sorted(pages.items())),
    }
    out = ROOT / "benchmarks" / "results" / "book_build.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
