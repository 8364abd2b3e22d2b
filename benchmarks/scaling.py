"""A small scaling sweep: the course GPT at several widths, the same data, steps and schedule.

    .venv/bin/python benchmarks/scaling.py            # about 7 minutes on 2 cores

Every model has 4 layers and a context of 128 characters and sees the same batches
(same seed) for the same number of steps; only the width n_embd changes. The held-out
loss is recorded along the way, so that each run gives a curve of loss against training
compute, FLOPs ~ 6 * N * tokens (N parameters; forward 2N and backward 4N per token).
Writes benchmarks/results/scaling.json, which book/03-models/05-scaling.md plots.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from llmref import corpus, pretrain
from llmref.gpt import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (32, 64, 96, 128, 192)
MODEL = dict(block_size=128, n_layer=4, n_head=4, dropout=0.0, bias=False)
# The pretraining benchmark's recipe (book/03-models/04-pretraining.md), with fewer steps.
TRAIN = pretrain.TrainConfig(steps=3000, batch_size=12, max_lr=4e-3, min_lr=4e-4,
                             warmup_steps=100, eval_every=250, seed=0, precision="bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scaling.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = corpus.load()
    train_tokens, held_out = torch.from_numpy(data.train), torch.from_numpy(data.held_out)
    runs = []
    for width in args.widths:
        config = GPTConfig(vocab_size=data.tokenizer.vocab_size, n_embd=width, **MODEL)
        torch.manual_seed(TRAIN.seed)
        model = GPT(config)
        n = sum(p.numel() for p in model.parameters())
        tokens_per_step = TRAIN.batch_size * config.block_size
        start = time.perf_counter()
        history = pretrain.train(model, train_tokens, TRAIN, held_out=held_out, progress=True)
        run = {"n_embd": width, "parameters": n, "train_seconds": round(history["train_seconds"], 1),
               "points": [{"step": s, "tokens": s * tokens_per_step, "flops": 6 * n * s * tokens_per_step,
                           "nats_per_char": round(l, 4)}
                          for s, l in zip(history["eval_step"], history["eval_loss"])]}
        runs.append(run)
        print(f"n_embd {width:4d}: {n:>9,} parameters, held-out {run['points'][-1]['nats_per_char']:.4f} "
              f"nats/char, {time.perf_counter() - start:.0f} s", flush=True)
    args.out.write_text(json.dumps({
        "what": "course GPT, 4 layers, context 128, widths swept; same data, steps and schedule",
        "model": MODEL, "train": asdict(TRAIN), "corpus_fingerprint": data.fingerprint,
        "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
