"""The grading sandbox: where the learners' code runs while nbgrader grades it.

nbgrader itself is trusted: it reads the gradebook, executes the notebook through a Jupyter
kernel and writes the scores. Only the kernel runs the learner's code, so only the kernel is
confined. The kernels are forks of one warm process per grading worker, the zygote
(zygote.py, started by pool.py with `zygote_argv`), which runs in a bubblewrap sandbox:

- it sees the system's programs and libraries, Python, the virtual environment, the course
  packages and the data they load, all read-only, a private /tmp, and the pool folder where
  the kernels' connection files and Unix sockets live (ipc transport: a kernel has no
  network, not even the host's loopback);
- nothing of the class folder (gradebook.db, source/, submitted/, autograded/, feedback/)
  nor the repository's solutions/ and tests/;
- it runs as uid 65534 in new user, PID, network, IPC, UTS and cgroup namespaces, with none
  of the grader's environment variables, and dies with its worker.

Each kernel forked from it then gets namespaces of its own (zygote._isolate): its own /tmp and
working folder in memory, size-capped, so what a learner writes never reaches the disk, the
class folder or another student; of the pool only its own folder; no /proc, so it cannot list
or inspect the kernels of other students graded at the same time; no capabilities and mounts
it cannot undo; a memory limit; and it is killed with its zygote.

For a judged assignment (judge.py: the grader runs the test cells itself), the kernel also
loses `llmref` (the reference implementations) and the check modules: both folders are
covered (`judged_kernel_covers`), the checks by a stub that says the grader runs them, next
to the checks' shared machinery (_core.py: no answers in it), which the kernel uses to watch
for forbidden library shortcuts.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import zygote

PACKAGE = "bubblewrap"  # Debian and Ubuntu; also the name on Fedora and Arch
NOBODY = 65534
# Passed on to the kernel when set; everything else of the grader's environment (tokens,
# database URLs, paths of the class folder) is withheld.
KEPT_ENVIRONMENT = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS", "MPLBACKEND",
                    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NBGRADER_EXECUTION")
# Host files that are readable by the grader's uid and have no business in a sandbox.
HIDDEN_SYSTEM_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
ZYGOTE_SCRIPT = "/course-zygote/zygote.py"  # where the sandbox sees zygote.py
TMP_BYTES = 1 << 30  # the zygote's private /tmp (each kernel mounts its own)
# Read by the course packages at run time (trained checkpoints, retrieval questions, the
# book's chapters for the retrieval exercise), relative to the repository holding llmref.
COURSE_DATA = ("benchmarks/results", "benchmarks/data", "book")


CHECKS_STUB = '''"""Stand-in for the course's checks in a graded kernel: the grader runs them, outside."""
import sys as _sys
import types as _types

from ._core import CheckFailure  # noqa: F401


