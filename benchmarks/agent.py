"""Fine-tune the course GPT into a tiny tool-using agent, then measure it on held-out questions.

    .venv/bin/python benchmarks/agent.py            # about 10 minutes on a shared 2-core CPU

Supervised fine-tuning (all weights) of the Part III GPT (llmref.course_model.load()) on
episodes of llmref.agent_data, with llmref.finetune.sft_loss: the loss counts only the
model's own lines (CALL and A: lines), never the question or the tool's RESULT. Every
training question appears twice, in the tool format and in the direct format
(`Q: ... (no tools)` then `A: ...`), so that one model, trained on the same questions
as often in each format, can be asked both ways.

Then, on held-out questions (never trained on; for `sig`, functions never seen), the
agent is the fine-tuned model inside the loop of exercise 19_agent (llmref.agent.run_agent,
greedy lines, the registry llmref.agent_data.TOOLS, at most MAX_STEPS model calls), and
the baseline is the same model answering the direct question greedily. Both are scored by
exact match of the answer. Also recorded: how often the agent's run ends on a malformed
line or the step limit, and whether its first call is the right one.

Writes benchmarks/results/agent.json (configuration, training curve, accuracies per kind,
every held-out question with both answers, a few transcripts, the machine) and
benchmarks/results/agent_gpt.pt (the fine-tuned weights), which the agents chapter and
the exercise's last cell load.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from llmref import agent, agent_data, course_model, pretrain
from llmref.finetune import sft_loss

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
THREADS = 1            # one thread: the machine is shared, and the replay test uses one too
TRAIN = dict(steps=1000, batch_size=32, max_lr=1e-3, min_lr=1e-4, warmup_steps=50,
             weight_decay=0.0, grad_clip=1.0, seed=0, precision="bfloat16")
EVAL_PER_KIND = 50     # held-out questions of each kind
EVAL_SEED = 1
MAX_STEPS = 4          # model calls per agent run (the longest right episode needs 3)
PAD_CHAR = " "         # after an episode's end; never in the loss


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def training_episodes(n_questions: int, seed: int) -> list[str]:
    """Each of n_questions training questions in both formats, shuffled."""
    questions = agent_data.make_questions(n_questions, seed, "train")
    episodes = [agent_data.tool_episode(q) for q in questions]
    episodes += [agent_data.direct_episode(q) for q in questions]
    random.Random(seed).shuffle(episodes)
    return episodes


def batch(episodes: list[str], tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, loss_mask), (B, T) with T the longest episode's length - 1."""
    encoded = [agent_data.encode_episode(e, tokenizer) for e in episodes]
    T = max(len(x) for x, _, _ in encoded)
    pad = int(tokenizer.encode(PAD_CHAR)[0])
    inputs = np.full((len(episodes), T), pad, dtype=np.int64)
    targets = np.full((len(episodes), T), pad, dtype=np.int64)
    mask = np.zeros((len(episodes), T), dtype=bool)
    for i, (x, y, m) in enumerate(encoded):
        inputs[i, :len(x)], targets[i, :len(y)], mask[i, :len(m)] = x, y, m
    return torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(mask)


def finetune(model, tokenizer, config: dict) -> dict:
    steps, B = config["steps"], config["batch_size"]
    episodes = training_episodes(steps * B // 2, config["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["max_lr"], betas=(0.9, 0.99),
                                  weight_decay=config["weight_decay"])
    losses = []
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = pretrain.lr_at(step, max_lr=config["max_lr"], min_lr=config["min_lr"],
                                         warmup_steps=config["warmup_steps"], total_steps=steps)
        inputs, targets, mask = batch(episodes[step * B:(step + 1) * B], tokenizer)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config["precision"] == "bfloat16"):
            logits, _ = model(inputs)
        loss = sft_loss(logits.float(), targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()
        losses.append(round(loss.item(), 4))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f} s",
                  flush=True)
    model.eval()
    return {"loss": losses, "seconds": round(time.perf_counter() - start, 2),
            "episodes": len(episodes)}


@torch.no_grad()
def held_out_loss(model, tokenizer, questions) -> dict:
    """sft_loss on held-out episodes, per format: how well the model's lines are predicted."""
    out = {}
    for name, render in (("tools", agent_data.tool_episode), ("direct", agent_data.direct_episode)):
        inputs, targets, mask = batch([render(q) for q in questions], tokenizer)
        out[name] = round(sft_loss(model(inputs)[0], targets, mask).item(), 4)
    return out


