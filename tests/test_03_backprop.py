"""The checks behind exercise 03_backprop, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks, and the
diagnoses that only hidden cases reach say the right thing."""
from __future__ import annotations

import numpy as np
import pytest

from autograder.checks import CheckFailure
from autograder.checks import backprop as checks
from llmref.attention import scaled_dot_product_attention
from llmref.backprop import attention_backward, softmax_backward

SOFTMAX_CHECKS = [checks.check_softmax_backward, checks.check_softmax_backward_axis]
ATTENTION_CHECKS = [checks.check_attention_backward_self, checks.check_attention_backward_cross,
                    checks.check_attention_backward_causal, checks.check_attention_backward_padding]


@pytest.mark.parametrize("check", SOFTMAX_CHECKS, ids=lambda c: c.__name__)
def test_reference_softmax_backward_passes(check, capsys):
    check(softmax_backward)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


@pytest.mark.parametrize("check", ATTENTION_CHECKS, ids=lambda c: c.__name__)
def test_reference_attention_backward_passes(check, capsys):
    check(attention_backward)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_hidden_test_arguments_accept_the_reference():
    # The hidden cases of the notebook, run here so a typo in them cannot cost learners points.
    checks.check_softmax_backward(softmax_backward, seed=101, shape=(7,))
    checks.check_softmax_backward(softmax_backward, seed=102, shape=(2, 3, 4, 6))
    checks.check_softmax_backward(softmax_backward, seed=103, shape=(3, 8), scale=20.0)
    checks.check_softmax_backward_axis(softmax_backward, seed=104, shape=(5, 5), axes=(0, -2))
    checks.check_attention_backward_self(attention_backward, seed=201, batch_shape=(2, 3), length=7, d_k=16, d_v=4)
    checks.check_attention_backward_cross(attention_backward, seed=202, batch_shape=(), q_len=1, k_len=9, d_k=4, d_v=6)
    checks.check_attention_backward_cross(attention_backward, seed=203, batch_shape=(3,), q_len=5, k_len=2, d_k=1, d_v=3)
    checks.check_attention_backward_padding(attention_backward)
    checks.check_attention_backward_causal(attention_backward, seed=301, batch_shape=(2, 2), q_len=3, k_len=6, d_k=8, d_v=2)


SOFTMAX_BAD = {
    "NaN": (lambda y, grad_y, axis=-1: y * np.nan, "NaN values"),
    "softmax applied again": (
        lambda y, grad_y, axis=-1: softmax_backward(np.exp(y) / np.exp(y).sum(axis, keepdims=True), grad_y, axis),
        "applied to y again"),
    "no axis argument": (lambda y, grad_y: softmax_backward(y, grad_y), "unexpected keyword argument 'axis'"),
}


