"""Does the course GPT learn to copy from its context when its training text contains copies?

    .venv/bin/python benchmarks/induction.py      # about 9 minutes (three runs of 1000 steps, one thread)

The course GPT (benchmarks/pretrain.py) does not do induction: on a random string written
twice, its loss on the second copy is no lower than on the first (book/04-applications/
05-prompting.md measures it). This benchmark continues its training for STEPS steps
with llmref.pretrain's optimizer, schedule and clipping, on windows of the Part III training
text of which a share contain a repeated span: a stretch of the window copied, unchanged, to
a later place in the same 128-character window. Every EVAL_EVERY steps it measures

- the copy test: the per-position loss on PROBE_STRINGS random strings of PROBE_LENGTH
  characters, each written twice. The strings are drawn uniformly from the corpus alphabet
  and never trained on, so a lower loss on the second copy can only come from copying
  whatever the context holds, which is what induction means (Olsson et al., 2022);
- the held-out loss on the normal split (llmref.pretrain.evaluate), to show what the
  change costs on ordinary text.

Runs (each one row of RUNS):
- "repeats": the course GPT, continued on the mixture with repeated spans;
- "control": the course GPT, continued for as many steps on plain windows (no repeats), so
  that what continued training alone does is not credited to the repeats;
- "scratch": a fresh 2-layer GPT of the same width trained from scratch on the mixture.

Writes benchmarks/results/induction.json (curves, per-position losses before and after,
the verdict, settings, seconds, machine), which the prompting chapter reads. The verdict
(INDUCTION_MARGIN) asks for a second copy at least a nat per character easier than the first;
with these settings no run reaches it, and tests/test_benchmark_induction.py checks the
result says so, since the chapter's account depends on it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llmref import course_model, pretrain
from llmref.gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "induction.json"
THREADS = 1               # on 2 shared cores one thread wastes less; pretrain.py used 2 on an idle machine
STEPS = 1000
EVAL_EVERY = 50             # steps between copy tests (cheap: 64 strings of 100 characters)
HELD_OUT_EVERY = 200        # steps between held-out evaluations (the whole split: 46k characters)
REPEAT_SHARE = 1.0          # share of training windows that get a repeated span
SPAN = (16, 56)             # length of a repeated span, uniform in [SPAN[0], SPAN[1]]
PROBE_STRINGS = 64
PROBE_LENGTH = 50           # written twice: 100 characters, inside the 128 of the context
PROBE_SEED = 12345          # the random strings of the copy test (the same for every run)
# Continued training of a model whose schedule ended at min_lr 3e-4: a short warm-up back to
# the original peak, then cosine decay; batch 12 and bfloat16 as pretrain.py. (A peak of 1e-3
# for 300 steps left the second copy's loss within 0.1 nats of the first's.)
CONTINUE = pretrain.TrainConfig(steps=STEPS, batch_size=12, max_lr=3e-3, min_lr=3e-4,
                                warmup_steps=30, weight_decay=0.1, betas=(0.9, 0.99),
                                grad_clip=1.0, eval_every=EVAL_EVERY, seed=0, precision="bfloat16")
# The verdict: induction if, after training, the second copy of the random strings is at least
# this much easier than the first (nats/char). Perfect copying would bring it near 0 nats/char
# from the first copy's ~8; a tenth of that is far beyond the noise of 64 strings.
INDUCTION_MARGIN = 1.0
SCRATCH_MODEL = dict(n_layer=2, n_head=4, n_embd=192, dropout=0.0, bias=False)
SCRATCH = replace(CONTINUE, max_lr=3e-3, min_lr=3e-4, warmup_steps=50)
RUNS = {
    "repeats": dict(start="course GPT", repeat_share=REPEAT_SHARE, train=CONTINUE),
    "control": dict(start="course GPT", repeat_share=0.0, train=CONTINUE),
    "scratch": dict(start="fresh 2-layer GPT", repeat_share=REPEAT_SHARE, train=SCRATCH),
}


def with_repeats(x: torch.Tensor, y: torch.Tensor, share: float, span: tuple[int, int],
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy a span of each chosen window to a later place in the same window.

    x, y: a batch from pretrain.get_batch (y is x one token ahead). The window of T + 1
    tokens they come from is edited and cut again, so y stays x shifted by one. In each
    chosen row a span of L tokens (L uniform in span) starting at a is copied over the
    tokens at b, with a + L <= b and b + L <= T + 1: the copy follows its source.
    """
    window = torch.cat([x, y[:, -1:]], dim=1).clone()
    rows, length = window.shape
    chosen = torch.rand(rows, generator=generator) < share
    for r in torch.nonzero(chosen).flatten().tolist():
        L = int(torch.randint(span[0], span[1] + 1, (1,), generator=generator))
        a = int(torch.randint(0, length - 2 * L + 1, (1,), generator=generator))
        b = int(torch.randint(a + L, length - L + 1, (1,), generator=generator))
        window[r, b:b + L] = window[r, a:a + L]
    return window[:, :-1], window[:, 1:]


