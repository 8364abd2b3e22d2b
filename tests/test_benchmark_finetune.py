"""benchmarks/results/finetune.json (written by benchmarks/finetune.py) meets the targets the
fine-tuning chapter states and is consistent with itself and with llmref."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "finetune.json"


@pytest.fixture(scope="module")
def result() -> dict:
    assert RESULT.exists(), "run `.venv/bin/python benchmarks/finetune.py` and commit its result"
    return json.loads(RESULT.read_text())


def test_sft_teaches_the_format(result):
    losses = result["gpt"]["sft"]["held_out_nats_per_char"]
    # The template costs the pretrained model, and SFT recovers most of it.
    assert losses["pretrained_with_template"] > losses["pretrained_plain_continuation"]
    gap = losses["pretrained_with_template"] - losses["pretrained_plain_continuation"]
    assert losses["after_sft_with_template"] < losses["pretrained_with_template"] - 0.5 * gap


def test_dpo_widens_the_held_out_margin(result):
    dpo = result["gpt"]["dpo"]
    curve = dpo["curve"]
    assert curve["step"][0] == 0 and curve["held_out_margin"][0] == 0.0  # policy == reference
    assert curve["held_out_margin"][-1] > 0.2
    assert curve["held_out_reward_accuracy"][-1] >= 0.7
    assert len(curve["train_margin"]) == dpo["steps"]
    assert curve["step"] == list(range(0, dpo["steps"] + 1, dpo["eval_every"]))


def test_lora_parameter_counts_are_what_llmref_counts(result):
    import copy

    from llmref import course_model
    from llmref.finetune import add_lora, parameter_counts

    model = copy.deepcopy(course_model.load().model)
    lora = result["gpt"]["lora"]
    add_lora(model, lora["r"], lora["alpha"], tuple(lora["targets"]))
    trainable, total = parameter_counts(model)
    sft = result["gpt"]["sft"]
    assert (sft["trainable_parameters"], sft["total_parameters"]) == (trainable, total)
    assert trainable < 0.1 * sft["base_parameters"]


def test_the_encoder_classifier_beats_chance_and_the_record_adds_up(result):
    enc = result["encoder"]
    assert sum(enc["per_module"].values()) == enc["train"] + enc["test"]
    assert enc["chance"] == pytest.approx(1 / len(enc["modules"]))
    assert enc["linear_probe"]["test_accuracy"] > 2 * enc["majority_class"]
    assert enc["lora"]["test_accuracy"] > 2 * enc["majority_class"]
    assert enc["lora"]["trainable_parameters"] < 0.01 * enc["lora"]["total_parameters"]
    assert len(enc["lora"]["curve"]["test_accuracy"]) == enc["lora"]["epochs"]
