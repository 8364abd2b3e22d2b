"""Generate the learner's notebooks (notebooks/) from the solution notebooks (solutions/).

nbgrader's generate_assignment does the work, in a scratch course folder so that the
repository never holds a gradebook. `check` regenerates and compares, and scans for
solution or hidden-test lines that must never reach a learner.
"""
from __future__ import annotations

import contextlib
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import psutil

CONFIG = Path(__file__).with_name("nbgrader_config.py")
REGIONS = {
    "solution": ("### BEGIN SOLUTION", "### END SOLUTION"),
    "hidden test": ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"),
}


def assignment_names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "solutions").iterdir()
                  if p.is_dir() and any(p.glob("*.ipynb")))


_LIMIT_AND_EXEC = ("import os, resource, sys; limit = int(sys.argv[1]); "
                   "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
                   "os.execv(sys.argv[2], sys.argv[2:])")


def course_id(db_url: str | None) -> str:
    """nbgrader's course id for the gradebook at `db_url`.

    nbgrader leaves it empty by default and then never creates the course row its assignments
    point to: SQLite does not check that reference, PostgreSQL refuses the assignment. A
    database server gets the id nbgrader's Gradebook uses when given none, so that `course
    grade` and nbgrader's own tools (formgrader, export) see one course there.
    """
    return "" if not db_url or db_url.startswith("sqlite") else "default_course"


