"""`course grade --scheduler`: submissions graded as Dask tasks on a cluster's worker processes
(coursetools/distributed.py) score exactly what a local run gives them, the grading workers are
spread over the cluster's processes and freed afterwards, and a SQLite gradebook is refused
when a worker runs on another machine. (tests/test_distributed.py is about llmref's DDP.)"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coursetools import distributed, grading
from exercise_tools import ROOT, read, release_path, solution_path, with_cells
from mistakes import for_exercise

NAME = "02_attention"
TIMEOUT = 60  # seconds per submission; a normal one takes ~5 s on a busy 2-core machine


def _class(folder: Path) -> list[str]:
    """Six submissions: the solution, the untouched release and four known mistakes."""
    release = read(release_path(NAME))
    solution = {c.metadata["nbgrader"]["grade_id"]: c.source for c in read(solution_path(NAME)).cells
                if c.metadata.get("nbgrader", {}).get("solution")}
    notebooks = {"solution": with_cells(release, solution), "untouched": release}
    notebooks.update({m.name: with_cells(release, {m.cell: m.source}) for m in for_exercise(NAME)[:2]})
    for student, nb in notebooks.items():
        path = folder / student / NAME / f"{NAME}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
    return list(notebooks)


@pytest.mark.slow
def test_grading_on_a_dask_cluster_matches_a_local_run(tmp_path):
    from distributed import Client, LocalCluster, get_task_stream

    students = _class(tmp_path / "submissions")
    local = grading.grade_class(ROOT, NAME, tmp_path / "submissions", tmp_path / "local",
                                timeout=TIMEOUT, jobs=2)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:  # `course grade`, as an instructor runs it
            done = subprocess.run(
                [sys.executable, "-m", "coursetools.cli", "--root", str(ROOT), "grade", NAME,
                 str(tmp_path / "submissions"), "--class-dir", str(tmp_path / "cluster"),
                 "--timeout", str(TIMEOUT), "--scheduler", cluster.scheduler_address],
                capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        # Every submission was a task, and both worker processes graded some.
        tasks = [t for t in stream.data if str(t["key"]).startswith(f"grade-{NAME}-")]
        assert len(tasks) == len(students)
        assert len({t["worker"] for t in tasks}) == 2, "one worker process graded everything"
        # Each process's grading worker (and its zygote) was freed at the end of the run.
        assert set(client.run(lambda: __import__("coursetools.pool").pool._WORKER is None).values()) == {True}

    with open(tmp_path / "cluster" / f"grades_{NAME}.csv") as handle:
        on_cluster = {row.pop("student"): row for row in csv.DictReader(handle)}
    assert list(on_cluster) == [r.student for r in local] == sorted(students)
    for here in local:
        assert on_cluster[here.student] == {"score": f"{here.score:g}", "max_score": f"{here.max_score:g}",
                                            "reason": here.reason,
                                            **{cell: f"{score:g}" for cell, score in here.cells.items()}}
    scores = {r.student: r.score for r in local}
    assert scores["solution"] == local[0].max_score > 0
    assert scores["untouched"] == 0
    assert all(scores[s] < local[0].max_score for s in students[2:]), scores
    assert all(r.reason == "" for r in local), local
    # The cluster's run wrote its class folder's gradebook, as a local run does.
    assert (tmp_path / "cluster" / "autograded" / "solution" / NAME).is_dir()


def test_workers_on_other_machines_are_told_apart():
    assert distributed.other_machines(["tcp://127.0.0.1:40001", "tcp://[::1]:40002"]) == []
    assert distributed.other_machines(["tcp://127.0.0.1:40001", "tcp://192.0.2.7:40002",
                                       "tcp://192.0.2.7:40003"]) == ["192.0.2.7"]


def test_a_sqlite_gradebook_is_refused_for_workers_on_other_machines(monkeypatch, tmp_path):
    from distributed import LocalCluster

    sqlite = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        distributed.check_cluster(cluster.scheduler_address, sqlite)  # one machine: allowed
        # As if the worker were on another machine.
        monkeypatch.setattr(distributed, "other_machines", lambda addresses: ["grader-2"])
        distributed.check_cluster(cluster.scheduler_address, "postgresql://u@db/gradebook")
        with pytest.raises(distributed.ClusterError) as refused:
            distributed.check_cluster(cluster.scheduler_address, sqlite)
    message = str(refused.value)
    assert "grader-2" in message and "--db-url postgresql://" in message


def test_an_unreachable_scheduler_is_named(monkeypatch):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(distributed.ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        distributed.check_cluster("tcp://127.0.0.1:1", "sqlite:///gradebook.db")


@pytest.mark.slow
def test_a_worker_without_bubblewrap_stops_the_run_saying_what_to_install(tmp_path):
    """A grading machine that lacks bwrap must not grade unsandboxed, nor fail each submission
    alone: the run stops at once with the worker's machine and the package to install."""
    from distributed import LocalCluster

    _class(tmp_path / "submissions")
    python = Path(sys.executable).parent
    # The workers' PATH holds the virtual environment and a folder without bwrap, nothing else.
    no_bwrap = tmp_path / "bin"
    no_bwrap.mkdir()
    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1, dashboard_address=None,
                      env={"PATH": f"{python}:{no_bwrap}"}) as cluster:
        done = subprocess.run(
            [sys.executable, "-m", "coursetools.cli", "--root", str(ROOT), "grade", NAME,
             str(tmp_path / "submissions"), "--class-dir", str(tmp_path / "cluster"),
             "--timeout", str(TIMEOUT), "--scheduler", cluster.scheduler_address],
            capture_output=True, text=True, timeout=600)
    assert done.returncode != 0, done.stdout
    message = done.stdout + done.stderr
    assert "could not start" in message and "bwrap" in message and "bubblewrap" in message, message[-2000:]
    assert "Traceback" not in message, message[-2000:]
    # Nothing was graded outside a sandbox.
    assert not list((tmp_path / "cluster").glob("autograded/*/*"))
