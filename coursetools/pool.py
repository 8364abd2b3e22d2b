"""Grading workers: long-lived trusted processes that run nbgrader's autograde in-process, on
kernels forked from a warm zygote (zygote.py) instead of started from scratch.

Plain `nbgrader autograde` pays, for every submission, a new Python, nbgrader's imports, the
gradebook's start-up, a new kernel and torch's import in it: seconds of CPU before the first
cell runs. A worker pays its own imports once; each kernel is a fork of a process that has
imported torch already, so a submission costs little more than its own cells. The grading
itself is nbgrader's, unchanged: the same preprocessors restore locked cells from the
gradebook, execute the notebook through the Jupyter protocol, and write the scores; only the
kernel manager is swapped for one that asks the zygote for a kernel (PooledKernelManager).

A worker never runs a learner's code: that happens only in the forked kernels, inside the
zygote's sandbox, each in namespaces of its own. For a judged assignment (judge.py) the
worker runs the test cells itself (CourseExecute.async_execute_cell), asking the kernel only
for what the learner's functions return.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.utils import run_sync
from nbclient.exceptions import DeadKernelError
from nbgrader.preprocessors import Execute

from . import judge, sandbox, shortcut_scan
from .release import course_id

# The worker process's own state: its zygote, the kernel it is grading with, the cell that runs.
_WORKER: "Worker | None" = None


class ZygoteDied(RuntimeError):
    """The zygote stopped answering; the worker starts a new one."""


class Zygote:
    """The client of one zygote process (see zygote.py for its protocol)."""

    def __init__(self, pool_dir: Path, isolate: bool, hidden: list[Path]):
        self.pool_dir = pool_dir
        self.log = pool_dir / "zygote.log"
        environment = sandbox.kernel_environment()
        if isolate:
            argv = sandbox.zygote_argv(sandbox.check_available(), pool_dir, sandbox.readable_paths(),
                                       hidden, environment)
            env = None  # bwrap clears it and sets the kernel's own
        else:
            argv = [sys.executable, "-m", "coursetools.zygote", "plain"]
            env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")},
                   **environment}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log, text=True, bufsize=1, env=env,
                                            start_new_session=True)
        self.lock = threading.Lock()
        ready = self.process.stdout.readline()
        if not ready.strip():
            self.process.kill()
            raise RuntimeError(f"the grading kernels' zygote did not start:\n{self.log.read_text()[-2000:]}")

    def request(self, **message) -> dict:
        with self.lock:
            try:
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.flush()
                line = self.process.stdout.readline()
            except (BrokenPipeError, OSError, ValueError) as exc:
                raise ZygoteDied(str(exc)) from exc
        if not line:
            raise ZygoteDied(self.log.read_text()[-1000:])
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"zygote: {reply['error']}")
        return reply

    def spawn(self, slot: Path, argv: list[str], memory_bytes: int, covers: dict | None = None) -> "ForkedKernel":
        pid = self.request(op="spawn", slot=str(slot), argv=argv, memory=memory_bytes,
                           covers=covers or {})["pid"]
        return ForkedKernel(self, pid, slot)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class ForkedKernel:
    """What jupyter_client expects of a kernel's Popen, for a process the zygote forked."""
    stdin = stdout = stderr = None

    def __init__(self, zygote: Zygote, pid: int, slot: Path):
        self.zygote, self.pid, self.slot = zygote, pid, slot
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.zygote.request(op="poll", pid=self.pid)["status"]
            except ZygoteDied:
                self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                self.zygote.request(op="signal", pid=self.pid, signal=int(signum))
            except ZygoteDied:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def log(self) -> str:
        try:
            return (self.slot / "kernel.log").read_text(errors="replace")[-20000:]
        except OSError:
            return ""


