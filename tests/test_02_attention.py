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


# The kinds of failure every exercise shares (the learner's code raises, is still the
# stub, is not callable, returns the wrong type or an object equal to everything) are
# tested for all exercises in tests/test_check_failures.py. The rows here are this
# exercise's own, or what that test does not assert: returning None or the wrong shape (it
# lets those pass where they may not apply); wrong values inside the returned pair, where
# that test stops at the pair itself.
BAD_INPUTS = {
    "returns None": (lambda Q, K, V, mask=None: None, "returned None"),
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


def _nudged(part: str, scale: float):
    """The reference, with one value of `part` moved by `scale` times the checks' own
    tolerance at that value (ATOL + RTOL * |value|), on whatever inputs the check passes.

    Moving a weight, the same amount is taken from another weight of its row, so the rows
    still sum to 1 and no blocked key gets any: only the value comparison can notice.
    """
    def learner(Q, K, V, mask=None):
        output, weights = _reference(Q, K, V, mask)
        if part == "weights":
            rows = weights.reshape(-1, weights.shape[-1]).copy()
            order = np.argsort(rows, axis=-1)
            top, second = order[:, -1], order[:, -2]
            r = int(np.argmax(rows[np.arange(len(rows)), second]))  # room to move weight
            step = scale * (checks.ATOL + checks.RTOL * rows[r, top[r]])
            rows[r, top[r]] += step
            rows[r, second[r]] -= step
            weights = rows.reshape(weights.shape)
            output = weights @ V
        else:
            index = np.unravel_index(int(np.argmax(np.abs(output))), output.shape)
            output = output.copy()
            output[index] += scale * (checks.ATOL + checks.RTOL * abs(output[index]))
        return output, weights
    return learner


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("part, says", [("weights", "differ from softmax"),
                                        ("output", "output is not weights @ V")])
def test_tolerance_rejects_just_above_it_and_accepts_well_below(check, part, says, capsys):
    # The checks' own inputs and tolerance: 5 % over ATOL + RTOL * |value| at one value fails
    # with the message about that value; a tenth of it passes.
    with pytest.raises(CheckFailure) as caught:
        check(_nudged(part, 1.05))
    assert says in str(caught.value)
    check(_nudged(part, 0.1))
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_the_notebook_states_the_tolerance_the_checks_use():
    import re
    from pathlib import Path

    import nbformat

    path = Path(__file__).resolve().parents[1] / "solutions/02_attention/02_attention.ipynb"
    text = next(c.source for c in nbformat.read(path, as_version=4).cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "tests_text")
    stated = re.search(r"accept a difference of\s+`([^`]+)`", text)
    assert stated and float(stated.group(1)) == checks.ATOL == checks.RTOL