def nbgrader(*args: str, root: Path, cwd: Path | None = None, timeout: float | None = None,
             source: str = "source", release: str = "release",
             memory_bytes: int | None = None, config: Path = CONFIG,
             env: dict[str, str] | None = None, db_url: str | None = None) -> subprocess.CompletedProcess:
    """Run one nbgrader command on the course folder `root`, with the course's settings.

    `memory_bytes` caps the address space of nbgrader and of the kernel it starts (the
    limit is inherited), so a submission that allocates without bound gets a MemoryError
    in its own cell instead of exhausting the machine. `config` replaces the course's
    nbgrader config file (one that loads it, see sandbox.py); `env` is added to nbgrader's
    environment. `db_url` is the gradebook (an SQLAlchemy URL, e.g. a PostgreSQL database
    shared by several graders); None means the SQLite file `root/gradebook.db`.
    """
    command = [
        sys.executable, "-m", "nbgrader", *args,
        f"--NbGrader.config_file={config}",
        f"--CourseDirectory.root={root}",
        f"--CourseDirectory.source_directory={source}",
        f"--CourseDirectory.release_directory={release}",
        f"--CourseDirectory.db_url={db_url or 'sqlite:///' + str(root / 'gradebook.db')}",
    ]
    if course_id(db_url):
        command.append(f"--CourseDirectory.course_id={course_id(db_url)}")
    # nbgrader shells out to `alembic` and jupyter kernels by name: find them beside Python.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONHASHSEED": "0", **(env or {})}
    if memory_bytes:
        # Set the limit in a small launcher that then becomes nbgrader: preexec_fn is not
        # safe here, where several grading threads start processes at once.
        command = [sys.executable, "-c", _LIMIT_AND_EXEC, str(memory_bytes), *command]
    process = subprocess.Popen(command, cwd=cwd or root, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Kill the kernel too: jupyter starts it in a session of its own, out of our reach
        # through process groups, and an endless loop would keep a core busy for ever.
        for child in psutil.Process(process.pid).children(recursive=True) + [psutil.Process(process.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def generate(root: Path, name: str, destination: Path) -> Path:
    """Write the release version of solutions/NAME to destination/NAME and return that path."""
    with tempfile.TemporaryDirectory(prefix="course-release-") as scratch:
        scratch = Path(scratch)
        shutil.copytree(root / "solutions" / name, scratch / "source" / name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        done = nbgrader("generate_assignment", name, "--force", root=scratch)
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{done.stdout}{done.stderr}")
        target = destination / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(scratch / "release" / name, target)
    return target


def regions(source: str) -> dict[str, list[str]]:
    """The lines inside solution and hidden-test regions of one cell's source."""
    found: dict[str, list[str]] = {kind: [] for kind in REGIONS}
    for kind, (begin, end) in REGIONS.items():
        for block in re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), source, re.S):
            found[kind] += [line.strip() for line in block.splitlines() if line.strip()]
    return found


SELF_STORE = re.compile(r"^self\.(\w+) = \1$")  # `self.eps = eps`: any class has these
# `return total`: names a variable, not how it was computed (and, as a substring, it is found
# in any `return total / n` of the course's helpers)
BARE_RETURN = re.compile(r"^return \w+$")


def secret_lines(root: Path, name: str) -> dict[str, set[str]]:
    """Lines of solutions/NAME that a learner must never see, by kind.

    Left out: comment-only and very short lines (`return x` may well appear in a stub),
    constructor arguments stored on self, a bare `return name`, and lines the exercise's own text quotes on
    purpose (a hint such as `self.register_parameter("bias", None)`).
    """
    secrets: dict[str, set[str]] = {kind: set() for kind in REGIONS}
    for path in sorted((root / "solutions" / name).glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        quoted = "\n".join(c.source for c in cells if c.cell_type == "markdown")
        for cell in cells:
            for kind, lines in regions(cell.source).items():
                secrets[kind] |= {line for line in lines
                                  if len(line) >= 12 and not line.startswith("#")
                                  and not SELF_STORE.match(line) and not BARE_RETURN.match(line)
                                  and line not in quoted}
    return secrets


def notebook_text(path: Path) -> str:
    """A notebook as a reader sees it: its raw JSON (escaped) and its cells' text (unescaped)."""
    raw = path.read_text()
    nb = nbformat.reads(raw, as_version=4)
    return raw + "\n" + "\n".join(cell.source for cell in nb.cells)


def leaks(text: str, secrets: dict[str, set[str]]) -> list[str]:
    """Each secret line that appears in `text` (a released notebook or a built HTML page)."""
    return [f"{kind} line {line!r}" for kind, lines in secrets.items()
            for line in sorted(lines) if line in text]


def check(root: Path, names: list[str]) -> list[str]:
    """Problems with notebooks/: drift from a fresh generation, or leaked lines."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="course-check-") as scratch:
        for name in names:
            fresh = generate(root, name, Path(scratch))
            committed = root / "notebooks" / name
            if not committed.is_dir():
                problems.append(f"notebooks/{name} is missing: run `course release {name}`")
                continue
            comparison = filecmp.dircmp(fresh, committed, ignore=[".ipynb_checkpoints", "__pycache__"])
            differing = _differences(comparison)
            if differing:
                problems.append(f"notebooks/{name} differs from a fresh generation ({', '.join(differing)}): "
                                f"edit solutions/{name} and run `course release {name}`")
    # Any released notebook may give away any exercise, e.g. a helper that is another's answer.
    every_secret = {name: secret_lines(root, name) for name in assignment_names(root)}
    for path in sorted((root / "notebooks").rglob("*.ipynb")):
        text = notebook_text(path)
        for name, secrets in every_secret.items():
            for leak in leaks(text, secrets):
                problems.append(f"{path.relative_to(root)} reveals {name}'s {leak}")
    return problems


def _differences(comparison: filecmp.dircmp, prefix: str = "") -> list[str]:
    out = [f"{prefix}{n} only in fresh" for n in comparison.left_only]
    out += [f"{prefix}{n} only in notebooks/" for n in comparison.right_only]
    # dircmp compares stat signatures first; compare contents to be sure.
    out += [f"{prefix}{n}" for n in comparison.common_files
            if not filecmp.cmp(Path(comparison.left) / n, Path(comparison.right) / n, shallow=False)]
    for sub, nested in comparison.subdirs.items():
        out += _differences(nested, f"{prefix}{sub}/")
    return out
