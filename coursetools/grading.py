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

import contextlib
import csv
import re
import shutil
import zlib
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


def gradebook_url(class_dir: Path, db_url: str | None = None) -> str:
    """The gradebook's SQLAlchemy URL: `db_url`, or the class folder's own SQLite file."""
    return db_url or f"sqlite:///{class_dir / 'gradebook.db'}"


def shown_url(db_url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing secret can be told apart, show the scheme only
        return db_url.split(":", 1)[0] + ":..."


def check_database(db_url: str) -> None:
    """Stop with a clear message, before anything is written, if the gradebook cannot be reached."""
    if db_url.startswith("sqlite:"):
        return  # nbgrader creates the file
    from sqlalchemy import create_engine, text
    try:
        engine = create_engine(db_url)
    except Exception as exc:  # a malformed URL or a driver that is not installed
        raise SystemExit(f"error: --db-url {shown_url(db_url)} is not a usable database URL ({exc}). "
                         "For PostgreSQL write postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
                         "(psycopg, the driver SQLAlchemy uses for it, is in requirements.txt).") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SystemExit(f"error: cannot reach the gradebook database {shown_url(db_url)}: {first[:300]}. "
                         "Check that the server runs, that this machine may connect to it, and the "
                         "user, password and database name (the database must exist; nbgrader "
                         "creates its tables).") from None
    finally:
        engine.dispose()


# Held by whoever registers an assignment in a shared PostgreSQL gradebook: nbgrader creates
# the tables on first use and inserts the assignment's rows after looking them up, so two
# graders registering at once (two `course grade` runs, say) would both insert.
_REGISTER_LOCK = zlib.crc32(b"course grade: register an assignment")


@contextlib.contextmanager
def _registration_lock(db_url: str):
    if not db_url.startswith("postgresql"):
        yield  # SQLite serialises writers itself; one class folder is one `course grade`
        return
    from sqlalchemy import create_engine, text
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            # Session-level advisory lock: released on unlock or when the connection drops.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _REGISTER_LOCK})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _REGISTER_LOCK})
    finally:
        engine.dispose()


def _register(root: Path, name: str, class_dir: Path, db_url: str | None = None) -> float:
    """Copy the current solution notebooks in and register them; return the assignment's points."""
    url = gradebook_url(class_dir, db_url)
    with _registration_lock(url):
        source = class_dir / "source" / name
        if source.exists():
            shutil.rmtree(source)
        shutil.copytree(root / "solutions" / name, source,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        done = nbgrader("generate_assignment", name, "--force", root=class_dir, db_url=url)
        if done.returncode != 0:
            raise RuntimeError(f"could not register {name}:\n{done.stdout}{done.stderr}")
        with Gradebook(url) as gb:
            return float(gb.find_assignment(name).max_score)


def _read_scores(class_dir: Path, name: str, student: str,
                 db_url: str | None = None) -> tuple[float, dict[str, float]]:
    with Gradebook(gradebook_url(class_dir, db_url)) as gb:
        try:
            submission = gb.find_submission(name, student)
        except MissingEntry:
            return 0.0, {}
        cells = {grade.name: float(grade.score)
                 for notebook in submission.notebooks for grade in notebook.grades}
        return float(submission.score), cells


def grade_class(root: Path, name: str, submissions: Path, class_dir: Path,
                timeout: float = 600.0, jobs: int = 2, memory_gb: float = MEMORY_GB,
                isolate: bool = True, db_url: str | None = None,
                scheduler: str | None = None) -> list[Result]:
    """Grade every submission of `name` found in `submissions`; return one Result each.

    `jobs` grading workers (pool.py) take the submissions one at a time each: a worker runs
    nbgrader's autograde in-process on a kernel forked from its warm zygote, so a submission
    costs little more than its own cells. The gradebook's short SQLite transactions tolerate
    the few concurrent writers. With `isolate` (the default) the kernels run in the bubblewrap
    sandbox; sandbox.SandboxUnavailable is raised before anything is graded if it cannot run
    here.

    `db_url` is the gradebook (default: CLASS_DIR/gradebook.db); a PostgreSQL URL lets several
    graders write at once. `scheduler` (a Dask scheduler's address) grades on that cluster's
    workers instead of `jobs` local ones (distributed.py); then `jobs` is unused.
    """
    if not (root / "solutions" / name).is_dir():
        raise SystemExit(f"error: no assignment {name!r} in {root / 'solutions'}")
    url = gradebook_url(class_dir, db_url)
    check_database(url)
    if scheduler:
        from . import distributed
        distributed.check_cluster(scheduler, url)  # each Dask worker checks its own sandbox
    elif isolate:
        sandbox.check_available()
    class_dir.mkdir(parents=True, exist_ok=True)
    expected = sorted(p.name for p in (root / "solutions" / name).glob("*.ipynb"))
    found = find_submissions(submissions, name)
    problems: dict[str, str] = {}
    to_grade = []
    for student, notebooks in found.items():
        problem = _submit(name, student, notebooks, expected, class_dir)
        if problem:
            problems[student] = problem
        else:
            to_grade.append(student)
    # The local workers start now and get ready while the assignment is registered.
    workers = [] if scheduler else [
        pool.WorkerProcess(class_dir, url, isolate, CONFIG, [root / "solutions", root / "tests"])
        for _ in range(min(max(1, jobs), len(to_grade)))]
    try:
        max_score = _register(root, name, class_dir, url)
    except BaseException:
        for worker in workers:
            worker.close()
        raise
    results = {student: Result(student, 0.0, max_score, problem) for student, problem in problems.items()}
    with tqdm(total=len(found), initial=len(results), desc=f"grading {name}", unit="submission") as progress:
        def record(student: str, reason: str) -> None:
            if reason:
                results[student] = Result(student, 0.0, max_score, reason)
            else:
                score, cells = _read_scores(class_dir, name, student, url)
                results[student] = Result(student, score, max_score, "", cells)
            progress.update()

        if scheduler and to_grade:
            distributed.grade_on_cluster(scheduler, class_dir, url, isolate,
                                         [root / "solutions", root / "tests"], name, to_grade,
                                         timeout, int(memory_gb * 2**30), record)
            to_grade = []  # all graded on the cluster: no local worker to start
        queue: Queue[str] = Queue()
        for student in to_grade:
            queue.put(student)

        def work(worker: pool.WorkerProcess) -> None:
            # One worker process per thread; it takes submissions until none are left.
            try:
                while True:
                    try:
                        student = queue.get_nowait()
                    except Empty:
                        return
                    record(student, worker.grade(name, student, timeout, int(memory_gb * 2**30)))
            finally:
                worker.close()

        with ThreadPoolExecutor(max_workers=max(1, len(workers))) as threads:
            for future in [threads.submit(work, worker) for worker in workers]:
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


def generate_feedback(class_dir: Path, name: str, db_url: str | None = None) -> dict[str, Path]:
    """Write each graded student's feedback page (HTML, hidden tests removed); return them."""
    done = nbgrader("generate_feedback", name, "--force", root=class_dir,
                    db_url=gradebook_url(class_dir, db_url))
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader generate_feedback {name} failed:\n{done.stdout}{done.stderr}")
    pages = {}
    for page in sorted((class_dir / "feedback").glob(f"*/{name}/*.html")):
        pages[page.parents[1].name] = page
    return pages
