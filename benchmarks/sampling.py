"""Text the course GPT writes under each decoding strategy, and how often greedy decoding repeats.

    .venv/bin/python benchmarks/sampling.py      # about a minute on an idle 2-core CPU

Writes benchmarks/results/sampling.json, which the sampling chapter
(book/04-applications/01-sampling.md) reads: generating a few thousand characters takes
longer than a chapter may spend executing. Two parts:

- widget: one continuation of PROMPT per strategy and setting (temperature, top-k, top-p,
  greedy with a repetition penalty), each from the same seed;
- repetition: continuations of several held-out prompts under four strategies, with the share
  of their 8-character windows that already occurred earlier in the same continuation (0 for
  text that never repeats itself, near 1 for a loop).

Decoding uses llmref.sampling (NumPy) on the logits of llmref.course_model's GPT; every
forward pass sees the last 128 characters (the model's context).
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from llmref import course_model, sampling

RESULT = Path(__file__).resolve().parent / "results" / "sampling.json"
PROMPT = 'The "for" statement '
NEW_CHARS = 200
SEED = 0
PENALTY_WINDOW = 32  # the repetition penalty looks at the last 32 characters (see the chapter)
NGRAM = 8
WIDGET = {
    "temperature": [0.2, 0.5, 0.8, 1.0, 1.3, 1.8],
    "top-k": [1, 3, 10, 30, 103],
    "top-p": [0.1, 0.5, 0.8, 0.9, 0.95, 1.0],
    "repetition penalty": [1.0, 1.1, 1.2, 1.3, 1.5, 2.0],
}
REPETITION = {
    "greedy": dict(greedy=True),
    "greedy + penalty 1.3": dict(greedy=True, penalty=1.3),
    "T = 0.8, top-p 0.9": dict(temperature=0.8, top_p=0.9),
    "T = 1": dict(temperature=1.0),
}
N_PROMPTS = 8
PROMPT_CHARS = 48


def setting_for(strategy: str, value) -> dict:
    """The decoding setting a widget frame shows: one knob turned, the others neutral."""
    if strategy == "temperature":
        return dict(temperature=value)
    if strategy == "top-k":
        return dict(top_k=value)
    if strategy == "top-p":
        return dict(top_p=value)
    return dict(greedy=True, penalty=value)


def next_token(logits: np.ndarray, history: np.ndarray, setting: dict, rng) -> int:
    """One decoding step for one row under `setting` (a dict of the knobs above)."""
    if setting.get("penalty", 1.0) != 1.0:
        logits = sampling.apply_repetition_penalty(logits, history[-PENALTY_WINDOW:], setting["penalty"])
    if setting.get("greedy"):
        return int(sampling.greedy(logits))
    return int(sampling.sample(logits, rng, temperature=setting.get("temperature", 1.0),
                               top_k=setting.get("top_k"), top_p=setting.get("top_p")))


@torch.no_grad()
def generate(model, prompts: list[np.ndarray], settings: list[dict], new_tokens: int, seed: int):
    """Continue each prompt (all of one length) under its own setting; one generator per row."""
    rngs = [np.random.default_rng([seed, i]) for i in range(len(prompts))]
    x = torch.as_tensor(np.stack(prompts), dtype=torch.long)
    block = model.config.block_size
    for _ in range(new_tokens):
        logits = model(x[:, -block:])[0][:, -1].double().numpy()
        step = [next_token(logits[b], x[b].numpy(), s, rngs[b]) for b, s in enumerate(settings)]
        x = torch.cat([x, torch.tensor(step)[:, None]], dim=1)
    return x[:, len(prompts[0]):].numpy()


def repeated_share(text: str, n: int = NGRAM) -> float:
    """The share of the text's n-character windows that already occurred earlier in it."""
    seen, repeats, total = set(), 0, 0
    for i in range(len(text) - n + 1):
        window = text[i:i + n]
        repeats += window in seen
        total += 1
        seen.add(window)
    return repeats / max(total, 1)


def held_out_prompts(cm, count: int, length: int, seed: int) -> list[np.ndarray]:
    """Prompts cut from held-out text at line starts, so that each begins a line."""
    text = cm.tokenizer.decode(cm.data.held_out)
    starts = [i + 1 for i in range(len(text) - length - 1) if text[i] == "\n" and text[i + 1].isalpha()]
    chosen = np.random.default_rng(seed).choice(len(starts), size=count, replace=False)
    return [cm.tokenizer.encode(text[starts[c]:starts[c] + length]) for c in sorted(chosen)]


def main() -> None:
    torch.set_num_threads(1)  # one row of 128 characters gains nothing from more threads
    begin = time.perf_counter()
    cm = course_model.load()
    tok = cm.tokenizer

    rows = [(strategy, value) for strategy, values in WIDGET.items() for value in values]
    prompt = tok.encode(PROMPT)
    settings = [setting_for(s, v) for s, v in rows]
    prompts = held_out_prompts(cm, N_PROMPTS, PROMPT_CHARS, SEED)
    for prompt_ids in prompts:
        settings += list(REPETITION.values())
    # Two batches: the prompts differ in length.
    widget_out = generate(cm.model, [prompt] * len(rows), settings[:len(rows)], NEW_CHARS, SEED)
    study_prompts = [p for p in prompts for _ in REPETITION]
    study_out = generate(cm.model, study_prompts, settings[len(rows):], NEW_CHARS, SEED + 1)

    widget = {s: [] for s in WIDGET}
    for (strategy, value), ids in zip(rows, widget_out):
        widget[strategy].append({"value": value, "text": tok.decode(ids)})
    repetition = {name: {"samples": [], "repeated_share": []} for name in REPETITION}
    for i, ids in enumerate(study_out):
        name = list(REPETITION)[i % len(REPETITION)]
        text = tok.decode(ids)
        repetition[name]["samples"].append(text)
        repetition[name]["repeated_share"].append(round(repeated_share(text), 4))
    for entry in repetition.values():
        entry["mean_repeated_share"] = round(float(np.mean(entry["repeated_share"])), 4)

    result = {
        "command": ".venv/bin/python benchmarks/sampling.py",
        "prompt": PROMPT, "new_chars": NEW_CHARS, "seed": SEED, "penalty_window": PENALTY_WINDOW,
        "ngram": NGRAM, "settings": {name: s for name, s in REPETITION.items()},
        "study_prompts": [tok.decode(p) for p in prompts],
        "widget": widget, "repetition": repetition,
        "seconds": round(time.perf_counter() - begin, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.machine()},
    }
    RESULT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    for name, entry in repetition.items():
        print(f"{name:24s} repeated {NGRAM}-grams: {entry['mean_repeated_share']:.3f}")
    print(f"wrote {RESULT} in {result['seconds']} s")


if __name__ == "__main__":
    main()