class _Checks(_types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def check(*args, **kwargs):
            print(f"({name} runs in the grader, outside this notebook)")
        return check


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(name)
    module = _Checks(f"{__name__}.{name}")
    _sys.modules[module.__name__] = module
    return module
'''


def judged_kernel_covers(keep: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """What the kernel of a judged assignment sees instead of the references and the checks:
    folder -> {file name: text} (zygote._cover). `keep`: modules of llmref the notebook
    imports itself (an earlier exercise's reference), kept as they are."""
    covers: dict[str, dict[str, str]] = {}
    for package in ("llmref", "autograder.checks"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = Path(spec.submodule_search_locations[0]).resolve()
        if package == "llmref":
            covers[str(folder)] = {f"{name}.py": (folder / f"{name}.py").read_text()
                                   for name in ("__init__", *keep)}
        else:
            covers[str(folder)] = {"__init__.py": CHECKS_STUB,
                                   "_core.py": (folder / "_core.py").read_text()}
    return covers


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
    # The kernels need a user namespace of their own inside the sandbox's: probe both.
    probe = [bwrap, *_namespaces(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--", sys.executable, "-c", "import ctypes, sys; sys.exit(ctypes.CDLL(None).unshare(0x10000000))"]
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
    # --unshare-all: user, PID, network, IPC, UTS, cgroup. --die-with-parent ends the zygote
    # (and so every kernel) with its worker. No --disable-userns: see zygote_argv.
    return ["--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
            "--die-with-parent", "--new-session"]


def readable_paths() -> list[Path]:
    """What the kernel may read: Python, the virtual environment, the course packages and the
    data they load (never the repository's solutions/, tests/ or notebooks/).

    The system folders (/usr, /etc and the /bin, /lib, ... links or folders) are added by
    `zygote_argv` itself."""
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


def kernel_environment() -> dict[str, str]:
    """The environment every grading kernel gets: none of the grader's (tokens, database URLs,
    paths of the class folder), one thread per kernel (as many kernels run as there are
    cores, and a fork must not copy a thread pool), a fixed hash seed (the same submission
    always gets the same score)."""
    environment = {k: os.environ[k] for k in KEPT_ENVIRONMENT if k in os.environ}
    environment.update({"PYTHONHASHSEED": "0", "NBGRADER_EXECUTION": "autograde", "MPLBACKEND": "Agg",
                        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                        "PYTHONFAULTHANDLER": "1", "HOME": "/tmp",
                        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"})
    return environment


def zygote_argv(bwrap: str, pool_dir: Path, readable: list[Path], hidden: list[Path],
                environment: dict[str, str], python: str = sys.executable) -> list[str]:
    """The command that starts the kernels' zygote (zygote.py) inside bwrap.

    pool_dir  the kernels' folders (connection files and ipc sockets), shared with the
              grader; each kernel covers all but its own (zygote._isolate);
    readable  bound read-only at the same paths; nothing else of the host is visible
              but the system folders: no class folder, no solutions/, no tests/;
    hidden    folders covered by an empty tmpfs should they lie inside a readable one
              (the class folder, solutions/).
    The zygote keeps the right to create user namespaces (no --disable-userns): each kernel
    it forks needs one of its own to mount its private folders, and drops every capability
    before the learner's code runs.
    """
    argv = [bwrap, *_namespaces(), *_system_mounts()]
    # The private /tmp first: the course (a clone in /tmp, say) and the pool may lie under
    # /tmp, and bwrap applies mounts in order, so later binds land on top of this tmpfs.
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for path in readable:
        argv += ["--ro-bind", str(path), str(path)]
    for path in hidden:
        if any(r == path or r in path.parents for r in readable):
            argv += ["--size", str(1 << 20), "--tmpfs", str(path)]
    argv += ["--bind", str(pool_dir), str(pool_dir), "--dir", zygote.WORK, "--dir", zygote.SLOT_MOUNT,
             "--chdir", zygote.WORK, "--clearenv"]
    for key, value in sorted(environment.items()):
        argv += ["--setenv", key, value]
    # The zygote's own file alone, not the package around it: the kernels must not import
    # the instructor's tools.
    argv += ["--ro-bind", str(Path(zygote.__file__).resolve()), ZYGOTE_SCRIPT]
    return [*argv, "--", python, ZYGOTE_SCRIPT, "isolate"]


def describe_cell(running: dict) -> str:
    """'cell N' (with its grade id or first line) for the cell that was executing, or ''."""
    if not running:
        return ""
    if running.get("test"):
        return f"cell {running['cell']} (the test cell {running['grade_id']!r})"
    return f"cell {running['cell']} ({running.get('first_line', '')})"


def explain_failure(output: str, running: dict, memory_gb: float) -> str:
    """A reason the learner can act on for an nbgrader run that ended without grades, or ''.

    `output` is nbgrader's log and error and the kernel's own log; `running` the cell that
    was executing (describe_cell)."""
    where = describe_cell(running)
    at = f" in {where}" if where else ""
    if "broke the grader's connection" in output:  # judge.BROKEN
        return ("your notebook broke the grader's connection to it (your code replaced or removed "
                f"`__course_rpc__`, through which the grader calls your functions){at}")
    if "DeadKernelError" in output or "Kernel died" in output:
        if any(sign in output for sign in ("MemoryError", "std::bad_alloc", "Cannot allocate memory",
                                          "out of memory")):
            return f"your notebook used more than {memory_gb:g} GiB of memory{at}"
        return f"your notebook stopped the Python process (os._exit or a crash){at}"
    return ""
