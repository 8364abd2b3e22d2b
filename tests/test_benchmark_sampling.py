"""The committed sampling benchmark (benchmarks/sampling.py): well-formed, consistent with
itself, and showing what the sampling chapter says: greedy decoding repeats itself more than
sampling does. Generation is run by the benchmark, never here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATH = ROOT / "benchmarks" / "results" / "sampling.json"


def _bench():
    """benchmarks/sampling.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_sampling", ROOT / "benchmarks" / "sampling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(PATH.read_text())


def test_the_result_is_well_formed(result):
    assert _bench().PROMPT == result["prompt"]
    for key in ("command", "prompt", "new_chars", "penalty_window", "ngram", "widget",
                "repetition", "study_prompts", "seconds", "machine"):
        assert key in result, key
    assert set(result["widget"]) == {"temperature", "top-k", "top-p", "repetition penalty"}
    for entries in result["widget"].values():
        assert 1 <= len(entries) <= 12  # one widget frame each, at most 12 per slider
        assert all(len(e["text"]) == result["new_chars"] for e in entries)
    for entry in result["repetition"].values():
        assert len(entry["samples"]) == len(entry["repeated_share"]) == len(result["study_prompts"])
        assert entry["mean_repeated_share"] == pytest.approx(
            sum(entry["repeated_share"]) / len(entry["repeated_share"]), abs=1e-4)


def test_the_shares_are_recomputable_from_the_samples(result):
    repeated_share = _bench().repeated_share
    for entry in result["repetition"].values():
        for text, share in zip(entry["samples"], entry["repeated_share"]):
            assert repeated_share(text, result["ngram"]) == pytest.approx(share, abs=1e-4)


def test_greedy_repeats_itself_more_than_sampling(result):
    rep = result["repetition"]
    assert rep["greedy"]["mean_repeated_share"] > 2 * rep["T = 0.8, top-p 0.9"]["mean_repeated_share"]
    assert rep["greedy"]["mean_repeated_share"] > rep["greedy + penalty 1.3"]["mean_repeated_share"]
