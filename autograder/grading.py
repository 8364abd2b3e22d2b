"""Autograde a whole class with nbgrader, each submission on a fresh, sandboxed kernel.

The class folder is an ordinary nbgrader course (gradebook.db, source/, submitted/,
autograded/), so every nbgrader command still works on it. What this module adds:
- solutions/NAME is copied to source/ and registered (generate_assignment) before grading,
  so the gradebook always holds the checksums of the current test cells;
- grading workers (pool.py) run nbgrader's autograde in-process, one submission at a time
  each, on a single-use kernel forked from a warm zygote, under a time limit, so a hanging or
  crashing submission costs only its own grade and start-up costs are paid once per worker;
- the kernel that runs the learner's code is confined (sandbox.py, zygote.py): it sees
  neither the gradebook, the source and other students' folders, nor solutions/, has no
  network, and its writes stay in its own memory;
- a zero has a reason the learner can act on (the cell that crashed or ran out of time);
- a submission that is not a readable notebook scores 0 with the reason, and the run goes on;
- scores are read back from the gradebook and written to one CSV, with reasons.
"""
from __future__ import annotations

import csv
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, Queue
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from tqdm.auto import tqdm

from . import pool, sandbox
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

    `jobs` grading workers (pool.py) take the submissions one at a time each: a worker runs
    nbgrader's autograde in-process on a kernel forked from its warm zygote, so a submission
    costs little more than its own cells. The gradebook's short SQLite transactions tolerate
    the few concurrent writers. With `isolate` (the default) the kernels run in the bubblewrap
    sandbox; sandbox.SandboxUnavailable is raised before anything is graded if it cannot run
    here.
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
    to_grade = []
    for student, notebooks in found.items():
        problem = _submit(name, student, notebooks, expected, class_dir)
        if problem:
            results[student] = Result(student, 0.0, max_score, problem)
        else:
            to_grade.append(student)
    with tqdm(total=len(found), initial=len(results), desc=f"grading {name}", unit="submission") as progress:
        queue: Queue[str] = Queue()
        for student in to_grade:
            queue.put(student)

        def work() -> None:
            # One worker process per thread; it takes submissions until none are left.
            worker = pool.WorkerProcess(class_dir, f"sqlite:///{class_dir / 'gradebook.db'}", isolate,
                                        CONFIG, [root / "solutions", root / "tests"])
            try:
                while True:
                    try:
                        student = queue.get_nowait()
                    except Empty:
                        return
                    reason = worker.grade(name, student, timeout, int(memory_gb * 2**30))
                    if reason:
                        results[student] = Result(student, 0.0, max_score, reason)
                    else:
                        score, cells = _read_scores(class_dir, name, student)
                        results[student] = Result(student, score, max_score, "", cells)
                    progress.update()
            finally:
                worker.close()

        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(to_grade)))) as threads:
            for future in [threads.submit(work) for _ in range(max(1, min(jobs, len(to_grade))))]:
                future.result()  # a worker that cannot start stops the run, with its reason
    return [results[student] for student in found]


def _submit(name: str, student: str, notebooks: list[Path], expected: list[str], class_dir: Path) -> str:
    """Put one student's notebooks in submitted/; return '' or why they cannot be graded."""
    if not STUDENT_ID.match(student):
        return "student id may only hold letters, digits, '_', '.' and '-'"
    if not notebooks:
        return "no notebook submitted"
    for notebook in notebooks:
        problem = _unreadable(notebook)
        if problem:
            return problem
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
    return ""


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
