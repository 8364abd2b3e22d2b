"""The warm parent of every grading kernel: imports Python's heavy packages once, then forks
one single-use kernel per submission.

Starting a fresh Python for each submission and importing torch into it costs more CPU than
running most submissions' cells; a fork of a process that has already imported them costs a
few milliseconds. The zygote itself never runs a learner's code. It runs inside the grading
sandbox (sandbox.zygote_argv: bubblewrap, no network, the class folder and solutions/ out of
sight) and talks to its one trusted client, the grading worker (pool.py), over stdin/stdout,
one JSON object per line:

    {"op": "spawn", "slot": DIR, "argv": [...], "memory": BYTES, "covers": {DIR: {NAME: TEXT}}}
        -> {"pid": PID}
    {"op": "poll", "pid": PID}                                   -> {"status": null | CODE}
    {"op": "signal", "pid": PID, "signal": N}                    -> {}

Each spawned kernel is then walled off from every other one (`_isolate`): its own user, mount,
PID, network and IPC namespaces; its own /tmp and working folder in memory; of the pool's
kernel folders only its own (the connection file and sockets the client talks to); of /proc
only its own entry, so it cannot list or inspect its siblings; no capabilities, and mounts
it cannot undo.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import resource
import signal
import sys
import traceback

WORK = "/course-kernel"  # the kernel's working folder: a mount point the sandbox creates, named so that
# no host folder (a course under /work, say) can lie beneath it
SLOT_MOUNT = "/course-kernel-slot"  # a spare mount point for moving the kernel's own folder into place
TMP_BYTES = 1 << 30
WORK_BYTES = 1 << 30
# Files a kernel may write, its log included (where a crash's traceback lands): bounds the
# one file that reaches the host's disk.
FILE_BYTES = 256 << 20
# Files about the machine (none about other processes) that a kernel's /proc keeps.
PROC_FILES = ("cpuinfo", "meminfo", "stat", "loadavg", "uptime", "version", "filesystems")

# What a kernel imports while it starts (found with sys.modules before and after
# IPKernelApp.initialize): imported once here instead of in every kernel.
KERNEL_START_MODULES = (
    "IPython.core.completerlib", "IPython.core.debugger", "IPython.core.oinspect",
    "IPython.extensions.storemagic", "ipykernel.debugger", "debugpy", "pdb", "sqlite3",
    "tornado.gen", "tornado.locks", "tornado.queues", "tornado.platform.asyncio", "xmlrpc.client",
    "http.server", "mimetypes", "faulthandler")

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
_CLONE_NEWNET, _CLONE_NEWIPC = 0x40000000, 0x08000000
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE, _MNT_DETACH = 1, 32, 0x1000, 0x4000, 1 << 18, 2
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       flags, data.encode() if data else None), f"mount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_privileges() -> None:
    """No capabilities (so no mount or unmount), none to regain, and no /proc entry that a
    process of the same uid could read: what is left is an ordinary unprivileged process."""
    for cap in range(64):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    _check(_libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), (_CapData * 2)()), "capset")
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")


def _mounts_under(folder: str) -> list[str]:
    """The outermost mount points strictly inside `folder` (from /proc/self/mountinfo)."""
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point.startswith(folder.rstrip("/") + "/"):
                points.append(point)
    return [p for p in points if not any(p != q and p.startswith(q + "/") for q in points)]


def _cover(covers: dict) -> None:
    """Mount over each folder of `covers` a read-only one holding only the files given (name
    -> text): the kernel of a judged assignment sees neither the references nor the checks."""
    for folder, files in covers.items():
        if not os.path.isdir(folder):
            continue
        _mount("tmpfs", folder, "tmpfs", 0, "size=1m,mode=755")
        for name, text in files.items():
            with open(os.path.join(folder, name), "w") as handle:
                handle.write(text)
        _mount("none", folder, None, _MS_REMOUNT | _MS_RDONLY, None)


def _isolate(slot: str, covers: dict | None = None) -> None:
    """Give this (forked) process namespaces of its own; return in a grandchild, PID 1 of the
    new PID namespace, while this process waits for it and passes signals on. `covers`: see
    `_cover`."""
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC),
           "unshare")
    with open("/proc/self/setgroups", "w") as handle:
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"{gid} {gid} 1")
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE, None)
    _mount("tmpfs", WORK, "tmpfs", 0, f"size={WORK_BYTES},mode=755")
    # A course or a virtual environment may lie under /tmp (a CI clone, say): what the sandbox
    # mounted there is set aside, /tmp is replaced by this kernel's own, and it is put back.
    pool = os.path.dirname(slot)
    kept = [point for point in _mounts_under("/tmp") if point != pool and not point.startswith(pool + "/")]
    for i, point in enumerate(kept):
        os.mkdir(f"{WORK}/.kept{i}")
        _mount(point, f"{WORK}/.kept{i}", None, _MS_BIND | _MS_REC, None)
    # The kernel's folder stays at its path (the client connects to the sockets there) while
    # the pool folder around it, with every other kernel's folder, is covered.
    _mount(slot, SLOT_MOUNT, None, _MS_BIND, None)
    _mount("tmpfs", "/tmp", "tmpfs", 0, f"size={TMP_BYTES},mode=1777")
    for i, point in enumerate(kept):
        os.makedirs(point, exist_ok=True)
        _mount(f"{WORK}/.kept{i}", point, None, _MS_BIND | _MS_REC, None)
        _check(_libc.umount2(f"{WORK}/.kept{i}".encode(), _MNT_DETACH), "umount")
        os.rmdir(f"{WORK}/.kept{i}")
    os.makedirs(pool, exist_ok=True)
    _mount("tmpfs", pool, "tmpfs", 0, "size=1m,mode=755")
    os.mkdir(slot)
    _mount(SLOT_MOUNT, slot, None, _MS_BIND, None)
    _check(_libc.umount2(SLOT_MOUNT.encode(), _MNT_DETACH), "umount")
    _cover(covers or {})
    child = os.fork()
    if child:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    _private_proc()
    _drop_privileges()


def _private_proc() -> None:
    """Replace /proc, which lists every process of the sandbox (the other students' kernels
    among them), by one that holds this process's own entry and a few files about the
    machine that libraries read (ONNX Runtime canonicalises paths through /proc/self/fd,
    torch and ONNX Runtime read /proc/cpuinfo). A new procfs of this PID namespace is not an
    option: the kernel refuses it under bwrap's partly read-only /proc."""
    me = os.readlink("/proc/self")  # this process's number in the sandbox's PID namespace
    stash = "/tmp/.course-proc"
    os.mkdir(stash, 0o700)
    entries = {"self": f"/proc/{me}", **{name: f"/proc/{name}" for name in PROC_FILES
                                         if os.path.exists(f"/proc/{name}")}}
    for name, source in entries.items():
        target = os.path.join(stash, name)
        if name == "self":
            os.mkdir(target)
        else:
            open(target, "w").close()
        _mount(source, target, None, _MS_BIND, None)
    _mount("tmpfs", "/proc", "tmpfs", 0, "size=64k,mode=755")
    for name in entries:
        target = os.path.join("/proc", name)
        if name == "self":
            os.mkdir(target)
        else:
            open(target, "w").close()
        _mount(os.path.join(stash, name), target, None, _MS_BIND, None)
        _check(_libc.umount2(os.path.join(stash, name).encode(), _MNT_DETACH), "umount")
    for name in entries:
        path = os.path.join(stash, name)
        os.rmdir(path) if name == "self" else os.unlink(path)
    os.rmdir(stash)
    _mount("none", "/proc", None, _MS_REMOUNT | _MS_RDONLY, None)


