"""The committed decode benchmark (benchmarks/decode.py): well-formed, consistent with itself,
meeting its targets at batch 1, prompt 32, and with an int8 model that quantized every layer.

Speed is measured by the benchmark script, never here; these tests check the record."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmref import course_model
from llmref.gpt import count_parameters

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["pytorch eager, no cache", "pytorch eager, KV cache", "onnxruntime, no cache",
            "onnxruntime, KV cache", "onnxruntime int8, KV cache"]


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / "decode.json").read_text())


def _tokens_per_s(result, variant, batch=1, prompt=32):
    (row,) = [r for r in result["rows"]
              if r["variant"] == variant and r["batch"] == batch and r["prompt"] == prompt]
    return row["tokens_per_s"]


def test_every_variant_batch_and_prompt_is_measured_once(result):
    seen = [(r["variant"], r["batch"], r["prompt"]) for r in result["rows"]]
    assert sorted(seen) == sorted((v, b, p) for v in VARIANTS for b in (1, 8) for p in (32, 256))
    assert result["threads"] == 2
    for r in result["rows"]:
        assert r["ms_per_token"] > 0
        assert r["tokens_per_s"] == pytest.approx(1000 * r["batch"] / r["ms_per_token"], rel=1e-9)
        assert ("context 512" in r["model"]) == (r["prompt"] == 256)


def test_the_speed_targets_at_batch_1_prompt_32_are_met(result):
    speedups = result["speedups_batch1_prompt32"]
    ort_cache = _tokens_per_s(result, "onnxruntime, KV cache")
    assert speedups["ort_cache_over_eager_no_cache"] == pytest.approx(
        ort_cache / _tokens_per_s(result, "pytorch eager, no cache"))
    assert speedups["ort_cache_over_eager_cache"] == pytest.approx(
        ort_cache / _tokens_per_s(result, "pytorch eager, KV cache"))
    assert speedups["ort_cache_over_eager_no_cache"] >= result["targets"]["ort_cache_over_eager_no_cache"] == 3.0
    assert speedups["ort_cache_over_eager_cache"] >= result["targets"]["ort_cache_over_eager_cache"] == 2.0


def test_the_cache_pays_off_more_for_the_long_prompt(result):
    # ONNX Runtime only: PyTorch eager's 2 threads wait for each other at every operator, so on
    # a shared machine its rows vary by more than this ratio does.
    for engine in ("onnxruntime",):
        gain = {p: _tokens_per_s(result, f"{engine}, KV cache", 1, p)
                / _tokens_per_s(result, f"{engine}, no cache", 1, p) for p in (32, 256)}
        assert gain[256] > gain[32] > 1, (engine, gain)


def test_int8_quantized_every_layer_the_head_included_and_kept_the_loss(result):
    q = result["int8"]
    assert q["matmuls_quantized"] == q["linear_layers"] == 4 * 4 + 1
    assert q["int8_bytes"] < q["fp32_bytes"] / 3
    assert q["size_ratio"] == pytest.approx(q["fp32_bytes"] / q["int8_bytes"])
    # float32 ONNX Runtime reproduces the loss recorded at training (PyTorch) to rounding
    assert abs(q["held_out_nats_per_char_fp32"] - q["held_out_nats_per_char_recorded"]) < 1e-4
    assert q["loss_change"] == pytest.approx(q["held_out_nats_per_char_int8"] - q["held_out_nats_per_char_fp32"])
    assert abs(q["loss_change"]) < 0.01


def test_the_batch_1_bound_is_consistent(result):
    b = result["batch1_bound"]
    config = course_model.load().model.config
    assert b["parameters"] == count_parameters(config)
    assert b["weight_bytes_fp32"] == 4 * b["parameters"]
    for kind, weights in (("fp32", b["weight_bytes_fp32"]), ("int8", b["weight_bytes_int8"])):
        expected = b["memory_bandwidth_gb_s"] * 1e9 / (weights + b["kv_cache_bytes_at_48_positions"])
        assert b[f"bound_tokens_per_s_{kind}"] == pytest.approx(expected)
    assert b["measured_tokens_per_s_ort_int8_cache"] > 0 and b["memory_bandwidth_gb_s"] > 0


def test_the_gpu_result_or_the_reason_there_is_none(result):
    assert result["gpu"] is not None or "No GPU" in result["gpu_note"]
