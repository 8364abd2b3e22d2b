"""The GPT trained in Part III, as every later chapter and exercise loads it.

benchmarks/pretrain.py trains it and writes benchmarks/results/pretrain.json (its
configuration, the corpus fingerprint, the held-out loss) next to the checkpoint
pretrain_gpt.pt. Part IV starts from this model instead of training its own, so that the
numbers it reports (sampling, caching, retrieval, fine-tuning, export) are about the model
the learner has already met.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llmref import corpus, pretrain
from llmref.gpt import GPT, GPTConfig

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
RECORD = RESULTS / "pretrain.json"


@dataclass(frozen=True)
class CourseModel:
    model: GPT                      # in eval mode, float32, on the CPU
    tokenizer: corpus.CharTokenizer
    data: corpus.Data               # the Part III split the model was trained on
    held_out_nats_per_char: float   # as recorded when the checkpoint was written


def record(path: Path = RECORD) -> dict:
    """The benchmark's record of the checkpoint (configuration, corpus, losses)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: it is committed with the course; restore it "
                                "with `git checkout benchmarks/results` or retrain with "
                                "`.venv/bin/python benchmarks/pretrain.py`")
    return json.loads(path.read_text())


def load(path: Path = RECORD) -> CourseModel:
    """Load the course GPT and the data it was trained on, checking they belong together."""
    rec = record(path)
    data = corpus.load()
    if data.fingerprint != rec["corpus"]["fingerprint"]:
        raise ValueError(f"the corpus on this machine (fingerprint {data.fingerprint}) is not the "
                         f"one the checkpoint was trained on ({rec['corpus']['fingerprint']}): "
                         "the Python standard library's pydoc topics differ; retrain with "
                         "`.venv/bin/python benchmarks/pretrain.py`")
    model = GPT(GPTConfig(**rec["model"]))
    checkpoint = path.parent.parent.parent / rec["checkpoint"]["path"]
    pretrain.load_state(model, torch.load(checkpoint, weights_only=True)["model"])
    model.eval()
    return CourseModel(model, data.tokenizer, data, rec["checkpoint"]["held_out_nats_per_char"])
