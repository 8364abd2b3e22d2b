"""Helpers shared by the exercise tests: load notebooks, swap in code, run test cells in-process."""
from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from coursetools.selfcheck import with_cells  # noqa: F401 (tests build notebooks with it)

ROOT = Path(__file__).resolve().parents[1]


def solution_path(name: str) -> Path:
    return ROOT / "solutions" / name / f"{name}.ipynb"


def release_path(name: str) -> Path:
    return ROOT / "notebooks" / name / f"{name}.ipynb"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def graded_cells(nb) -> dict[str, int]:
    """grade_id -> points of every graded test cell."""
    return {grade_id(c): c.metadata["nbgrader"]["points"] for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade")}


@dataclass
class Outcome:
    passed: dict[str, bool]      # graded cell -> passed
    messages: dict[str, str]     # graded cell -> failure message
    errors: dict[str, BaseException] = field(default_factory=dict)  # graded cell -> what it raised


def run_in_process(nb) -> Outcome:
    """Run a notebook's code cells in one namespace, like a kernel would, and record which
    graded cells raise. Fast enough to run every known mistake on every check."""
    namespace: dict = {"__name__": "__main__"}
    passed, messages, errors = {}, {}, {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        try:
            with redirect_stdout(io.StringIO()):
                exec(compile(cell.source, f"<cell {grade_id(cell)}>", "exec"), namespace)
        except Exception as exc:  # a failing cell: recorded, and the next cells still run
            if meta.get("grade"):
                passed[grade_id(cell)] = False
                messages[grade_id(cell)] = f"{type(exc).__name__}: {exc}"
                errors[grade_id(cell)] = exc
            elif meta.get("locked"):  # set-up cells must run, whatever the learner wrote
                raise
            # solution and scratch cells ("try it") may fail on wrong code, as in a kernel
        else:
            if meta.get("grade"):
                passed[grade_id(cell)] = True
    return Outcome(passed, messages, errors)


class Listener:
    """A TCP service on the host's 127.0.0.1 that counts who connects: no grading kernel may."""

    def __init__(self):
        import socket
        import threading
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            client.close()