def _become_kernel(request: dict, protocol_fds: tuple[int, ...], isolate: bool) -> None:
    slot = request["slot"]
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    os.setsid()
    for fd in protocol_fds:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(os.path.join(slot, "kernel.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, 1 << 16)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    if isolate:
        _isolate(slot, request.get("covers"))
        os.chdir(WORK)
    else:
        work = os.path.join(slot, "work")
        os.makedirs(work, exist_ok=True)
        os.chdir(work)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    memory = int(request["memory"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    import faulthandler
    faulthandler.enable()
    from ipykernel.kernelapp import IPKernelApp
    IPKernelApp.launch_instance(argv=list(request["argv"]))


def _warm_up() -> None:
    """Import what every kernel needs before the first fork, without starting a thread (a
    fork copies only the calling thread, and a thread pool's locks with it)."""
    import numpy  # noqa: F401
    import torch
    torch.set_num_threads(1)
    # Initialise torch's CPU detection once, single-threaded, rather than in every kernel.
    (torch.ones(2) @ torch.ones(2)).item()
    # A backward pass given its output's gradient (as the judge's backward requests are)
    # imports torch's symbolic shapes, and sympy with them: 0.16 s, once here, not per kernel.
    import torch.fx.experimental.symbolic_shapes  # noqa: F401
    import IPython  # noqa: F401
    import ipykernel.ipkernel  # noqa: F401
    import ipykernel.kernelapp  # noqa: F401
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import importlib
    for name in KERNEL_START_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional part of ipykernel (the debugger) may be missing
            pass
    import threading
    if threading.active_count() != 1:
        raise RuntimeError(f"an import started a thread ({threading.enumerate()}); forking now "
                           "would copy its locks into every kernel")
    # Objects that exist now are shared by every fork: keep the collector from visiting
    # (and so copying) them in each kernel.
    gc.freeze()


def serve(isolate: bool) -> None:
    _warm_up()
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    protocol_fds = (0, 1, requests.fileno(), replies.fileno())
    finished: dict[int, int] = {}

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            finished[pid] = os.waitstatus_to_exitcode(status)

    replies.write(json.dumps({"ready": True}) + "\n")
    for line in requests:
        request = json.loads(line)
        reply: dict = {}
        try:
            if request["op"] == "spawn":
                pid = os.fork()
                if pid == 0:
                    try:
                        _become_kernel(request, protocol_fds, isolate)
                        code = 0
                    except BaseException:  # the kernel's own failure, for its log
                        traceback.print_exc()
                        code = 70
                    os._exit(code)
                reply = {"pid": pid}
            elif request["op"] == "poll":
                reap()
                reply = {"status": finished.get(request["pid"])}
            elif request["op"] == "signal":
                reap()
                if request["pid"] not in finished:
                    os.kill(request["pid"], int(request["signal"]))
        except Exception as exc:  # a bad request must not end the pool
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    serve(isolate=sys.argv[1:2] == ["isolate"])