@pytest.mark.parametrize("case", SOFTMAX_BAD, ids=str)
def test_bad_softmax_backward_gives_a_clear_failure(case):
    fn, phrase = SOFTMAX_BAD[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_softmax_backward(fn)
        checks.check_softmax_backward_axis(fn)
    assert phrase in str(caught.value)


def _scaled(factor):
    def fn(Q, K, V, grad_out, mask=None):
        dQ, dK, dV = attention_backward(Q, K, V, grad_out, mask)
        return dQ * factor, dK * factor, dV
    return fn


def _dQ_from_transposed_dS(Q, K, V, grad_out, mask=None):
    _, W = scaled_dot_product_attention(Q, K, V, mask)
    dS = softmax_backward(W, grad_out @ np.swapaxes(V, -1, -2))
    _, dK, dV = attention_backward(Q, K, V, grad_out, mask)
    return np.swapaxes(dS, -1, -2) @ K / np.sqrt(Q.shape[-1]), dK, dV


ATTENTION_BAD = {
    "two values": (lambda Q, K, V, g, mask=None: attention_backward(Q, K, V, g, mask)[:2],
                   "three gradients `(dQ, dK, dV)`, but returned tuple of length 2"),
    "one array": (lambda Q, K, V, g, mask=None: attention_backward(Q, K, V, g, mask)[0],
                  "but returned array of shape"),
    "wrong shape": (lambda Q, K, V, g, mask=None: (np.zeros((2, 2)),) + attention_backward(Q, K, V, g, mask)[1:],
                    "dQ (returned value 1) has shape (2, 2), expected"),
    "dQ and dK in the wrong order": (lambda Q, K, V, g, mask=None: attention_backward(Q, K, V, g, mask)[1::-1]
                                     + attention_backward(Q, K, V, g, mask)[2:], "are swapped"),
    "dV transposed": (lambda Q, K, V, g, mask=None: attention_backward(Q, K, V, g, mask)[:2]
                      + (np.swapaxes(attention_backward(Q, K, V, g, mask)[2], -1, -2),), "dV = W^T @ grad_out"),
    "NaN": (lambda Q, K, V, g, mask=None: tuple(a * np.nan for a in attention_backward(Q, K, V, g, mask)),
            "NaN values"),
    "divided by d_k": (_scaled(1 / np.sqrt(8)), "times too small"),
    "dQ from dS^T": (_dQ_from_transposed_dS, "dQ uses dS^T where it needs dS"),
}


@pytest.mark.parametrize("case", ATTENTION_BAD, ids=str)
def test_bad_attention_backward_gives_a_clear_failure(case):
    fn, phrase = ATTENTION_BAD[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_attention_backward_self(fn)
        checks.check_attention_backward_cross(fn)
    assert phrase in str(caught.value)


def test_swapped_gradients_of_different_shapes_are_named():
    # With L_q != L_k the swap shows in the shapes, before any value is compared.
    def swapped(Q, K, V, grad_out, mask=None):
        dQ, dK, dV = attention_backward(Q, K, V, grad_out, mask)
        return dK, dQ, dV

    with pytest.raises(CheckFailure, match="look swapped"):
        checks.check_attention_backward_cross(swapped)


def test_a_padding_mask_names_the_keys_that_leak():
    def ignores_mask(Q, K, V, grad_out, mask=None):
        return attention_backward(Q, K, V, grad_out)

    with pytest.raises(CheckFailure, match="reaches keys the mask blocks for every query"):
        checks.check_attention_backward_padding(ignores_mask)


def test_mask_diagnosis_needs_no_hidden_keys():
    # A causal mask hides no key from every query: the check still names the ignored mask.
    def ignores_mask(Q, K, V, grad_out, mask=None):
        return attention_backward(Q, K, V, grad_out)

    with pytest.raises(CheckFailure, match="without the mask"):
        checks.check_attention_backward_causal(ignores_mask)


def test_non_finite_gradient_with_a_mask_points_at_the_scores():
    def uses_minus_inf(Q, K, V, grad_out, mask=None):
        # What 0 * (-inf) in a backward pass through the masked scores leaves behind.
        dQ, dK, dV = attention_backward(Q, K, V, grad_out, mask)
        dQ[..., 0, :] = np.nan
        return dQ, dK, dV

    with pytest.raises(CheckFailure, match="never the scores"):
        checks.check_attention_backward_causal(uses_minus_inf)


def _record(check, reference):
    """Run `check` with a spy that answers with `reference` and records what it was given:
    the check's own inputs, whatever seeds and shapes it uses."""
    seen = []

    def spy(*args, **kwargs):
        seen.append((args, kwargs))
        return reference(*args, **kwargs)

    spy.__name__ = reference.__name__
    check(spy)
    assert seen
    return seen


def _nudged(array, factor, *, everywhere):
    """`array` moved by `factor` times the checks' tolerance, atol + rtol * |x|: at every entry
    (with alternating signs), or at the one entry where that tolerance is smallest."""
    bound = checks.ATOL + checks.RTOL * np.abs(array)
    if everywhere:
        signs = np.where(np.arange(array.size).reshape(array.shape) % 2, 1.0, -1.0)
        return array + factor * bound * signs
    out = array.copy()
    index = np.unravel_index(np.argmin(bound), bound.shape)
    out[index] += factor * bound[index]
    return out


# 0.01 of the tolerance must pass at every entry; 10 times it, at the single entry where it is
# tightest, must fail. Both run through the checks themselves, on their own inputs.
NUDGES = [pytest.param(0.01, True, id="well-below-passes"), pytest.param(10.0, False, id="above-fails")]


@pytest.mark.parametrize("factor, accepted", NUDGES)
@pytest.mark.parametrize("check", SOFTMAX_CHECKS, ids=lambda c: c.__name__)
def test_softmax_tolerance_is_the_one_the_checks_apply(check, factor, accepted):
    def nudged(y, grad_y, axis=-1):
        return _nudged(softmax_backward(y, grad_y, axis), factor, everywhere=accepted)

    if accepted:
        check(nudged)
    else:
        with pytest.raises(CheckFailure, match="differs from"):
            check(nudged)


@pytest.mark.parametrize("factor, accepted", NUDGES)
@pytest.mark.parametrize("which", [0, 1, 2], ids=["dQ", "dK", "dV"])
@pytest.mark.parametrize("check", ATTENTION_CHECKS, ids=lambda c: c.__name__)
def test_attention_tolerance_is_the_one_the_checks_apply(check, which, factor, accepted):
    def nudged(Q, K, V, grad_out, mask=None):
        grads = list(attention_backward(Q, K, V, grad_out, mask))
        grads[which] = _nudged(grads[which], factor, everywhere=accepted)
        return tuple(grads)

    if accepted:
        check(nudged)
    else:
        with pytest.raises(CheckFailure):  # "differs", or a leak into a blocked key's row
            check(nudged)


def test_the_known_mistakes_are_far_outside_the_tolerance_on_the_checks_inputs():
    # A mistake that moved every gradient by less than ~100 times the tolerance would pass
    # for some learner's rounding; on the inputs the checks really use, each moves some entry
    # much further.
    def far(got, right):
        return np.max(np.abs(got - right) / (checks.ATOL + checks.RTOL * np.abs(right))) > 100

    for check in SOFTMAX_CHECKS:
        for (y, grad_y, *rest), kwargs in _record(check, softmax_backward):
            axis = kwargs.get("axis", -1)
            right = softmax_backward(y, grad_y, axis)
            assert far(y * (1 - y) * grad_y, right)
            assert far(y * grad_y, right)
            assert far(-right, right)
            assert far(y * (grad_y - np.sum(grad_y * y)), right)
    for check in ATTENTION_CHECKS:
        for (Q, K, V, grad_out), kwargs in _record(check, attention_backward):
            mask = kwargs.get("mask")
            dQ, dK, dV = attention_backward(Q, K, V, grad_out, mask)
            d_k = Q.shape[-1]
            _, W = scaled_dot_product_attention(Q, K, V, mask)
            dW = grad_out @ np.swapaxes(V, -1, -2)
            assert d_k == 1 or far(dQ * np.sqrt(d_k), dQ) and far(dK / np.sqrt(d_k), dK)
            assert far(dW @ K / np.sqrt(d_k), dQ)                     # softmax's backward skipped
            assert far((W * dW) @ K / np.sqrt(d_k), dQ)               # its sum term missing
            if mask is not None:
                assert any(far(a, b) for a, b in zip(attention_backward(Q, K, V, grad_out), (dQ, dK, dV)))