def probe_strings(alphabet: np.ndarray, count: int = PROBE_STRINGS, length: int = PROBE_LENGTH,
                  seed: int = PROBE_SEED) -> np.ndarray:
    """count random strings of `length` characters, uniform over `alphabet`, each written twice."""
    first = np.random.default_rng(seed).choice(alphabet, size=(count, length))
    return np.concatenate([first, first], axis=1)


@torch.no_grad()
def copy_test(model: GPT, ids: np.ndarray, length: int = PROBE_LENGTH) -> dict:
    """Per-position loss (mean over strings) and the first- and second-copy means.

    Position t predicts character t + 1. The first copy's mean is over positions 0 .. length - 2
    (characters 1 .. length - 1: the first character has no context); the second copy's over
    positions length .. 2 length - 2, leaving out position length - 1, which predicts the
    second copy's first character, which nothing announces.
    """
    mode = model.training
    model.eval()
    x = torch.as_tensor(ids, dtype=torch.long)
    logits = model(x[:, :-1])[0]
    loss = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none").numpy()
    model.train(mode)
    return {"per_position": [round(float(v), 4) for v in loss.mean(axis=0)],
            "first_copy": round(float(loss[:, :length - 1].mean()), 4),
            "second_copy": round(float(loss[:, length:].mean()), 4)}


def text_passages(held_out: np.ndarray, count: int = PROBE_STRINGS, length: int = PROBE_LENGTH,
                  seed: int = PROBE_SEED) -> np.ndarray:
    """count held-out passages of `length` characters, each written twice: copying on familiar text."""
    starts = np.random.default_rng(seed + 1).integers(0, len(held_out) - length, count)
    first = np.stack([held_out[s:s + length] for s in starts])
    return np.concatenate([first, first], axis=1)


def machine() -> dict:
    cpu, flags = "unknown", set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line for line in lines if line.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "avx512_bf16": "avx512_bf16" in flags, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()[0],
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}


