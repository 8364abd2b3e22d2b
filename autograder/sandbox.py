"""Run the learner's notebook kernel in a bubblewrap sandbox while nbgrader grades it.

nbgrader itself is trusted: it reads the gradebook, executes the notebook through a Jupyter
kernel and writes the scores. Only the kernel runs the learner's code, so only the kernel is
confined. For each submission `prepare` writes, into a private run folder:

- a kernelspec (`course-sandbox`) whose argv starts the Python kernel under `bwrap`, found
  through JUPYTER_PATH;
- an nbgrader config file that loads the course's settings, names that kernel, makes the
  client talk to it over Unix sockets (ipc transport: the kernel has no network, not even the
  host's loopback) and records which cell is executing, so a kernel that dies or runs out of
  time is reported with its cell.

Inside the sandbox the kernel sees only what it needs to run the checks: the system's
programs and libraries, Python, the virtual environment, the course packages and the data
they load, all read-only; its kernel folder (connection file and sockets); a private /tmp;
and, where nbgrader runs the notebook (autograded/STUDENT/NAME), a private folder in memory
holding read-only the files nbgrader puts beside the notebook. Nothing else of the class
folder is bound (gradebook.db, source/, submitted/, autograded/, feedback/, release/ stay out
of sight) nor the repository's solutions/. Whatever the learner writes stays in the sandbox's
memory, size-capped, and vanishes with it: it never reaches the disk, the class folder or a
later student, and a symlink planted there cannot redirect nbgrader's own writes. It runs as
uid 65534 in new user, PID, network, IPC, UTS and cgroup namespaces, cannot create further
user namespaces, sees only its own processes in /proc, gets none of the grader's environment
variables, and is killed with its parent.

Left to the larger redesign of issue 8: the kernel still imports `llmref` (the reference
implementations) and `autograder.checks`, because the graded test cells call them in the
learner's own kernel.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KERNEL_NAME = "course-sandbox"
PACKAGE = "bubblewrap"  # Debian and Ubuntu; also the name on Fedora and Arch
NOBODY = 65534
# Passed on to the kernel when set; everything else of the grader's environment (tokens,
# database URLs, paths of the class folder) is withheld.
KEPT_ENVIRONMENT = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS", "MPLBACKEND",
                    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NBGRADER_EXECUTION")
# Host files that are readable by the grader's uid and have no business in a sandbox.
HIDDEN_SYSTEM_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
PROGRESS = "progress.json"
TMP_BYTES = 1 << 30  # the kernel's private /tmp
WORK_BYTES = 1 << 30  # the kernel's private working folder
# Read by the course packages at run time (trained checkpoints, retrieval questions, the
# book's chapters for the retrieval exercise), relative to the repository holding llmref.
COURSE_DATA = ("benchmarks/results", "benchmarks/data", "book")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces on this machine."""


