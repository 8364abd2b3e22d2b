"""Autograde a whole class with nbgrader, one submission at a time, each in its own process.

The class folder is an ordinary nbgrader course (gradebook.db, source/, submitted/,
autograded/), so every nbgrader command still works on it. What this module adds:
- solutions/NAME is copied to source/ and registered (generate_assignment) before grading,
  so the gradebook always holds the checksums of the current test cells;
- each submission is graded by its own `nbgrader autograde --student` process under a time
  limit, so a hanging or crashing submission costs only its own grade;
- the kernel that runs the learner's code is confined by bubblewrap (sandbox.py): it sees
  neither the gradebook, the source and other students' folders, nor solutions/, has no
  network, and its writes stay in the sandbox's memory;
- a zero has a reason the learner can act on (the cell that crashed or ran out of time);
- a submission that is not a readable notebook scores 0 with the reason, and the run goes on;
- scores are read back from the gradebook and written to one CSV, with reasons.
"""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from tqdm.auto import tqdm

from . import sandbox
from .release import CONFIG, nbgrader

# Address space per grading process (nbgrader, and the kernel that runs the submission).
# PyTorch maps about 2 GiB of libraries and arenas; the course's exercises need far less
# than the rest.
MEMORY_GB = 6.0
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Result:
    student: str
    score: float
    max_score: float
    reason: str = ""  # empty when nbgrader graded the submission normally
    cells: dict[str, float] = field(default_factory=dict)  # graded cell id -> points earned


def find_submissions(folder: Path, name: str) -> dict[str, list[Path]]:
    """Map student id -> submitted notebooks, from either accepted layout."""
    if not folder.is_dir():
        raise SystemExit(f"error: submissions folder {folder} does not exist")
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix == ".ipynb":
            found[entry.stem] = [entry]
        elif entry.is_dir() and not entry.name.startswith("."):
            inner = entry / name if (entry / name).is_dir() else entry
            found[entry.name] = sorted(inner.glob("*.ipynb"))
    return found


def _unreadable(path: Path) -> str:
    """Why a file is not a notebook nbgrader can grade, or '' if it is one."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # any parse or schema error means the same to the instructor
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{path.name} is not a valid notebook ({first_line[:160]})"
    return ""


def _register(root: Path, name: str, class_dir: Path) -> float:
    """Copy the current solution notebooks in and register them; return the assignment's points."""
    source = class_dir / "source" / name
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(root / "solutions" / name, source,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    done = nbgrader("generate_assignment", name, "--force", root=class_dir)
    if done.returncode != 0:
        raise RuntimeError(f"could not register {name}:\n{done.stdout}{done.stderr}")
    with Gradebook(f"sqlite:///{class_dir / 'gradebook.db'}") as gb:
        return float(gb.find_assignment(name).max_score)


def _autograde(root: Path, name: str, student: str, class_dir: Path, timeout: float,
               memory_bytes: int, isolate: bool, retry: bool = True) -> str:
    """Run nbgrader autograde for one student; return '' or the reason it failed."""
    run_dir = Path(tempfile.mkdtemp(prefix="course-grade-"))
    try:
        box = sandbox.prepare(run_dir, class_dir, student, name, CONFIG,
                              hidden=[root / "solutions"], isolate=isolate)
        try:
            done = nbgrader("autograde", name, "--student", student, "--force", root=class_dir,
                            timeout=timeout, memory_bytes=memory_bytes, config=box.config,
                            env=box.env)
        except subprocess.TimeoutExpired:
            where = sandbox.running_cell(box.progress)
            return (f"your notebook ran longer than {timeout:g} s"
                    + (f" in {where}" if where else "") + " and was stopped")
        output = done.stdout + done.stderr
        if done.returncode != 0 and "database is locked" in output and retry:
            return _autograde(root, name, student, class_dir, timeout, memory_bytes, isolate, retry=False)
        if done.returncode != 0:
            explained = sandbox.explain_failure(output, box.progress, memory_bytes / 2**30)
            if explained:
                return explained
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"nbgrader autograde failed: {tail[0][:200]}"
        return ""
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _read_scores(class_dir: Path, name: str, student: str) -> tuple[float, dict[str, float]]:
    with Gradebook(f"sqlite:///{class_dir / 'gradebook.db'}") as gb:
        try:
            submission = gb.find_submission(name, student)
        except MissingEntry:
            return 0.0, {}
        cells = {grade.name: float(grade.score)
                 for notebook in submission.notebooks for grade in notebook.grades}
        return float(submission.score), cells


def grade_class(root: Path, name: str, submissions: Path, class_dir: Path,
                timeout: float = 600.0, jobs: int = 2, memory_gb: float = MEMORY_GB,
                isolate: bool = True) -> list[Result]:
    """Grade every submission of `name` found in `submissions`; return one Result each.

    `jobs` submissions are graded at once, each by its own nbgrader process: grading is
    dominated by kernel start-up and the learner's code, not by the gradebook, whose short
    SQLite transactions tolerate a few concurrent writers. With `isolate` (the default)
    each learner's kernel runs in the bubblewrap sandbox; sandbox.SandboxUnavailable is
    raised before anything is graded if it cannot run here.
    """
    if not (root / "solutions" / name).is_dir():
        raise SystemExit(f"error: no assignment {name!r} in {root / 'solutions'}")
    if isolate:
        sandbox.check_available()
    class_dir.mkdir(parents=True, exist_ok=True)
    max_score = _register(root, name, class_dir)
    expected = sorted(p.name for p in (root / "solutions" / name).glob("*.ipynb"))
    found = find_submissions(submissions, name)
    results: dict[str, Result] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(found), desc=f"grading {name}", unit="submission") as progress:
        futures = {pool.submit(_grade_one, root, name, student, notebooks, expected, class_dir,
                               max_score, timeout, int(memory_gb * 2**30), isolate): student
                   for student, notebooks in found.items()}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            progress.update()
    return [results[student] for student in found]


