"""Extract the reference library (llmref/) from the solution notebooks, d2l-style.

A solution notebook names its target module in ``metadata.course.library_module`` and the
lines the module starts with in ``metadata.course.library_header``; each code cell tagged
``library`` is copied there with its nbgrader solution markers removed. The solution cell
and the reference the checks compare against are therefore one text and cannot drift;
``course library --check`` (run by the tests) fails when a generated file is stale.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
TAG = "library"


def module_source(notebook_path: Path, root: Path) -> tuple[Path, str] | None:
    """The (target path, text) a solution notebook generates, or None if it exports nothing."""
    nb = nbformat.read(notebook_path, as_version=4)
    course = nb.metadata.get("course", {})
    target = course.get("library_module")
    cells = [c for c in nb.cells if c.cell_type == "code" and TAG in c.metadata.get("tags", [])]
    if not target:
        if cells:
            raise ValueError(f"{notebook_path}: cells are tagged '{TAG}' but metadata.course."
                             "library_module does not say which module they belong to")
        return None
    relative = notebook_path.resolve().relative_to(root.resolve())
    parts = [
        f"# GENERATED from {relative.as_posix()} by `course library`: do not edit.",
        "# Change the solution notebook and regenerate; tests fail while this file is stale.",
        f'"""{course.get("library_doc", "Reference implementations extracted from " + relative.stem + ".")}"""',
        course.get("library_header", "").rstrip(),
    ]
    for cell in cells:
        lines = [line for line in cell.source.splitlines() if line.strip() not in MARKERS]
        parts.append("\n\n" + "\n".join(lines).rstrip())
    text = "\n".join(p for p in parts if p) + "\n"
    return root / target, text


def generated_modules(root: Path) -> dict[Path, str]:
    modules: dict[Path, str] = {}
    for notebook in sorted((root / "solutions").glob("*/*.ipynb")):
        generated = module_source(notebook, root)
        if generated is None:
            continue
        path, text = generated
        if path in modules:
            raise ValueError(f"two solution notebooks generate {path}; give each its own module")
        modules[path] = text
    return modules


def write(root: Path) -> list[Path]:
    written = []
    for path, text in generated_modules(root).items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def stale(root: Path) -> list[Path]:
    return [path for path, text in generated_modules(root).items()
            if not path.exists() or path.read_text() != text]
