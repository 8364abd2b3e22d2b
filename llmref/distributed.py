"""Data-parallel pretraining with PyTorch's DistributedDataParallel (DDP) under torchrun.

Hand-written (not generated from a solution notebook): what a DDP run needs around
llmref.pretrain, whose pieces (get_batch, lr_at, clip_grad_norm, param_groups through
make_optimizer, TrainConfig) it imports unchanged. Chapter: book/03-models/09-distributed.md;
tests: tests/test_distributed.py.

The design in one paragraph. Every rank seeds the same generator and draws the same
*global* batch of `batch_size` windows at every step; rank r keeps rows
[r * B/W, (r + 1) * B/W) of it (W = world size). Its loss is the mean over its own
B/W windows, and DDP averages the gradients of the W ranks during backward (an
all-reduce), so every rank ends backward holding the gradient of the mean over all B
windows: exactly what one process computing the whole batch holds. Clipping by the global
norm comes after that all-reduce and therefore sees the same gradient on every rank; the
optimizer step is then the same everywhere and the replicas stay identical without ever
exchanging parameters. Only rank 0 evaluates and writes files.

Run it:
    torchrun --standalone --nproc_per_node=2 -m llmref.distributed --steps 20 --out result.pt
    python -m llmref.distributed --steps 20 --out single.pt     # the same run in one process
or from Python, with every wait bounded and a one-line reason when it fails:
    launch(["--steps", "20", "--out", "result.pt"], nproc_per_node=2)
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llmref import corpus
from llmref.gpt import GPT, GPTConfig
from llmref.pretrain import TrainConfig, clip_grad_norm, evaluate, get_batch, lr_at, make_optimizer


def shard(batch_size: int, rank: int, world_size: int) -> slice:
    """The rows of a global batch of `batch_size` windows that rank `rank` of `world_size` trains on.

    Equal shards are required: DDP averages the W ranks' gradients with equal weights, which
    equals the mean over the whole batch only if every rank's mean is over as many windows.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    if batch_size % world_size:
        raise ValueError(f"the global batch of {batch_size} windows does not split evenly over "
                         f"{world_size} processes: choose a batch size that is a multiple of "
                         f"{world_size} (unequal shards would weigh some windows more than others)")
    per_rank = batch_size // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


def build_model(config: GPTConfig, seed: int) -> GPT:
    """A GPT initialised from `seed`: the same weights in every process that calls this
    (DDP also copies rank 0's weights to the others when it wraps the model)."""
    torch.manual_seed(seed)
    return GPT(config)


