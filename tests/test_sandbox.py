"""The grading sandbox: the learner's kernel runs under bubblewrap during `course grade`.

One class of 02_attention is graded in the sandbox with a submission that attacks the grader
(rewrites the gradebook found by a relative path, the class's absolute path, an environment
variable or nbgrader's command line; reads other students' work, the source and solutions/;
plants a file in source/; reaches a service on the host's 127.0.0.1) and two that kill
their own kernel. The attacker is graded once more with --no-sandbox, to show that each
attack does succeed without the sandbox, so the test can fail.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from coursetools import sandbox, zygote
from hostile_corpus import PLANT
from exercise_tools import ROOT, Listener, graded_cells, read, release_path, solution_path, with_cells

NAME = "02_attention"
CELL = "scaled_dot_product_attention"
CLI = "coursetools.cli"


def _solution() -> str:
    return next(c.source for c in read(solution_path(NAME)).cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == CELL)


# Each attack is appended to a correct solution, so the notebook would earn full marks.
# They print a marker that the test reads from the graded notebook's outputs.
STEAL_GRADEBOOK = '''
import glob, os, sqlite3
candidates = ["../../../gradebook.db", {gradebook!r}, os.environ.get("COURSE_TEST_GRADEBOOK", "")]
for cmdline in glob.glob("/proc/[0-9]*/cmdline"):  # nbgrader's own command line names it
    try:
        found = [part.decode().split("sqlite:///", 1)[1]
                 for part in open(cmdline, "rb").read().split(b"\\0") if b"sqlite:///" in part]
    except OSError:
        continue
    # Only this class's: without the sandbox, other classes graded at the same time (tests
    # running in parallel) are in reach too, and must not be harmed.
    candidates += [path for path in found if path == {gradebook!r}]
outcome = []
for path in filter(None, candidates):
    try:
        db = sqlite3.connect(f"file:{{path}}?mode=rw", uri=True)
        changed = db.execute("UPDATE grade SET manual_score = 0").rowcount
        db.commit()
        outcome.append(f"WROTE {{changed}}")
    except Exception as exc:
        outcome.append(f"FAILED {{type(exc).__name__}}")
print("GRADEBOOK", outcome)
'''
READ_OTHERS = '''
import glob
found = (glob.glob("../../../submitted/*/*/*.ipynb") + glob.glob({class_dir!r} + "/submitted/*/*/*.ipynb")
         + glob.glob({class_dir!r} + "/source/*/*.ipynb") + glob.glob({solutions!r} + "/*/*.ipynb"))
readable = []
for path in found:
    try:
        readable.append(len(open(path).read()) > 0)
    except OSError:
        pass
print("READ", sum(readable))
'''
NETWORK = '''
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
    print("NETWORK CONNECTED")
except OSError as exc:
    print("NETWORK REFUSED", type(exc).__name__)
'''
IMPORT_TOOLS = '''
try:
    import coursetools.grading
    print("TOOLS IMPORTED")
except ImportError as exc:
    print("TOOLS REFUSED", type(exc).__name__)
'''
OS_EXIT = "\nimport os\nos._exit(1)\n"
SEGFAULT = "\nimport ctypes\nctypes.string_at(0)\n"


def _write_class(submissions: Path, class_dir: Path, port: int, crashes: bool) -> None:
    """One student who tries every attack (graded first: a file planted in source/ would reach
    the students after it); with `crashes`, also a correct solution and two dying kernels."""
    release, solution = read(release_path(NAME)), _solution()
    attack = "\n".join([PLANT.format(folders=["../../../source/02_attention", f"{class_dir}/source/02_attention", "."]),
                        STEAL_GRADEBOOK.format(gradebook=str(class_dir / "gradebook.db")),
                        READ_OTHERS.format(class_dir=str(class_dir), solutions=str(ROOT / "solutions")),
                        NETWORK.format(port=port), IMPORT_TOOLS])
    students = {"a_attacker": attack}
    if crashes:
        students |= {"solution": "", "os_exit": OS_EXIT, "segfault": SEGFAULT}
    for student, extra in students.items():
        path = submissions / student / NAME / f"{NAME}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(with_cells(release, {CELL: solution + "\n" + extra}), path)


def _grade(submissions: Path, class_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COURSE_TEST_GRADEBOOK": str(class_dir / "gradebook.db")}
    return subprocess.run(
        [sys.executable, "-m", CLI, "--root", str(ROOT), "grade", NAME, str(submissions),
         "--class-dir", str(class_dir), "--timeout", "60", "--jobs", "2", *extra],
        capture_output=True, text=True, timeout=900, env=env)


def _printed(class_dir: Path, student: str) -> str:
    nb = nbformat.read(class_dir / "autograded" / student / NAME / f"{NAME}.ipynb", as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.output_type == "stream")


def _rows(class_dir: Path) -> dict[str, dict]:
    with open(class_dir / f"grades_{NAME}.csv") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def _planted(class_dir: Path) -> list[Path]:
    return sorted(class_dir.rglob("planted.py"))


@pytest.mark.slow
def test_attacks_fail_in_the_sandbox_and_succeed_without_it(tmp_path):
    sandbox.check_available()  # fails with the package to install where bubblewrap is missing
    listener = Listener()

    # Without the sandbox (first, to show that each attack works), the attacker alone.
    bare = tmp_path / "bare"
    _write_class(bare / "submissions", bare / "class", listener.port, crashes=False)
    done = _grade(bare / "submissions", bare / "class", "--no-sandbox")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WITHOUT the sandbox" in done.stderr
    printed = _printed(bare / "class", "a_attacker")
    # The gradebook's absolute path is enough (the kernel runs in a scratch folder, without the
    # grader's environment, and no nbgrader process names it on its command line).
    assert "WROTE" in printed and "READ 0" not in printed, printed
    assert "NETWORK CONNECTED" in printed and listener.connections == 1
    assert "TOOLS IMPORTED" in printed
    assert _planted(bare / "class" / "source")

    # In the sandbox: the attacker, a correct solution and two crashes, in one run.
    boxed = tmp_path / "boxed"
    _write_class(boxed / "submissions", boxed / "class", listener.port, crashes=True)
    done = _grade(boxed / "submissions", boxed / "class")
    assert done.returncode == 0, done.stdout + done.stderr
    rows, class_dir = _rows(boxed / "class"), boxed / "class"
    points = sum(graded_cells(read(solution_path(NAME))).values())

    printed = _printed(class_dir, "a_attacker")
    assert "GRADEBOOK" in printed and "WROTE" not in printed, printed
    assert "READ 0" in printed and "NETWORK REFUSED" in printed, printed
    assert "TOOLS REFUSED ModuleNotFoundError" in printed, printed
    assert listener.connections == 1
    assert _planted(class_dir) == [], "a submission planted a file in the class folder"
    assert sorted(p.name for p in (class_dir / "source" / NAME).iterdir()) == [f"{NAME}.ipynb"]
    # Both hold a correct solution: the gradebook (its own write failed) still says so.
    with Gradebook(f"sqlite:///{class_dir / 'gradebook.db'}") as gb:
        for student in ("solution", "a_attacker"):
            assert gb.find_submission(NAME, student).score == points, student
            assert float(rows[student]["score"]) == points and rows[student]["reason"] == "", rows[student]

    # A kernel that dies scores 0 with the cell it died in, and the run goes on.
    cell = next(i + 1 for i, c in enumerate(read(solution_path(NAME)).cells)
                if c.metadata.get("nbgrader", {}).get("grade_id") == CELL)
    for student in ("os_exit", "segfault"):
        assert float(rows[student]["score"]) == 0
        assert rows[student]["reason"].startswith(
            f"your notebook stopped the Python process (os._exit or a crash) in cell {cell} ("), rows[student]


WRITE_COURSE = '''
import os, sys, llmref
for folder in (os.path.dirname(llmref.__file__), sys.prefix):
    try:
        with open(os.path.join(folder, "planted.py"), "w") as handle:
            handle.write("")
        print("WROTE", folder)
    except OSError as exc:
        print("READ-ONLY", type(exc).__name__)
'''


@pytest.mark.slow
def test_the_course_stays_read_only_for_a_kernel_wherever_it_lies(tmp_path):
    """The course, its packages and its virtual environment are read-only to the learner's
    kernel, also when they lie under /tmp (a CI clone), which each kernel replaces by its own."""
    submissions, class_dir = tmp_path / "submissions", tmp_path / "class"
    path = submissions / "writer" / NAME / f"{NAME}.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(with_cells(read(release_path(NAME)), {CELL: _solution() + WRITE_COURSE}), path)
    done = _grade(submissions, class_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    printed = _printed(class_dir, "writer")
    assert printed.count("READ-ONLY") == 2 and "WROTE" not in printed, printed
    assert float(_rows(class_dir)["writer"]["score"]) == sum(graded_cells(read(solution_path(NAME))).values())


def test_the_zygote_command_confines_the_learner(tmp_path):
    readable = [Path("/opt/python"), Path("/repo/.venv"), Path("/repo/llmref")]
    pool_dir = tmp_path / "kernels"
    argv = sandbox.zygote_argv("/usr/bin/bwrap", pool_dir, readable,
                               [Path("/classes/c1"), Path("/repo/.venv/solutions")],
                               {"PYTHONHASHSEED": "0"}, python="/repo/.venv/bin/python")
    command = argv[argv.index("--") + 1:]
    assert command == ["/repo/.venv/bin/python", sandbox.ZYGOTE_SCRIPT, "isolate"]
    options = argv[:argv.index("--")]
    pairs = list(zip(options, options[1:]))
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in options
    # Each kernel needs a user namespace of its own (zygote._isolate), so the zygote may make one.
    assert "--share-net" not in options and "--disable-userns" not in options
    assert ("--uid", "65534") in pairs and ("--gid", "65534") in pairs
    binds = [tuple(options[i:i + 3]) for i, o in enumerate(options) if o in ("--bind", "--ro-bind")]
    for path in readable:
        assert ("--ro-bind", str(path), str(path)) in binds
    # Of the instructor's package, the zygote's own file only.
    assert ("--ro-bind", str(Path(zygote.__file__).resolve()), sandbox.ZYGOTE_SCRIPT) in binds
    assert not [p for p in sandbox.readable_paths() if (p / "coursetools").is_dir() or p.name == "coursetools"]
    # Writable on the host: the pool of kernel folders alone; nothing of the class.
    assert [b for b in binds if b[0] == "--bind"] == [("--bind", str(pool_dir), str(pool_dir))]
    assert not [b for b in binds if b[1].startswith("/classes")]
    # A hidden folder inside a readable one is covered.
    assert ("--tmpfs", "/repo/.venv/solutions") in pairs and ("--tmpfs", "/classes/c1") not in pairs
    assert ("--tmpfs", "/tmp") in pairs and ("--chdir", zygote.WORK) in pairs
    assert options[options.index("/tmp") - 3:options.index("/tmp")] == ["--size", str(1 << 30), "--tmpfs"]
    environment = {options[i + 1] for i, o in enumerate(options) if o == "--setenv"}
    assert environment == {"PYTHONHASHSEED"}


def test_the_kernel_environment_holds_nothing_of_the_graders(monkeypatch):
    monkeypatch.setenv("COURSE_SECRET_TOKEN", "s3cret")
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    environment = sandbox.kernel_environment()
    assert "COURSE_SECRET_TOKEN" not in environment
    # One thread per kernel: a fork must not copy a thread pool, and jobs already fill the cores.
    assert environment["OMP_NUM_THREADS"] == "1" and environment["PYTHONHASHSEED"] == "0"


def test_grading_stops_before_it_starts_without_bubblewrap(monkeypatch, tmp_path, capsys):
    from coursetools import cli
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    sandbox.check_available.cache_clear()
    try:
        code = cli.main(["--root", str(ROOT), "grade", NAME, str(tmp_path), "--class-dir",
                         str(tmp_path / "class")])
    finally:
        sandbox.check_available.cache_clear()
    error = capsys.readouterr().err
    assert code == 2 and "`bubblewrap` package" in error and "--no-sandbox" in error, error
    assert not (tmp_path / "class").exists(), "nothing may be graded or registered"


def test_a_sandbox_that_cannot_start_is_reported(monkeypatch):
    monkeypatch.setattr(sandbox, "_bwrap", lambda: "/bin/false")  # as bwrap without user namespaces
    sandbox.check_available.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="user namespaces.*--no-sandbox"):
            sandbox.check_available()
    finally:
        sandbox.check_available.cache_clear()


def test_a_dead_kernel_is_explained_with_its_cell():
    running = {"cell": 4, "test": False, "grade_id": "", "first_line": "import os"}
    died = "nbclient.exceptions.DeadKernelError: Kernel died"
    assert sandbox.explain_failure(died, running, 6) == \
        "your notebook stopped the Python process (os._exit or a crash) in cell 4 (import os)"
    assert sandbox.explain_failure(died + "\nstd::bad_alloc", running, 6).startswith(
        "your notebook used more than 6 GiB of memory in cell 4")
    assert sandbox.explain_failure("some other failure", running, 6) == ""
    assert sandbox.describe_cell({"cell": 8, "test": True, "grade_id": "test_mask", "first_line": "x"}) == \
        "cell 8 (the test cell 'test_mask')"
    assert sandbox.describe_cell({}) == ""
