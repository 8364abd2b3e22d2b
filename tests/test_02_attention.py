"""The checks behind exercise 02_attention, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks."""
from __future__ import annotations

import numpy as np
import pytest

from autograder.checks import CheckFailure
from autograder.checks import attention as checks

ALL_CHECKS = [checks.check_unmasked, checks.check_scaling, checks.check_causal_mask,
              checks.check_single_key_rows, checks.check_padding_mask, checks.check_large_logits]


def _reference(Q, K, V, mask=None):
    from llmref.attention import scaled_dot_product_attention
    return scaled_dot_product_attention(Q, K, V, mask)


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_reference_passes_each_check(check, capsys):
    check(_reference)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


BAD_INPUTS = {
    "returns None": (lambda Q, K, V, mask=None: None, "returned None"),
    "raises": (lambda Q, K, V, mask=None: {}["missing"], "raised KeyError"),
    "not callable": (np.zeros(3), "to be a function"),
    "wrong output shape": (lambda Q, K, V, mask=None: (np.zeros((2, 2)), _reference(Q, K, V, mask)[1]),
                           "has shape (2, 2), expected"),
    "weights not numbers": (lambda Q, K, V, mask=None: (_reference(Q, K, V, mask)[0], "weights"),
                            "NumPy array of numbers"),
    "object equal to everything": (
        lambda Q, K, V, mask=None: (type("AlwaysEqual", (), {"__eq__": lambda s, o: True})(),) * 2,
        "NumPy array of numbers"),
    "one value instead of a pair": (lambda Q, K, V, mask=None: _reference(Q, K, V, mask)[0],
                                    "should return a pair"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=str)
def test_bad_input_gives_a_clear_failure(case):
    fn, phrase = BAD_INPUTS[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_unmasked(fn)
    assert phrase in str(caught.value)


def test_reference_tolerance_is_tight_enough_to_catch_a_missing_scale():
    # The stated tolerance must separate right from wrong: the unscaled weights differ
    # from the scaled ones by far more than ATOL on the default check's inputs.
    rng = np.random.default_rng(0)
    Q, K, V = rng.standard_normal((3, 2, 4, 8))[0], rng.standard_normal((2, 6, 8)), rng.standard_normal((2, 6, 5))
    _, scaled = _reference(Q, K, V)
    _, unscaled = _reference(Q * np.sqrt(8), K, V)
    assert np.abs(scaled - unscaled).max() > 100 * checks.ATOL


def test_failure_display_hides_our_frames_and_keeps_the_learners():
    def learner(Q, K, V, mask=None):
        return Q @ K.T  # the learner's bug: transposes the batch axes too

    with pytest.raises(CheckFailure) as caught:
        checks.check_unmasked(learner)
    shown = "\n".join(caught.value._render_traceback_())
    assert "return Q @ K.T" in shown and "ValueError" in shown
    assert "_core.py" not in shown and "autograder" not in shown
