"""llmref.sampling against an independent reference: Hugging Face transformers' logits
processors (TopKLogitsWarper, TopPLogitsWarper, RepetitionPenaltyLogitsProcessor), plus the
properties the exercise states and the errors bad settings get.

Conventions compared: top-k keeps ties at the k-th logit in both, so it is compared on
inputs full of ties. Top-p differs at ties: the course keeps every token tied with the last
one kept, while transformers keeps those its sort happens to put first; so top-p is compared
on tie-free inputs, and the tie rule is tested on its own. Both are compared in float64, where
transformers' cumulative sum from the least probable token and ours from the most probable
agree except within rounding of a boundary, which random p values do not hit.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from llmref import sampling as ref

torch = pytest.importorskip("torch")
logits_process = pytest.importorskip("transformers.generation.logits_process")


def hf(processor, logits, input_ids=None):
    ids = torch.zeros((logits.shape[0], 0), dtype=torch.long) if input_ids is None else torch.as_tensor(input_ids)
    return processor(ids, torch.tensor(logits)).numpy()


@pytest.mark.parametrize("seed", range(3))
def test_top_k_equals_transformers_even_with_ties(seed):
    rng = np.random.default_rng(seed)
    logits = np.round(rng.standard_normal((8, 40)) * 2, 1)  # many ties
    logits[0, ::3] = -np.inf
    assert (np.diff(np.sort(logits[1:], axis=-1), axis=-1) == 0).any(), "the input must hold ties"
    for k in (1, 2, 5, 17, 40, 90):
        ours = ref.top_k_filter(logits, k)
        assert np.array_equal(ours, hf(logits_process.TopKLogitsWarper(k), logits)), k


@pytest.mark.parametrize("seed", range(3))
def test_top_p_equals_transformers_without_ties(seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((8, 103)) * 3  # continuous: no ties
    logits[1, :50] = -np.inf
    for p in (1e-6, 0.1, 0.37, 0.5, 0.9, 0.99, 1.0):
        ours = ref.top_p_filter(logits, p)
        assert np.array_equal(ours, hf(logits_process.TopPLogitsWarper(p), logits)), p


def test_repetition_penalty_equals_transformers():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 30)) * 3
    ids = rng.integers(0, 12, (5, 20))  # repeated ids: penalised once in both
    for penalty in (0.5, 1.0, 1.3, 4.0):
        ours = ref.apply_repetition_penalty(logits, ids, penalty)
        theirs = hf(logits_process.RepetitionPenaltyLogitsProcessor(penalty), logits, ids)
        np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=0)


def test_sampling_equals_rng_choice_and_follows_the_distribution():
    # The stated draw is what Generator.choice does: one random() per row against the cdf.
    logits = np.array([[2.0, 1.0, 0.0, -1.0, -np.inf]] * 4)
    ids = ref.sample(logits, np.random.default_rng(7), top_k=3)
    rng = np.random.default_rng(7)
    probs = ref.softmax(ref.top_k_filter(logits, 3))
    assert ids.tolist() == [rng.choice(5, p=row) for row in probs]
    many = ref.sample(np.tile(logits[0], (40_000, 1)), np.random.default_rng(1))
    frequencies = np.bincount(many, minlength=5) / many.size
    # 40,000 draws: the standard error of a frequency is at most 0.0025; 0.01 is 4 of them.
    np.testing.assert_allclose(frequencies, ref.softmax(logits[0]), atol=0.01)
    assert frequencies[4] == 0


def test_shapes_dtypes_and_no_mutation():
    logits = np.linspace(-2, 2, 12).reshape(3, 4).astype(np.float32)
    before = logits.copy()
    for out in (ref.top_k_filter(logits, 2), ref.top_p_filter(logits, 0.5),
                ref.apply_repetition_penalty(logits, np.zeros((3, 1), int), 2.0),
                ref.apply_temperature(logits, 2.0)):
        assert out.shape == logits.shape and out.dtype == np.float32
    assert np.array_equal(logits, before)
    assert ref.greedy(logits).shape == (3,) and ref.greedy(logits[0]).shape == ()
    assert ref.sample(logits, np.random.default_rng(0)).dtype == np.int64
    assert ref.sample(logits[0], np.random.default_rng(0)).shape == ()


def test_edge_cases_as_stated():
    assert np.isfinite(ref.top_k_filter(np.array([3.0, 1.0, 1.0, 0.0]), 2)).sum() == 3
    assert np.isfinite(ref.top_p_filter(np.full(6, 0.2), 0.01)).all()  # all equal: all stay
    tiny_tail = np.array([40.0, 0.0, -3.0])
    assert np.isfinite(ref.top_p_filter(tiny_tail, 1.0)).all()  # p = 1 keeps the tail
    assert np.isfinite(ref.top_p_filter(tiny_tail, 1e-12)).sum() == 1
    # rounding can leave the running total a hair below p: the last token then closes the set
    assert np.isfinite(ref.top_p_filter(np.zeros(10), 1 - 1e-17)).all()
    assert ref.greedy(np.array([1.0, 3.0, 3.0])) == 1


@pytest.mark.parametrize("call, value", [
    (lambda: ref.top_k_filter(np.zeros(3), 0), "k=0"),
    (lambda: ref.top_k_filter(np.zeros(3), 1.5), "k=1.5"),
    (lambda: ref.top_p_filter(np.zeros(3), 0.0), "p=0.0"),
    (lambda: ref.top_p_filter(np.zeros(3), 1.01), "p=1.01"),
    (lambda: ref.apply_temperature(np.zeros(3), 0), "temperature=0"),
    (lambda: ref.apply_temperature(np.zeros(3), -1.0), "temperature=-1.0"),
    (lambda: ref.apply_repetition_penalty(np.zeros(3), [0], 0.0), "got 0.0"),
    (lambda: ref.sample(np.zeros(3), np.random.default_rng(0), top_p=2.0), "p=2.0"),
])
def test_bad_settings_raise_value_errors_naming_the_value(call, value):
    with pytest.raises(ValueError) as caught:
        call()
    assert value in str(caught.value)


def test_the_module_does_not_import_torch():
    # The export chapter runs it next to ONNX Runtime, where PyTorch is not installed.
    code = "import sys, llmref.sampling; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