class PoolProvisioner(LocalProvisioner):
    """Launches the kernel as a fork of the worker's zygote instead of a new process."""

    async def launch_kernel(self, cmd: list[str], **kwargs):
        worker = _current()
        # The kernelspec's command is `python -m ipykernel_launcher ARGS`; the fork needs ARGS.
        args = cmd[cmd.index("ipykernel_launcher") + 1:] if "ipykernel_launcher" in cmd else cmd[1:]
        self.process = worker.start_kernel(self.parent.slot, args)
        self.pid, self.pgid = self.process.pid, None
        self.cwd = kwargs.get("cwd")
        return self.connection_info


class PooledKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel comes from the zygote and talks over Unix sockets in a
    folder of its own (the only part of the pool folder its kernel can see)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.slot = _current().new_slot()
        self.transport = "ipc"
        self.ip = str(self.slot / "ipc")
        self.connection_file = str(self.slot / "kernel.json")

    async def _async_pre_start_kernel(self, **kw):
        self.kernel_id = self.kernel_id or str(uuid.uuid4())
        if self.provisioner is None:
            self.provisioner = PoolProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec,
                                               parent=self)
        return await super()._async_pre_start_kernel(**kw)


class CourseExecute(Execute):
    """nbgrader's Execute, on pooled kernels, recording which cell runs (for the reasons).
    The test cells of a judged assignment run here, in the grader (judge.py)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("kernel_manager_class", PooledKernelManager)
        super().__init__(**kwargs)
        self.on_cell_start = _record_cell
        self.judge: judge.NotebookJudge | None = None

    def preprocess(self, nb, resources=None, km=None):
        self.judge = judge.judge_for(resources, nb.cells, self.given_cells(resources))
        try:
            return super().preprocess(nb, resources, km)
        finally:
            if self.judge is not None:
                self.judge.close()
            self.judge = None

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if self.judge is None or not judge.is_test_cell(cell):
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        _record_cell(cell, cell_index)
        try:
            await self.judge.run(cell, self.kc, self.km.is_alive, Path(self.km.connection_file).parent)
        except judge.KernelGone as gone:
            raise DeadKernelError(str(gone)) from gone
        return cell

    execute_cell = run_sync(async_execute_cell)  # nbclient binds its own at class level

    # The class folder (set by the Worker): its source/ holds the assignment's own notebooks.
    class_dir: Path | None = None

    def given_cells(self, resources) -> frozenset[str]:
        """The sources of the code cells the assignment gives, from its source notebook."""
        info = (resources or {}).get("nbgrader") or {}
        if self.class_dir is None or not info.get("assignment") or not info.get("notebook"):
            return frozenset()
        path = self.class_dir / "source" / info["assignment"] / f"{info['notebook']}.ipynb"
        try:
            return _given_cells(str(path), path.stat().st_mtime_ns)
        except (OSError, ValueError):
            return frozenset()


@functools.lru_cache(maxsize=8)
def _given_cells(path: str, mtime_ns: int) -> frozenset[str]:
    """Read once per worker and assignment (keyed by the file's time, so an edited source
    notebook is read again), not once per submission."""
    import nbformat
    return shortcut_scan.given_cells(nbformat.read(path, as_version=4).cells)


def _record_cell(cell, cell_index, **_) -> None:
    if cell.cell_type == "code" and cell.source.strip():
        nbgrader = cell.metadata.get("nbgrader", {})
        _current().running = {"cell": cell_index + 1, "grade_id": nbgrader.get("grade_id", ""),
                              "test": bool(nbgrader.get("grade")),
                              "first_line": cell.source.strip().splitlines()[0][:80]}


def _current() -> "Worker":
    if _WORKER is None:
        raise RuntimeError("pooled kernels are only available inside a grading worker")
    return _WORKER


class Worker:
    """One grading process: its nbgrader, its zygote, one submission at a time."""

    def __init__(self, class_dir: Path, db_url: str, isolate: bool, config_file: Path, hidden: list[Path]):
        from nbgrader.apps.api import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory
        from traitlets.config.loader import PyFileConfigLoader

        self.isolate, self.hidden = isolate, [class_dir, *hidden]
        CourseExecute.class_dir = class_dir
        self.pool_dir = Path(tempfile.mkdtemp(prefix="course-kernels-"))
        self.zygote = Zygote(self.pool_dir, isolate, self.hidden)
        config = PyFileConfigLoader(config_file.name, path=str(config_file.parent)).load_config()
        config.Autograde.autograde_preprocessors = [
            CourseExecute, "nbgrader.preprocessors.IgnorePattern",
            "nbconvert.preprocessors.ClearMetadataPreprocessor", "nbgrader.preprocessors.LimitOutput",
            "nbgrader.preprocessors.SaveAutoGrades", "nbgrader.preprocessors.AssignLatePenalties",
            "nbgrader.preprocessors.CheckCellMetadata"]
        # The kernel is single-use: no graceful shutdown to wait for.
        config.Execute.shutdown_kernel = "immediate"
        coursedir = CourseDirectory(config=config, root=str(class_dir), db_url=db_url,
                                    course_id=course_id(db_url))
        self.api = NbGraderAPI(coursedir=coursedir, config=config)
        self.kernel: ForkedKernel | None = None
        self.assignment = ""
        self.running: dict = {}
        self.memory_bytes = 0
        self._slots = 0

    def new_slot(self) -> Path:
        self._slots += 1
        slot = self.pool_dir / f"k{self._slots}"
        slot.mkdir()
        return slot

    def start_kernel(self, slot: Path, args: list[str]) -> ForkedKernel:
        covers = {}
        if self.isolate and self.assignment in judge.JUDGED:
            covers = sandbox.judged_kernel_covers(judge.KERNEL_KEEPS.get(self.assignment, ()))
        try:
            self.kernel = self.zygote.spawn(slot, args, self.memory_bytes, covers)
        except ZygoteDied:
            self.zygote.close()
            self.zygote = Zygote(self.pool_dir, self.isolate, self.hidden)
            self.kernel = self.zygote.spawn(slot, args, self.memory_bytes, covers)
        return self.kernel

    def grade(self, name: str, student: str, timeout: float, memory_bytes: int) -> str:
        """Autograde one submission already in submitted/; return '' or why it has no grades."""
        self.kernel, self.running, self.memory_bytes = None, {}, memory_bytes
        self.assignment = name
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            if self.kernel is not None:
                self.kernel.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            result = self.api.autograde(name, student, force=True, create=True)
        finally:
            timer.cancel()
            kernel_log = self.kernel.log() if self.kernel else ""
            if self.kernel is not None:
                self.kernel.kill()
                self.kernel.wait(10)
            for slot in self.pool_dir.glob("k*"):
                shutil.rmtree(slot, ignore_errors=True)
        where = sandbox.describe_cell(self.running)
        if expired.is_set():
            return (f"your notebook ran longer than {timeout:g} s"
                    + (f" in {where}" if where else "") + " and was stopped")
        if result["success"]:
            return ""
        output = "\n".join([result.get("log") or "", result.get("error") or "", kernel_log])
        if "database is locked" in output:
            return "database is locked"
        explained = (sandbox.explain_failure(output, self.running, memory_bytes / 2**30)
                     or refusal(output))
        if explained:
            return explained
        lines = [line for line in (result.get("error") or result.get("log") or "").splitlines() if line.strip()]
        return f"nbgrader autograde failed: {(lines[-1] if lines else 'no output')[:200]}"

    def close(self) -> None:
        self.zygote.close()
        shutil.rmtree(self.pool_dir, ignore_errors=True)


# nbgrader refuses a notebook whose cell ids it cannot match with the assignment's; its log
# says so in words meant for the instructor. What the learner can do about it:
REFUSALS = (
    ("exists multiple times",
     "a cell of the assignment appears twice in your notebook (a copied cell keeps its hidden "
     "id): delete the copy, or start again from the released notebook and paste your code in"),
    ("failed to validate",
     "the hidden ids of your notebook's cells were changed, or it is another assignment's "
     "notebook: start again from this assignment's released notebook and paste your code in"),
    ("nbgrader update",
     "the hidden ids of your notebook's cells were changed, or it is another assignment's "
     "notebook: start again from this assignment's released notebook and paste your code in"),
)


def refusal(output: str) -> str:
    """Why nbgrader refused to grade a notebook, for the learner, or ''."""
    for sign, reason in REFUSALS:
        if sign in output:
            return f"your notebook could not be graded: {reason}"
    return ""


def start_worker(class_dir: str, db_url: str, isolate: bool, config_file: str, hidden: list[str]) -> None:
    """This process becomes a grading worker."""
    global _WORKER
    # A worker outliving `course grade` (killed, say) would hold a zygote for nothing.
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    # The checks of judged assignments run here, beside one kernel per core: one thread each
    # (a pool of threads per worker would only fight the kernels for the cores).
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    _WORKER = Worker(Path(class_dir), db_url, isolate, Path(config_file), [Path(h) for h in hidden])


def grade_in_worker(name: str, student: str, timeout: float, memory_bytes: int) -> str:
    """Grade one submission in this worker; '' or the reason it has no grades."""
    reason = _current().grade(name, student, timeout, memory_bytes)
    if reason == "database is locked":  # another worker's write: SQLite asks us to try again
        time.sleep(0.5)
        reason = _current().grade(name, student, timeout, memory_bytes)
    return reason if reason != "database is locked" else "the gradebook stayed locked; grade again"


class WorkerProcess:
    """The grader's handle on one worker: `python -m coursetools.pool`, one JSON line per
    submission each way. A plain subprocess rather than multiprocessing, so that grading
    works from any caller, an unguarded script or a notebook included."""

    def __init__(self, class_dir: Path, db_url: str, isolate: bool, config_file: Path,
                 hidden: list[Path]):
        setup = {"class_dir": str(class_dir), "db_url": db_url, "isolate": isolate,
                 "config_file": str(config_file), "hidden": [str(h) for h in hidden]}
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([sys.executable, "-m", "coursetools.pool"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        # Not waiting for its answer: the worker imports nbgrader and warms its zygote while
        # the caller registers the assignment.
        self._started = self._write(setup)

    def _write(self, message: dict) -> bool:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def _read(self) -> dict:
        try:
            line = self.process.stdout.readline()
        except OSError:
            line = ""
        if not line:
            self.stderr.seek(0)
            raise RuntimeError(f"a grading worker stopped: {self.stderr.read()[-3000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def grade(self, name: str, student: str, timeout: float, memory_bytes: int) -> str:
        if self._started is not None:
            self._started = None
            self._read()  # the worker's "ready", or why it could not start
        self._write({"name": name, "student": student, "timeout": timeout, "memory_bytes": memory_bytes})
        return self._read()["reason"]

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.stderr.close()


def _serve() -> None:
    # Replies go to the real stdout; anything else printed here goes to stderr.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    requests = sys.stdin
    setup = json.loads(requests.readline())
    try:
        start_worker(**setup)
    except Exception as exc:
        replies.write(json.dumps({"error": f"the grading worker could not start: {exc}"}) + "\n")
        return
    replies.write(json.dumps({"ready": True}) + "\n")
    try:
        for line in requests:
            request = json.loads(line)
            try:
                reply = {"reason": grade_in_worker(**request)}
            except Exception as exc:  # this submission's trouble, reported; the worker goes on
                reply = {"reason": f"grading failed: {type(exc).__name__}: {str(exc)[:300]}"}
            replies.write(json.dumps(reply) + "\n")
    finally:
        _current().close()


if __name__ == "__main__":
    _serve()
