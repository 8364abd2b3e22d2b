"""The checks behind exercise 15_sampling, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad results fail in words, not tracebacks."""
from __future__ import annotations

import numpy as np
import pytest

from autograder.checks import CheckFailure
from autograder.checks import sampling as checks
from llmref import sampling as ref

FILTER_CHECKS = [(checks.check_top_k, ref.top_k_filter), (checks.check_top_k_edges, ref.top_k_filter),
                 (checks.check_top_p, ref.top_p_filter), (checks.check_top_p_edges, ref.top_p_filter),
                 (checks.check_repetition_penalty, ref.apply_repetition_penalty),
                 (checks.check_sample, ref.sample)]


@pytest.mark.parametrize("check, fn", FILTER_CHECKS, ids=lambda x: getattr(x, "__name__", ""))
def test_reference_passes_each_check(check, fn, capsys):
    check(fn)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_reference_passes_greedy_and_temperature(capsys):
    checks.check_greedy_and_temperature(ref.greedy, ref.apply_temperature)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_float32_logits_pass_and_stay_float32():
    checks.check_top_k(ref.top_k_filter, dtype="float32", vocab=103)
    checks.check_top_p(ref.top_p_filter, dtype="float32", vocab=103)
    assert ref.top_p_filter(np.zeros(4, np.float32), 0.5).dtype == np.float32


BAD_FILTERS = {
    "returns None": (lambda logits, k: None, "is None"),
    "raises": (lambda logits, k: {}["missing"], "raised KeyError"),
    "not callable": (np.zeros(3), "to be a function"),
    "wrong shape": (lambda logits, k: logits[..., :2], "has shape"),
    "not numbers": (lambda logits, k: "logits", "NumPy array of numbers"),
    "NaN for removed": (lambda logits, k: np.where(ref.top_k_filter(logits, k) == -np.inf, np.nan, logits),
                        "contains NaN"),
    "probabilities instead of logits": (lambda logits, k: ref.softmax(ref.top_k_filter(logits, k)),
                                        "not the logits you were given"),
    "sorts along the batch axis": (
        lambda logits, k: np.where(logits < np.sort(logits, axis=0)[-min(k, len(logits))], -np.inf, logits)
        if logits.ndim == 2 else ref.top_k_filter(logits, k), "along the last axis"),
}


@pytest.mark.parametrize("case", BAD_FILTERS, ids=str)
def test_bad_top_k_gives_a_clear_failure(case):
    fn, phrase = BAD_FILTERS[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_top_k(fn)
    assert phrase in str(caught.value)


def test_a_value_error_that_does_not_name_the_value_is_refused():
    def silent(logits, k):
        if k < 1:
            raise ValueError("bad k")
        return ref.top_k_filter(logits, k)

    with pytest.raises(CheckFailure, match="does not name the value"):
        checks.check_top_k_edges(silent)


def test_the_wrong_exception_type_is_refused():
    def wrong_type(logits, p):
        if not 0 < p <= 1:
            raise TypeError(f"p={p}")
        return ref.top_p_filter(logits, p)

    with pytest.raises(CheckFailure, match="raised TypeError"):
        checks.check_top_p_edges(wrong_type)


def test_sample_returning_floats_or_wrong_ids_is_explained():
    with pytest.raises(CheckFailure, match="integer token ids"):
        checks.check_sample(lambda logits, rng, **kw: ref.sample(logits, rng, **kw).astype(float))

    def off_by_one(logits, rng, **kw):
        return ref.sample(logits, rng, **kw) + 1
    with pytest.raises(CheckFailure, match="outside 0|filters remove|drew"):
        checks.check_sample(off_by_one)


def test_sample_in_the_wrong_filter_order_is_named():
    def top_p_first(logits, rng, *, temperature=1.0, top_k=None, top_p=None):
        out = ref.apply_temperature(logits, temperature)
        if top_p is not None:
            out = ref.top_p_filter(out, top_p)
        if top_k is not None:
            out = ref.top_k_filter(out, top_k)
        return ref.sample(out, rng)
    with pytest.raises(CheckFailure, match="top-p before top-k"):
        checks.check_sample(top_p_first, settings=((1.0, 3, 0.5),), batch=32, vocab=12)


def test_failure_display_keeps_the_learners_frames_only():
    def learner(logits, k):
        return logits[:, :k] @ np.ones(3)  # the learner's bug

    with pytest.raises(CheckFailure) as caught:
        checks.check_top_k(learner)
    shown = "\n".join(caught.value._render_traceback_())
    assert "logits[:, :k]" in shown and "_core.py" not in shown