def _grade_one(root, name, student, notebooks, expected, class_dir, max_score, timeout, memory_bytes,
               isolate) -> Result:
    def zero(reason: str) -> Result:
        return Result(student, 0.0, max_score, reason)

    if not STUDENT_ID.match(student):
        return zero("student id may only hold letters, digits, '_', '.' and '-'")
    if not notebooks:
        return zero("no notebook submitted")
    for notebook in notebooks:
        problem = _unreadable(notebook)
        if problem:
            return zero(problem)
    # Read before clearing the target: the submissions may be this very folder (a regrade).
    # One expected notebook and one submitted under another name: accept it as that notebook.
    renamed = len(expected) == 1 and len(notebooks) == 1 and notebooks[0].name != expected[0]
    contents = {(expected[0] if renamed else nb.name): nb.read_bytes() for nb in notebooks}
    target = class_dir / "submitted" / student / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for filename, data in contents.items():
        (target / filename).write_bytes(data)
    reason = _autograde(root, name, student, class_dir, timeout, memory_bytes, isolate)
    if reason:
        return zero(reason)
    score, cells = _read_scores(class_dir, name, student)
    return Result(student, score, max_score, "", cells)


def write_csv(results: list[Result], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cell_ids = sorted({cell for r in results for cell in r.cells})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "score", "max_score", *cell_ids, "reason"])
        for r in results:
            writer.writerow([r.student, f"{r.score:g}", f"{r.max_score:g}",
                             *(f"{r.cells.get(c, 0):g}" for c in cell_ids), r.reason])
    return path


def generate_feedback(class_dir: Path, name: str) -> dict[str, Path]:
    """Write each graded student's feedback page (HTML, hidden tests removed); return them."""
    done = nbgrader("generate_feedback", name, "--force", root=class_dir)
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader generate_feedback {name} failed:\n{done.stdout}{done.stderr}")
    pages = {}
    for page in sorted((class_dir / "feedback").glob(f"*/{name}/*.html")):
        pages[page.parents[1].name] = page
    return pages