def _bwrap() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def check_available() -> str:
    """Return bwrap's path if it can build the grading sandbox here; else raise SandboxUnavailable."""
    bwrap = _bwrap()
    if bwrap is None:
        raise SandboxUnavailable(
            "the learner's code is graded in a bubblewrap sandbox, and `bwrap` is not installed. "
            f"Install the `{PACKAGE}` package (Debian/Ubuntu: `sudo apt-get install {PACKAGE}`), "
            "or pass --no-sandbox to grade without isolation (unsafe: a submission can then read "
            "the hidden tests and other students' work and rewrite the gradebook).")
    probe = [bwrap, *_namespaces(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--", "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = subprocess.CompletedProcess(probe, 1, "", str(exc))
    if done.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap ({bwrap}) cannot create the grading sandbox: {done.stderr.strip()[:300]}. "
            "It needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
            "user.max_user_namespaces > 0; in a container, run it with a seccomp profile that "
            "allows them), or pass --no-sandbox to grade without isolation (unsafe).")
    return bwrap


def _namespaces() -> list[str]:
    # --unshare-all: user, PID, network, IPC, UTS, cgroup. In a new PID namespace ipykernel
    # would mistake its parent for dead, so it is told not to watch it (see bwrap_argv) and
    # --die-with-parent ends it with the grader instead.
    return ["--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns",
            "--die-with-parent"]


def readable_paths() -> list[Path]:
    """What the kernel may read: Python, the virtual environment, the course packages and the
    data they load (never the repository's solutions/, tests/ or notebooks/).

    The system folders (/usr, /etc and the /bin, /lib, ... links or folders) are added by
    `bwrap_argv` itself."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
             Path(sys.executable).resolve().parent.parent}
    for package in ("llmref", "autograder"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            paths.update(Path(p).resolve() for p in spec.submodule_search_locations)
            if package == "llmref":
                repository = Path(spec.submodule_search_locations[0]).resolve().parent
                paths.update(repository / d for d in COURSE_DATA if (repository / d).is_dir())
    # Drop a path that lies inside another one: binding it twice gains nothing.
    return sorted(p for p in paths if not any(q != p and q in p.parents for q in paths))


def _system_mounts() -> list[str]:
    argv = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    for hidden in HIDDEN_SYSTEM_FILES:
        if os.path.exists(hidden):
            argv += ["--ro-bind", "/dev/null", hidden]
    return argv


def bwrap_argv(bwrap: str, workdir: Path, kernel_dir: Path, readable: list[Path], hidden: list[Path],
               environment: dict[str, str], files: dict[str, Path] | None = None,
               python: str = sys.executable) -> list[str]:
    """The kernel command: `python -m ipykernel_launcher -f {connection_file}` inside bwrap.

    workdir   where nbgrader runs the notebook (autograded/STUDENT/NAME): the kernel's cwd,
              a tmpfs, so the learner's writes never reach the class folder;
    files     name in workdir -> host file or folder, bound there read-only;
    kernel_dir  the connection file and the ipc sockets, shared with the grader;
    readable  bound read-only at the same paths;
    hidden    existing folders covered by an empty tmpfs should they lie inside a readable
              one (the class folder, solutions/).
    """
    argv = [bwrap, *_namespaces(), *_system_mounts()]
    # The private /tmp first: the course (a clone in /tmp, say) and the class folder may lie
    # under /tmp, and bwrap applies mounts in order, so later binds land on top of this tmpfs.
    # A tmpfs lives in memory outside the kernel's address-space limit: cap /tmp's size.
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for path in readable:
        argv += ["--ro-bind", str(path), str(path)]
    for path in hidden:
        if any(r == path or r in path.parents for r in readable):
            argv += ["--size", str(1 << 20), "--tmpfs", str(path)]
    argv += ["--bind", str(kernel_dir), str(kernel_dir),
             "--size", str(WORK_BYTES), "--tmpfs", str(workdir)]
    for name, origin in sorted((files or {}).items()):
        argv += ["--ro-bind", str(origin), str(workdir / name)]
    argv += ["--chdir", str(workdir), "--clearenv"]
    # JPY_PARENT_PID=1 tells ipykernel not to watch its parent (PID 1 never exits).
    # PYTHONFAULTHANDLER: a segfault prints a Python traceback to nbgrader's stderr.
    env = {"HOME": "/tmp", "JPY_PARENT_PID": "1", "PYTHONFAULTHANDLER": "1",
           "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", **environment}
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    return [*argv, "--", python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


@dataclass
class Sandbox:
    """The run folder of one submission's grading, and how nbgrader must be called to use it."""
    run_dir: Path
    config: Path  # the nbgrader config file to load instead of the course's
    env: dict[str, str]  # added to nbgrader's environment

    @property
    def progress(self) -> Path:
        return self.run_dir / PROGRESS


_RECORD = '''\
# Written by autograder/sandbox.py for one submission; deleted after grading.
import json, os, time
load_subconfig({course_config!r})


def _record(cell, cell_index, **_):
    # Which cell runs now, for a readable reason if the kernel dies or time runs out.
    if cell.cell_type == "code" and cell.source.strip():
        nbgrader = cell.metadata.get("nbgrader", {{}})
        with open({progress!r} + ".new", "w") as handle:
            json.dump({{"cell": cell_index + 1, "grade_id": nbgrader.get("grade_id", ""),
                       "test": bool(nbgrader.get("grade")),
                       "first_line": cell.source.strip().splitlines()[0][:80],
                       "started": time.time()}}, handle)
        os.replace({progress!r} + ".new", {progress!r})


c.Execute.on_cell_start = _record
'''
_ISOLATE = '''
c.Execute.kernel_name = {kernel!r}
c.KernelManager.transport = "ipc"
c.KernelManager.ip = {ipc!r}
c.KernelManager.connection_file = {connection!r}
'''


def prepare(run_dir: Path, class_dir: Path, student: str, name: str, course_config: Path,
            hidden: list[Path], isolate: bool = True) -> Sandbox:
    """Set up grading `student`'s `name` in `class_dir`, the kernel sandboxed if `isolate`.

    `run_dir` must be a fresh private folder outside the class folder; the caller deletes it.
    Without `isolate` only the progress record is set up (`course grade --no-sandbox`).
    Raises SandboxUnavailable if bubblewrap cannot run here.
    """
    config = run_dir / "nbgrader_config.py"
    text = _RECORD.format(course_config=str(course_config), progress=str(run_dir / PROGRESS))
    if not isolate:
        config.write_text(text)
        return Sandbox(run_dir, config, {})
    bwrap = check_available()
    kernel_dir = run_dir / "kernel"
    kernel_dir.mkdir()
    # The files nbgrader puts beside the notebook: the student's extra files, then the
    # source's non-notebook files (nbgrader overwrites those with the master versions).
    # Symlinks are left out: a submitted one could point anywhere on the host.
    files = {}
    for origin in (class_dir / "submitted" / student / name, class_dir / "source" / name):
        if origin.is_dir():
            files |= {entry.name: entry for entry in origin.iterdir()
                      if entry.suffix != ".ipynb" and entry.name != ".ipynb_checkpoints"
                      and not entry.is_symlink()}
    workdir = class_dir / "autograded" / student / name
    environment = {k: os.environ[k] for k in KEPT_ENVIRONMENT if k in os.environ}
    environment.setdefault("PYTHONHASHSEED", "0")
    environment["NBGRADER_EXECUTION"] = "autograde"
    argv = bwrap_argv(bwrap, workdir, kernel_dir, readable_paths(),
                      [p.resolve() for p in (class_dir, *hidden) if p.is_dir()], environment, files)
    spec = run_dir / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": argv, "display_name": "Python 3 (grading sandbox)", "language": "python",
        "interrupt_mode": "message", "metadata": {"debugger": False}}, indent=1))
    config.write_text(text + _ISOLATE.format(kernel=KERNEL_NAME, ipc=str(kernel_dir / "ipc"),
                                             connection=str(kernel_dir / "kernel.json")))
    jupyter_path = os.pathsep.join([str(run_dir / "jupyter"), os.environ.get("JUPYTER_PATH", "")])
    return Sandbox(run_dir, config, {"JUPYTER_PATH": jupyter_path.rstrip(os.pathsep)})


def running_cell(progress: Path) -> str:
    """'cell N' (with its grade id or first line) that was executing when grading stopped, or ''."""
    try:
        state = json.loads(progress.read_text())
    except (OSError, ValueError):
        return ""
    if state.get("test"):
        return f"cell {state['cell']} (the test cell {state['grade_id']!r})"
    return f"cell {state['cell']} ({state.get('first_line', '')})"


def explain_failure(output: str, progress: Path | None, memory_gb: float) -> str:
    """A reason the learner can act on for an nbgrader run that ended without grades, or ''.

    `output` is nbgrader's stdout and stderr (the kernel's stderr goes there too)."""
    where = running_cell(progress) if progress is not None else ""
    at = f" in {where}" if where else ""
    if "DeadKernelError" in output or "Kernel died" in output:
        if any(sign in output for sign in ("MemoryError", "std::bad_alloc", "Cannot allocate memory",
                                          "out of memory")):
            return f"your notebook used more than {memory_gb:g} GiB of memory{at}"
        return f"your notebook stopped the Python process (os._exit or a crash){at}"
    return ""
