"""llmref.distributed: a 2-process DistributedDataParallel run under torchrun (gloo, CPU)
ends with the parameters of a single-process run over the same global batches; a run
that skips the gradient all-reduce does not; a rendezvous that cannot happen fails within
its timeout and says why."""
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from llmref import distributed

# A tiny GPT (2 layers, width 32, context 16), a global batch of 8 windows (4 per rank), 10 steps.
ARGS = ["--steps", "10", "--n-layer", "2", "--n-embd", "32", "--n-head", "2", "--block-size", "16",
        "--batch-size", "8"]
# Float32 rounding, not an algorithmic difference: each rank averages the loss over its 4
# windows and DDP then averages the 2 ranks' gradients, where one process averages over 8
# windows at once. The sums run in another order, so gradients differ by ~1e-7 relatively;
# Adam divides each entry by its own running RMS, which turns a rounding difference in a
# tiny gradient entry into a larger difference in its update. Measured after 10 steps:
# about 2e-6. Training without the all-reduce moves parameters ~3e-2 away (see below),
# 300 times this tolerance.
ATOL = 1e-4


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def single():
    """The reference: one process, the whole global batch at every step."""
    return distributed.run(distributed.parse_args(ARGS))


def launched(tmp_path, *extra):
    out = tmp_path / "result.pt"
    distributed.launch([*ARGS, *extra, "--out", str(out)], nproc_per_node=2, join_timeout=30,
                       timeout=120)
    return torch.load(out, weights_only=True)


# --- fast: the pieces ---------------------------------------------------------------------

def test_shards_cover_the_global_batch_once():
    rows = [list(range(12))[distributed.shard(12, r, 3)] for r in range(3)]
    assert rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_an_uneven_batch_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="multiple of 3"):
        distributed.shard(8, 0, 3)


def test_a_single_process_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.setup() == (0, 1, torch.device("cpu"))


def test_rank_without_torchrun_variables_is_explained(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="launch with torchrun"):
        distributed.setup()


def test_the_command_bounds_every_wait():
    command = distributed.torchrun_command(["--steps", "3"], nnodes=2, rdzv_endpoint="node0:29500",
                                           join_timeout=30)
    assert "--rdzv-conf=join_timeout=30,read_timeout=30" in command
    assert command[-4:] == ["--timeout", "30", "--steps", "3"]
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        distributed.torchrun_command([], nnodes=2)


# --- slow: real torchrun jobs -------------------------------------------------------------

@pytest.mark.slow
def test_ddp_matches_one_process_over_the_global_batch(single, tmp_path):
    ddp = launched(tmp_path)
    assert ddp["world_size"] == 2
    assert ddp["replica_max_difference"] == 0.0, "the two replicas should be bit-identical"
    difference = max_difference(ddp["model"], single["model"])
    print(f"max |DDP - single process| over all parameters after 10 steps: {difference:.1e}")
    assert difference <= ATOL
    torch.testing.assert_close(torch.tensor(ddp["history"]["loss"]),
                               torch.tensor(single["history"]["loss"]), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_without_the_all_reduce_the_runs_differ(single, tmp_path):
    """W independent processes, each on its shard: the check above must catch this."""
    alone = launched(tmp_path, "--no-all-reduce")
    assert max_difference(alone["model"], single["model"]) > 10 * ATOL
    assert alone["replica_max_difference"] > 10 * ATOL, "unsynchronised replicas drift apart"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failed_launch(**kw):
    tick = time.monotonic()
    with pytest.raises(distributed.LaunchError) as caught:
        distributed.launch(["--steps", "2"], nproc_per_node=1, join_timeout=5, timeout=90, **kw)
    return time.monotonic() - tick, str(caught.value)


def failed_worker():
    """A worker started by hand whose master cannot be reached: init_process_group's timeout."""
    env = dict(os.environ, RANK="1", WORLD_SIZE="2", MASTER_ADDR="10.255.255.1", MASTER_PORT="29500",
               OMP_NUM_THREADS="1")
    tick = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "llmref.distributed", "--timeout", "5"], env=env,
                          capture_output=True, text=True, timeout=90)
    return time.monotonic() - tick, done


@pytest.mark.slow
def test_a_rendezvous_that_cannot_happen_fails_in_time_and_says_why():
    # All three only wait: run them side by side.
    with ThreadPoolExecutor(3) as pool:
        unreachable = pool.submit(failed_launch, nnodes=2, rdzv_endpoint="10.255.255.1:29500")
        alone = pool.submit(failed_launch, nnodes=2, rdzv_endpoint=f"127.0.0.1:{free_port()}")
        worker = pool.submit(failed_worker)
        (t1, unreachable), (t2, alone), (t3, worker) = unreachable.result(), alone.result(), worker.result()
    print(f"failed after {t1:.1f} s (unreachable), {t2:.1f} s (one node of 2), {t3:.1f} s (worker)")
    assert "could not reach the rendezvous at 10.255.255.1:29500" in unreachable
    assert "not all 2 nodes joined within 5 s" in alone
    assert worker.returncode == 2
    assert "could not join the process group at 10.255.255.1:29500" in worker.stderr
    assert max(t1, t2, t3) < 60