def replica_difference(model: nn.Module) -> float:
    """The largest |difference| between this rank's parameters and rank 0's (0.0 when they
    are bit-identical, as they should be after every DDP step); the same value on all ranks."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    difference = (flat - reference).abs().max()
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)
    return float(difference)


def train(model: nn.Module, train_tokens: torch.Tensor, config: TrainConfig, *,
          rank: int = 0, world_size: int = 1, all_reduce: bool = True) -> dict:
    """Train `model` (the same weights on every rank) for config.steps steps on its shard
    of each global batch; returns the history on every rank.

    history: "loss" (the global batch's mean loss at each step, before its update, the same
    on every rank) and "lr". With world_size == 1 this is the single-process run over the
    whole global batch. all_reduce=False trains every rank on its shard WITHOUT averaging
    gradients (W independent runs): a deliberate mistake, to show that the replicas drift
    apart and no longer match the single-process run; it needs no process group, so one
    process can play rank r of such a run (its "loss" is then its own shard's).
    """
    rows = shard(config.batch_size, rank, world_size)
    distributed = world_size > 1
    if distributed and all_reduce and not dist.is_initialized():
        raise RuntimeError(f"world_size={world_size} needs torch.distributed initialised first "
                           "(init_process_group); launch through torchrun and call setup()")
    device = next(model.parameters()).device
    net = model
    if distributed and all_reduce:
        # Wrapping broadcasts rank 0's parameters and registers hooks that all-reduce
        # (average) each bucket of gradients as soon as backward has produced it.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(model, config)  # the same parameter objects net.module holds
    generator = torch.Generator().manual_seed(config.seed)  # same seed everywhere: same global batches
    history = {"loss": [], "lr": []}
    model.train()
    for step in range(config.steps):
        lr = lr_at(step, max_lr=config.max_lr, min_lr=config.min_lr,
                   warmup_steps=config.warmup_steps, total_steps=config.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_tokens, config.batch_size, model.config.block_size, generator)
        x, y = x[rows].to(device), y[rows].to(device)  # this rank's windows of the global batch
        _, loss = net(x, y)  # mean over this rank's windows; DDP's average then gives the global mean
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: returns with every gradient already averaged over ranks
        if config.grad_clip:
            # After the all-reduce: the global norm is that of the global gradient, the same
            # on every rank, so every rank scales by the same factor.
            clip_grad_norm(model.parameters(), config.grad_clip)
        optimizer.step()
        logged = loss.detach().clone()
        if distributed and dist.is_initialized():  # for the record only: the shards' means' mean
            dist.all_reduce(logged)
            logged /= world_size
        history["loss"].append(float(logged))
        history["lr"].append(lr)
    return history


def setup(backend: str | None = None, timeout_s: float = 60.0) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT); returns (rank, world_size, device).

    Without torchrun's variables it is a single process: (0, 1, cpu). backend None picks
    "nccl" when this process has a GPU and "gloo" otherwise. Every wait (the rendezvous,
    any later collective) gives up after timeout_s seconds with a RuntimeError saying why,
    instead of hanging until someone notices.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device("cpu")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"RANK is set but {' and '.join(missing)} is not: launch with torchrun "
                           "(it sets all of them) rather than setting RANK by hand")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    device = torch.device("cpu")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend nccl needs a GPU in every process; use --backend gloo on CPUs")
        device = torch.device("cuda", local_rank)  # one GPU per process, chosen by its local rank
        torch.cuda.set_device(device)
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    started = time.monotonic()
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
    except Exception as error:  # DistStoreError, DistNetworkError, RuntimeError: all say "could not join"
        raise RuntimeError(
            f"rank {rank} of {world_size} could not join the process group at {where} within "
            f"{time.monotonic() - started:.0f} s (timeout {timeout_s:g} s): {type(error).__name__}: "
            f"{str(error).splitlines()[0].rstrip('.') if str(error) else ''}. Check that the address is the "
            "first node's, that its port is open, and that all nodes were started.") from error
    return rank, world_size, device


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m llmref.distributed",
        description="Pretrain a small GPT data-parallel under torchrun (one process without it). "
                    "Example: torchrun --standalone --nproc_per_node=2 -m llmref.distributed "
                    "--steps 20 --out result.pt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8, help="GLOBAL batch, windows per step over all ranks")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=32)
    parser.add_argument("--max-lr", type=float, default=3e-3)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    parser.add_argument("--out", default=None, help="rank 0 saves the weights and history here (torch.save)")
    parser.add_argument("--backend", default=None, choices=["gloo", "nccl"],
                        help="default: nccl with GPUs, gloo without")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds any process waits for the others (joining, all-reduce) before giving up")
    parser.add_argument("--no-all-reduce", action="store_true",
                        help="a deliberate mistake: each rank trains on its shard alone")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "block_size", "n_layer", "n_head", "n_embd", "seed"):
        if getattr(args, name) < (0 if name == "seed" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    return args


def configs(args: argparse.Namespace, vocab_size: int) -> tuple[GPTConfig, TrainConfig]:
    """The model and training configuration an argument list describes."""
    model = GPTConfig(vocab_size=vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                      n_head=args.n_head, n_embd=args.n_embd, dropout=0.0)
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size, max_lr=args.max_lr,
                               min_lr=args.max_lr / 10, warmup_steps=args.warmup_steps,
                               grad_clip=args.grad_clip, seed=args.seed)
    return model, train_config


def run(args: argparse.Namespace, rank: int = 0, world_size: int = 1,
        device: torch.device = torch.device("cpu")) -> dict:
    """Build the model, train it and return the result; only rank 0 evaluates and saves it."""
    data = corpus.load()
    train_tokens = torch.from_numpy(data.train).long()
    model_config, train_config = configs(args, data.tokenizer.vocab_size)
    model = build_model(model_config, args.seed).to(device)
    tick = time.perf_counter()
    history = train(model, train_tokens, train_config, rank=rank, world_size=world_size,
                    all_reduce=not args.no_all_reduce)
    seconds = time.perf_counter() - tick
    spread = replica_difference(model)  # a collective: every rank takes part
    result = None
    if rank == 0:
        held_out = torch.from_numpy(data.held_out[:4096]).long()  # a slice: this is a demonstration
        result = {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                  "model_config": asdict(model_config), "train_config": asdict(train_config),
                  "world_size": world_size, "all_reduce": not args.no_all_reduce,
                  "history": history, "replica_max_difference": spread, "train_seconds": seconds,
                  "held_out_loss": evaluate(model, held_out.to(device), model_config.block_size)}
        if args.out:
            torch.save(result, args.out)
    return result


class LaunchError(RuntimeError):
    """A torchrun job that failed; str() is one line saying why, .output has everything it printed."""

    def __init__(self, reason: str, output: str):
        super().__init__(reason)
        self.output = output


def torchrun_command(args: list[str], *, nproc_per_node: int = 2, nnodes: int = 1,
                     rdzv_endpoint: str | None = None, join_timeout: float = 60.0) -> list[str]:
    """The torchrun command line that runs `python -m llmref.distributed *args`.

    One node without an endpoint: --standalone (a rendezvous on this machine, on a free
    port). Otherwise the c10d rendezvous at rdzv_endpoint ("host:port" of the first node),
    waiting at most join_timeout seconds for all nnodes nodes to join and at most
    min(join_timeout, 60) s for any one reply of the rendezvous store (an unreachable
    endpoint fails after that); --timeout join_timeout bounds the workers' waits too.
    """
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"nproc_per_node and nnodes must be >= 1, got {nproc_per_node} and {nnodes}")
    if nnodes > 1 and rdzv_endpoint is None:
        raise ValueError(f"nnodes={nnodes}: the nodes must meet somewhere; pass "
                         "rdzv_endpoint='<first node's address>:<free port>'")
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    command += [f"--nnodes={nnodes}", f"--nproc_per_node={nproc_per_node}"]
    seconds = max(1, round(join_timeout))  # the rendezvous reads whole seconds
    if rdzv_endpoint is None:
        command += ["--standalone"]
    else:
        command += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", "--rdzv-id=llmref",
                    f"--rdzv-conf=join_timeout={seconds},read_timeout={min(seconds, 60)}"]
    return command + ["-m", "llmref.distributed", "--timeout", str(seconds), *args]


def failure_reason(output: str, *, nnodes: int = 1, rdzv_endpoint: str | None = None,
                   join_timeout: float = 60.0) -> str:
    """One line saying why a torchrun job failed, from what it printed (torch's own messages
    are tracebacks hundreds of lines long)."""
    own = re.findall(r"^llmref\.distributed: (.*)$", output, flags=re.M)
    if own:  # a worker explained itself
        return own[0]
    if "RendezvousTimeoutError" in output or "waiting for clients" in output:
        return (f"the rendezvous timed out: not all {nnodes} nodes joined within {join_timeout:g} s. "
                f"Start torchrun on every node with the same --nnodes and --rdzv-endpoint.")
    if re.search(r"RendezvousConnectionError|DistNetworkError|failed to connect", output):
        return (f"could not reach the rendezvous at {rdzv_endpoint} within {join_timeout:g} s. "
                "Use the first node's address as the others can reach it, and a port its "
                "firewall lets through.")
    errors = re.findall(r"^(?:\w+\.)*(\w*(?:Error|Exception)\b.*)$", output, flags=re.M)
    return errors[-1] if errors else "torchrun failed; its output says more"


def launch(args: list[str], *, nproc_per_node: int = 2, nnodes: int = 1,
           rdzv_endpoint: str | None = None, join_timeout: float = 60.0,
           timeout: float | None = None, threads: int = 1) -> str:
    """Run `torchrun ... -m llmref.distributed *args` (see torchrun_command) and return what
    it printed. Raises LaunchError with a one-line reason if it fails, or if it is still
    running after `timeout` seconds (default: join_timeout + 600); then every process it
    started is ended. threads: OMP_NUM_THREADS of each worker (processes x threads should
    not exceed the cores)."""
    command = torchrun_command(args, nproc_per_node=nproc_per_node, nnodes=nnodes,
                               rdzv_endpoint=rdzv_endpoint, join_timeout=join_timeout)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    # Its own process group: on a timeout, the workers go down with torchrun.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, start_new_session=True)
    limit = join_timeout + 600 if timeout is None else timeout
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise LaunchError(f"torchrun was still running after {limit:g} s and was stopped", output) from None
    if process.returncode != 0:
        reason = failure_reason(output, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint,
                                join_timeout=join_timeout)
        raise LaunchError(f"torchrun exited with status {process.returncode}: {reason}", output)
    return output


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        rank, world_size, device = setup(args.backend, args.timeout)
    except RuntimeError as error:
        print(f"llmref.distributed: {error}", file=sys.stderr, flush=True)
        return 2
    try:
        result = run(args, rank, world_size, device)
        if rank == 0:
            print(f"{world_size} process(es), {args.steps} steps: loss {result['history']['loss'][0]:.3f} -> "
                  f"{result['history']['loss'][-1]:.3f}, held-out {result['held_out_loss']:.3f}, "
                  f"replicas differ by at most {result['replica_max_difference']:.1e}"
                  + (f"; saved {args.out}" if args.out else ""), flush=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
