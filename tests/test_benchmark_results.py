"""The committed Part III benchmark results: well-formed, consistent with themselves, and
the committed checkpoint really has the held-out loss the result records.

Speed is measured by the benchmark scripts, never here; these tests check the record."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmref import corpus, pretrain
from llmref.gpt import GPT, GPTConfig, count_parameters

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads((RESULTS / "pretrain.json").read_text())


def test_the_pretraining_result_is_well_formed(result):
    for key in ("target", "model", "parameters", "train", "corpus", "steps", "tokens",
                "train_seconds", "wall_seconds", "tokens_per_second", "final", "checkpoint",
                "evals", "train_loss", "samples", "machine", "seconds_per_step_by_threads"):
        assert key in result, key
    config = GPTConfig(**result["model"])
    assert count_parameters(config) == result["parameters"]
    assert result["tokens"] == result["steps"] * result["train"]["batch_size"] * config.block_size
    assert result["tokens_per_second"] == pytest.approx(result["tokens"] / result["train_seconds"], rel=1e-3)
    assert result["train_seconds"] <= result["wall_seconds"]
    evals = result["evals"]
    assert len(evals) >= 5, "the loss curve needs several held-out evaluations"
    assert [e["step"] for e in evals] == sorted(e["step"] for e in evals)
    assert evals[-1]["step"] == result["steps"]
    assert [e["train_seconds"] for e in evals] == sorted(e["train_seconds"] for e in evals)
    for e in evals:
        assert e["bits_per_char"] == pytest.approx(e["nats_per_char"] / math.log(2), abs=1e-3)
    assert result["final"]["nats_per_char"] == evals[-1]["nats_per_char"]
    # The target is stated and judged from the evaluations, not asserted by hand.
    reached = [e for e in evals if e["nats_per_char"] <= result["target"]["nats_per_char"]]
    assert result["target"]["met"] == bool(reached and reached[0]["train_seconds"]
                                           <= result["target"]["within_train_seconds"])
    assert result["corpus"]["fingerprint"] == corpus.fingerprint(), \
        "the corpus changed (another Python version?): rerun benchmarks/pretrain.py"
    assert all(s["text"].startswith("The ") for s in result["samples"])


def test_the_committed_checkpoint_has_the_recorded_held_out_loss(result):
    saved = torch.load(ROOT / result["checkpoint"]["path"])
    assert saved["model_config"] == result["model"]
    data = corpus.load()
    assert saved["tokenizer_chars"] == "".join(data.tokenizer.chars)
    model = GPT(GPTConfig(**saved["model_config"]))
    pretrain.load_state(model, saved["model"])
    loss = pretrain.evaluate(model, torch.from_numpy(data.held_out), model.config.block_size)
    # float32 sums over ~46k characters in a different batch order: ~1e-6 relative.
    assert loss == pytest.approx(result["checkpoint"]["held_out_nats_per_char"], abs=1e-4)
    assert loss == pytest.approx(result["final"]["nats_per_char"], abs=1e-3)


def test_the_scaling_sweep_is_well_formed():
    sweep = json.loads((RESULTS / "scaling.json").read_text())
    runs = sweep["runs"]
    assert len(runs) >= 4, "the scaling chapter needs at least four sizes"
    assert [r["n_embd"] for r in runs] == sorted(r["n_embd"] for r in runs)
    tokens_per_step = sweep["train"]["batch_size"] * sweep["model"]["block_size"]
    for r in runs:
        config = GPTConfig(vocab_size=corpus.load().tokenizer.vocab_size, n_embd=r["n_embd"], **sweep["model"])
        assert count_parameters(config) == r["parameters"]
        for p in r["points"]:
            assert p["tokens"] == p["step"] * tokens_per_step
            assert p["flops"] == 6 * r["parameters"] * p["tokens"]
        assert r["points"][-1]["step"] == sweep["train"]["steps"]
