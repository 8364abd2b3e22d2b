"""Grading spread over several machines: `course grade ... --scheduler tcp://HOST:8786`.

The machine that runs `course grade` registers the assignment and lays out submitted/ as
usual, then hands each submission to a Dask cluster as one task. Every Dask worker process
keeps one grading worker (pool.Worker: nbgrader in-process, a warm sandboxed zygote), made
on its first task and reused for the next, so start-up costs are paid once per process as
in a local run. Scores are read back from the gradebook by `course grade` itself.

What the cluster must share:
- the class folder, on a filesystem every machine mounts at the same path (workers read
  submitted/ and source/ and write autograded/ there);
- the gradebook: a PostgreSQL database (--db-url). SQLite over a network filesystem loses
  or corrupts writes, so it is refused when a worker runs on another machine; it is fine
  for a LocalCluster, where every process is on this one;
- the course, installed at the same version on every machine (`make install`), because the
  checks the test cells import come from each worker's own installation.

Start the workers with one thread each (`dask worker --nthreads 1 --nworkers N`): a worker
process grades one submission at a time, and extra threads only wait for it.
"""
from __future__ import annotations

import atexit
import contextlib
import ipaddress
import socket
import sys
import threading
import uuid
from pathlib import Path
from typing import Callable

# How long `course grade` tries to reach the scheduler, then waits for a first worker to join.
CONNECT_TIMEOUT_S = 30.0
WAIT_FOR_WORKERS_S = 60.0


class ClusterError(RuntimeError):
    """The cluster cannot grade this class as set up; the message says what to change."""


# --- in each Dask worker process ------------------------------------------------------------

_LOCK = threading.Lock()  # one submission at a time per process, whatever --nthreads says
_SETUP: tuple | None = None  # what the process's grading worker was made for


def _close_grader() -> None:
    global _SETUP
    pool = sys.modules.get(f"{__package__}.pool")  # not imported: no grading worker to close
    if pool is not None and pool._WORKER is not None:
        pool._WORKER.close()
        pool._WORKER = None
    _SETUP = None


atexit.register(_close_grader)  # a worker shutting down takes its zygote and kernel folder along


def _grader(setup: tuple) -> None:
    """Make this process's grading worker for `setup`, unless it has it already."""
    global _SETUP
    from . import pool
    from .release import CONFIG
    if pool._WORKER is not None and _SETUP == setup:
        return
    _close_grader()  # made for another class or gradebook (an earlier run on this cluster)
    class_dir, db_url, isolate, hidden = setup
    # The same Worker as pool.start_worker makes, without its PR_SET_PDEATHSIG: here the parent
    # is Dask's nanny, whose thread that started this process may end long before the nanny.
    own_course = Path(__file__).resolve().parents[1]
    hidden = sorted({*hidden, str(own_course / "solutions"), str(own_course / "tests")})
    try:
        pool._WORKER = pool.Worker(Path(class_dir), db_url, isolate, CONFIG, [Path(h) for h in hidden])
    except Exception as exc:
        raise ClusterError(f"the grading worker on {socket.gethostname()} could not start: {exc}") from None
    _SETUP = setup


def grade_task(setup: tuple, name: str, student: str, timeout: float, memory_bytes: int) -> str:
    """One Dask task: grade one submission already in submitted/; '' or why it has no grades."""
    from . import pool
    class_dir = Path(setup[0])
    if not (class_dir / "submitted" / student / name).is_dir():
        raise ClusterError(
            f"the Dask worker on {socket.gethostname()} does not see {class_dir / 'submitted' / student / name}: "
            f"put the class folder on a filesystem every machine mounts at the same path ({class_dir})")
    with _LOCK:
        _grader(setup)
        return pool.grade_in_worker(name, student, timeout, memory_bytes)


def release_grader() -> bool:
    """Stop this process's grading worker (its zygote holds torch in memory), unless it is busy."""
    if not _LOCK.acquire(blocking=False):
        return False  # another run on the cluster is grading with it
    try:
        _close_grader()
        return True
    finally:
        _LOCK.release()


# --- in `course grade` ------------------------------------------------------------------------

def _client(scheduler: str):
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--scheduler needs Dask distributed: `.venv/bin/pip install -r requirements.txt "
                           "-c constraints.txt` (it is in requirements.txt)") from None
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({exc}). Start it with "
                           "`dask scheduler` and pass its address (tcp://HOST:8786)") from None


def _local_addresses() -> set[str]:
    import psutil
    found = {"localhost", socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        found |= {a.address.split("%")[0] for a in addresses}
    return found


def _is_local(host: str, local: set[str]) -> bool:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass  # a host name
    return host in local


def other_machines(worker_addresses: list[str]) -> list[str]:
    """The hosts among Dask worker addresses (tcp://HOST:PORT) that are not this machine."""
    from distributed.comm import get_address_host
    local = _local_addresses()
    return sorted({host for host in map(get_address_host, worker_addresses)
                   if not _is_local(host, local)})


def check_cluster(scheduler: str, db_url: str) -> None:
    """Stop before anything is graded if the cluster has no workers, or if workers on other
    machines would share a SQLite gradebook."""
    from .grading import shown_url
    with _client(scheduler) as client:
        try:
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except TimeoutError:
            raise ClusterError(f"no Dask worker joined the scheduler at {scheduler} within "
                               f"{WAIT_FOR_WORKERS_S:g} s: start `dask worker {scheduler} --nthreads 1` "
                               "on each grading machine") from None
        remote = other_machines(list(client.scheduler_info(n_workers=-1)["workers"]))
    if remote and db_url.startswith("sqlite"):
        raise ClusterError(
            f"the gradebook is SQLite ({shown_url(db_url)}) but Dask workers run on other machines "
            f"({', '.join(remote)}): SQLite on a shared filesystem loses writes. Pass a PostgreSQL "
            "gradebook every machine can reach, e.g. --db-url postgresql://USER:PASSWORD@HOST/gradebook "
            "(or set COURSE_DB_URL)")


def grade_on_cluster(scheduler: str, class_dir: Path, db_url: str, isolate: bool, hidden: list[Path],
                     name: str, students: list[str], timeout: float, memory_bytes: int,
                     done: Callable[[str, str], None]) -> None:
    """Grade each student's submission (already in submitted/) on the cluster; call
    done(student, reason) as each one finishes, reason '' when nbgrader graded it."""
    from distributed import as_completed
    setup = (str(class_dir), db_url, isolate, tuple(str(h) for h in hidden))
    run = uuid.uuid4().hex[:12]  # task keys must not collide with another run's on the cluster
    with _client(scheduler) as client:
        futures = {client.submit(grade_task, setup, name, student, timeout, memory_bytes,
                                 key=f"grade-{name}-{student}-{run}", pure=False): student
                   for student in students}
        try:
            for future in as_completed(futures, loop=client.loop):  # this client, not a default one
                student = futures[future]
                try:
                    reason = future.result()
                except ClusterError:
                    raise  # the cluster is set up wrongly: every submission would fail alike
                except Exception as exc:  # this submission's trouble (a worker died under it, say)
                    reason = f"grading failed on the cluster: {type(exc).__name__}: {str(exc)[:300]}"
                done(student, reason)
        finally:
            client.cancel(list(futures))
            # Free the zygotes between runs; a worker busy with another run keeps its own.
            with contextlib.suppress(Exception):  # a worker gone by now has nothing to free
                client.run(release_grader)