def train_run(name: str, run: dict, cm, probe: np.ndarray, passages: np.ndarray,
              held_out: torch.Tensor, train_tokens: torch.Tensor) -> dict:
    """One run of RUNS: train, evaluating the copy test and the held-out loss as it goes."""
    config: pretrain.TrainConfig = run["train"]
    torch.manual_seed(config.seed)
    if run["start"] == "course GPT":
        model = GPT(cm.model.config)
        model.load_state_dict(cm.model.state_dict())
    else:
        model = GPT(GPTConfig(vocab_size=cm.tokenizer.vocab_size,
                              block_size=cm.model.config.block_size, **SCRATCH_MODEL))
    block = model.config.block_size
    optimizer = pretrain.make_optimizer(model, config)
    batches = torch.Generator().manual_seed(config.seed)      # which windows
    spans = torch.Generator().manual_seed(config.seed + 1)    # which spans are repeated
    curve = []

    def record(step: int, seconds: float) -> dict:
        test = copy_test(model, probe)
        text = copy_test(model, passages)
        entry = {"step": step, "train_seconds": round(seconds, 2),
                 "first_copy": test["first_copy"], "second_copy": test["second_copy"],
                 "text_first_copy": text["first_copy"], "text_second_copy": text["second_copy"]}
        if step % HELD_OUT_EVERY == 0 or step == config.steps:
            entry["held_out"] = round(pretrain.evaluate(model, held_out, block), 4)
        curve.append(entry)
        print(f"{name:8s} step {step:4d} {seconds:6.1f} s  copy test: first {entry['first_copy']:.3f} "
              f"second {entry['second_copy']:.3f}  text: {entry['text_first_copy']:.3f} "
              f"{entry['text_second_copy']:.3f}  held-out {entry.get('held_out', float('nan')):.4f}",
              flush=True)
        return test

    before = record(0, 0.0)
    seconds = 0.0
    model.train()
    tick = time.perf_counter()
    losses = []
    for step in range(config.steps):
        lr = pretrain.lr_at(step, max_lr=config.max_lr, min_lr=config.min_lr,
                            warmup_steps=config.warmup_steps, total_steps=config.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = pretrain.get_batch(train_tokens, config.batch_size, block, batches)
        if run["repeat_share"]:
            x, y = with_repeats(x, y, run["repeat_share"], SPAN, spans)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bfloat16"):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        pretrain.clip_grad_norm(model.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(round(loss.item(), 4))
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            seconds += time.perf_counter() - tick
            after = record(step + 1, seconds)
            model.train()
            tick = time.perf_counter()
    return {"start": run["start"], "model": asdict(model.config),
            "parameters": sum(p.numel() for p in model.parameters()),
            "repeat_share": run["repeat_share"], "train": asdict(config),
            "train_seconds": round(seconds, 2), "train_loss": losses, "curve": curve,
            "before": before, "after": after}


def outcome(runs: dict) -> dict:
    """The verdict on each run: the copy gap (second minus first copy) before and after, and
    whether it fell below -INDUCTION_MARGIN."""
    verdict = {}
    for name, run in runs.items():
        before = run["before"]["second_copy"] - run["before"]["first_copy"]
        after = run["after"]["second_copy"] - run["after"]["first_copy"]
        verdict[name] = {"gap_before": round(before, 4), "gap_after": round(after, 4),
                         "induction": bool(after <= -INDUCTION_MARGIN)}
    return {"margin": INDUCTION_MARGIN, "runs": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--steps", type=int, default=STEPS, help="steps per run (the schedule ends there)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    begin = time.perf_counter()
    cm = course_model.load()
    text = cm.tokenizer.decode(cm.data.train)
    alphabet = np.array([cm.tokenizer.encode(ch)[0] for ch in sorted(set(text) - {"\n"})])
    probe = probe_strings(alphabet)
    passages = text_passages(cm.data.held_out)
    train_tokens = torch.from_numpy(cm.data.train)
    held_out = torch.from_numpy(cm.data.held_out)
    chosen = {name: {**RUNS[name], "train": replace(RUNS[name]["train"], steps=args.steps)}
              for name in args.runs}
    runs = {name: train_run(name, run, cm, probe, passages, held_out, train_tokens) for name, run in chosen.items()}
    result = {
        "command": ".venv/bin/python benchmarks/induction.py",
        "what": ("continued training of the course GPT on windows with repeated spans; copy test "
                 "on random strings written twice; held-out loss on the Part III split"),
        "settings": {"repeat_share": REPEAT_SHARE, "span": list(SPAN), "eval_every": EVAL_EVERY,
                     "held_out_every": HELD_OUT_EVERY,
                     "probe_strings": PROBE_STRINGS, "probe_length": PROBE_LENGTH,
                     "probe_seed": PROBE_SEED, "alphabet_size": len(alphabet),
                     "block_size": cm.model.config.block_size},
        "course_model_held_out": cm.held_out_nats_per_char,
        "runs": runs,
        "outcome": outcome(runs),
        "seconds": round(time.perf_counter() - begin, 1),
        "machine": machine(),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