def evaluate(model, tokenizer, questions) -> list[dict]:
    def line(transcript: str) -> str:
        return agent_data.gpt_next_line(model, tokenizer, transcript)

    records = []
    for q in questions:
        run = agent.run_agent(line, q.text, agent_data.TOOLS, max_steps=MAX_STEPS)
        first = run.transcript.split("\n")[1]
        direct = line(agent_data.QUESTION + q.text + agent_data.NO_TOOLS + "\n")
        direct_answer = direct[len(agent_data.ANSWER):] if direct.startswith(agent_data.ANSWER) else None
        records.append({"kind": q.kind, "question": q.text, "answer": q.answer,
                        "agent_answer": run.answer, "status": run.status, "steps": run.steps,
                        "first_call_right": first == agent_data.call_line(*q.calls[0]),
                        "transcript": run.transcript,
                        "direct_line": direct, "direct_answer": direct_answer})
    return records


def summarise(records: list[dict]) -> dict:
    def share(rows, key):
        return round(sum(key(r) for r in rows) / len(rows), 4) if rows else None

    out = {}
    for kind in ("all",) + agent_data.KINDS:
        rows = [r for r in records if kind == "all" or r["kind"] == kind]
        out[kind] = {
            "n": len(rows),
            "agent_accuracy": share(rows, lambda r: r["agent_answer"] == r["answer"]),
            "direct_accuracy": share(rows, lambda r: r["direct_answer"] == r["answer"]),
            "malformed_rate": share(rows, lambda r: r["status"] == "malformed"),
            "step_limit_rate": share(rows, lambda r: r["status"] == "step_limit"),
            "first_call_right": share(rows, lambda r: r["first_call_right"]),
            "direct_format_ok": share(rows, lambda r: r["direct_answer"] is not None),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=TRAIN["steps"])
    parser.add_argument("--per-kind", type=int, default=EVAL_PER_KIND)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--out", type=Path, default=RESULTS / "agent.json")
    parser.add_argument("--checkpoint", type=Path, default=agent_data.AGENT_CHECKPOINT)
    args = parser.parse_args()
    config = dict(TRAIN, steps=args.steps)
    torch.set_num_threads(args.threads)
    torch.manual_seed(config["seed"])
    wall = time.perf_counter()

    base = course_model.load()
    model, tokenizer = base.model, base.tokenizer
    eval_questions = [q for kind in agent_data.KINDS for q in
                      agent_data.make_questions(args.per_kind, EVAL_SEED, "held_out", kinds=(kind,))]
    before = {"held_out_loss": held_out_loss(model, tokenizer, eval_questions),
              "summary": summarise(evaluate(model, tokenizer, eval_questions[::args.per_kind // 5 or 1]))}
    print("before fine-tuning:", before["held_out_loss"], before["summary"]["all"], flush=True)

    history = finetune(model, tokenizer, config)
    torch.save({"model_config": asdict(model.config), "model": model.state_dict(),
                "tokenizer_chars": "".join(tokenizer.chars)}, args.checkpoint)
    # What the book and the tests load is the saved file: measure that, on one thread as the
    # test that replays recorded transcripts does (another thread count sums in another order).
    torch.set_num_threads(1)
    model, tokenizer = agent_data.load_agent_model(args.checkpoint)
    start = time.perf_counter()
    records = evaluate(model, tokenizer, eval_questions)
    eval_seconds = time.perf_counter() - start
    train_records = evaluate(model, tokenizer,
                             agent_data.make_questions(10, EVAL_SEED, "train", kinds=("mul",))
                             + agent_data.make_questions(10, EVAL_SEED, "train", kinds=("sig",)))
    summary = summarise(records)
    functions = agent_data.signature_functions()
    result = {
        "what": ("the course GPT fine-tuned (all weights, sft_loss on the model's own lines) on "
                 "tool episodes and direct episodes of the same training questions; measured on "
                 "held-out questions: the agent (model + llmref.agent.run_agent + TOOLS) against "
                 "the same model answering directly, exact match"),
        "command": ".venv/bin/python benchmarks/agent.py",
        "train": config,
        "max_steps": MAX_STEPS,
        "eval": {"per_kind": args.per_kind, "seed": EVAL_SEED, "seconds": round(eval_seconds, 2)},
        "data": {"sig_functions": len(functions),
                 "sig_functions_held_out": sum(agent_data.held_out(f) for f in functions),
                 "held_out_every": agent_data.HELD_OUT_EVERY},
        "history": history,
        "held_out_loss_before": before["held_out_loss"],
        "summary_before": before["summary"],
        "held_out_loss_after": held_out_loss(model, tokenizer, eval_questions),
        "summary": summary,
        "train_summary": summarise(train_records),
        "checkpoint": {"path": (str(args.checkpoint.resolve().relative_to(ROOT))
                                if args.checkpoint.resolve().is_relative_to(ROOT) else str(args.checkpoint)),
                       "bytes": args.checkpoint.stat().st_size},
        "records": records,
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "machine": machine(),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items()}, indent=1))
    print(f"wrote {args.out} and {args.checkpoint} in {result['wall_seconds']} s")


if __name__ == "__main__":
    main()
