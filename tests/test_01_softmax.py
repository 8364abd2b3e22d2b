"""The checks behind exercise 01_softmax, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks."""
from __future__ import annotations

import numpy as np
import pytest

from autograder.checks import CheckFailure
from autograder.checks import probability as checks
from llmref.probability import cross_entropy, log_softmax, softmax

SOFTMAX_CHECKS = [checks.check_softmax, checks.check_softmax_axis, checks.check_softmax_large_logits]
LOG_SOFTMAX_CHECKS = [checks.check_log_softmax, checks.check_log_softmax_axis,
                      checks.check_log_softmax_large_logits]
CROSS_ENTROPY_CHECKS = [checks.check_cross_entropy, checks.check_cross_entropy_large_logits]
PAIRS = ([(c, softmax) for c in SOFTMAX_CHECKS] + [(c, log_softmax) for c in LOG_SOFTMAX_CHECKS]
         + [(c, cross_entropy) for c in CROSS_ENTROPY_CHECKS])


@pytest.mark.parametrize("check, reference", PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_reference_passes_each_check(check, reference, capsys):
    check(reference)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_checks_are_deterministic_and_leave_the_learners_inputs_alone():
    seen = []

    def spy(x, axis=-1):
        seen.append(x.copy())
        return softmax(x, axis)

    checks.check_softmax(spy)
    checks.check_softmax(spy)
    np.testing.assert_array_equal(seen[0], seen[1])


# The kinds of failure every exercise shares (the learner's code raises, is still the
# stub, is not callable, returns the wrong type or an object equal to everything) are
# tested for all exercises in tests/test_check_failures.py. The rows here are this
# exercise's own, or what that test does not assert: returning None or the wrong shape (it
# lets those pass where they may not apply).
BAD_SOFTMAX = {
    "returns None": (lambda x, axis=-1: None, "returned None"),
    "wrong shape": (lambda x, axis=-1: softmax(x, axis)[..., :1], "expected"),
    "negative values": (lambda x, axis=-1: softmax(x, axis) - 0.5, "negative value"),
}


@pytest.mark.parametrize("case", BAD_SOFTMAX, ids=str)
def test_bad_softmax_gives_a_clear_failure(case):
    fn, phrase = BAD_SOFTMAX[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_softmax(fn)
    assert phrase in str(caught.value)


BAD_LOG_SOFTMAX = {
    "returns None": (lambda x, axis=-1: None, "returned None"),
    "wrong shape": (lambda x, axis=-1: log_softmax(x, axis).T, "expected"),
    "x minus max only": (lambda x, axis=-1: x - x.max(axis, keepdims=True), "only the first part"),
    "off by a constant": (lambda x, axis=-1: log_softmax(x, axis) + 0.1, "differs from"),
}


@pytest.mark.parametrize("case", BAD_LOG_SOFTMAX, ids=str)
def test_bad_log_softmax_gives_a_clear_failure(case):
    fn, phrase = BAD_LOG_SOFTMAX[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_log_softmax(fn)
    assert phrase in str(caught.value)


BAD_CROSS_ENTROPY = {
    "returns None": (lambda logits, targets: None, "returned None"),
    "a whole matrix": (lambda logits, targets: log_softmax(logits), "should return one number"),
    "averages over classes too": (lambda logits, targets: cross_entropy(logits, targets) / logits.shape[-1],
                                  "averages over the classes"),
    "probabilities on the wrong axis": (
        lambda logits, targets: -np.mean(np.take_along_axis(log_softmax(logits, axis=0),
                                                            targets[:, None], axis=-1)),
        "normalised over the examples"),
    "slightly off": (lambda logits, targets: cross_entropy(logits, targets) + 1e-3, "expected"),
}


@pytest.mark.parametrize("case", BAD_CROSS_ENTROPY, ids=str)
def test_bad_cross_entropy_gives_a_clear_failure(case):
    fn, phrase = BAD_CROSS_ENTROPY[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_cross_entropy(fn)
    assert phrase in str(caught.value)


def test_cross_entropy_may_return_a_one_element_array_or_a_tensor(capsys):
    import torch

    checks.check_cross_entropy(lambda logits, targets: np.array([cross_entropy(logits, targets)]))
    checks.check_cross_entropy(lambda logits, targets: torch.tensor(cross_entropy(logits, targets)))
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 2


def _nudged(reference, scale: float):
    """`reference`, with one value moved by `scale` times the checks' own tolerance at that
    value (ATOL + RTOL * |value|), on whatever inputs the check passes. A probability moved
    up is taken from another one of its slice, so the slices still sum to 1."""
    def learner(*args, **kwargs):
        out = np.array(reference(*args, **kwargs), dtype=float)
        if reference is cross_entropy:
            return float(out + scale * (checks.ATOL + checks.RTOL * abs(out)))
        axis = kwargs.get("axis", -1)
        slices = np.moveaxis(out, axis, -1)
        rows = slices.reshape(-1, slices.shape[-1]).copy()
        if reference is softmax:  # the slice with most room: its two largest probabilities
            r = int(np.argmax(np.sort(rows, axis=-1)[:, -2]))
            k, j = np.argsort(rows[r])[-2:]
        else:                     # the log-probability of largest size
            r, j = np.unravel_index(int(np.argmax(np.abs(rows))), rows.shape)
        step = scale * (checks.ATOL + checks.RTOL * abs(rows[r, j]))
        rows[r, j] += step
        if reference is softmax:
            rows[r, k] -= step
        return np.moveaxis(rows.reshape(slices.shape), -1, axis)
    learner.__name__ = reference.__name__
    return learner


SAYS = {softmax: "values differ from", log_softmax: "differs from", cross_entropy: "expected"}


@pytest.mark.parametrize("check, reference", PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_tolerance_rejects_just_above_it_and_accepts_well_below(check, reference, capsys):
    # The checks' own inputs and tolerance: 5 % over ATOL + RTOL * |value| at one value (the
    # largest one for log_softmax, about -2e4 on large logits) fails; a tenth of it passes.
    with pytest.raises(CheckFailure) as caught:
        check(_nudged(reference, 1.05))
    assert SAYS[reference] in str(caught.value)
    check(_nudged(reference, 0.1))
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_the_notebook_states_the_tolerance_the_checks_use():
    import re
    from pathlib import Path

    import nbformat

    path = Path(__file__).resolve().parents[1] / "solutions/01_softmax/01_softmax.ipynb"
    text = next(c.source for c in nbformat.read(path, as_version=4).cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "tests_text")
    stated = re.search(r"accept a difference of\s+`([^`]+)`", text)
    assert stated and float(stated.group(1)) == checks.ATOL == checks.RTOL


