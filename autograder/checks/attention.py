"""Checks for exercise 02_attention: scaled dot-product attention in NumPy.

Each check draws seeded random Q, K, V (float64), calls the learner's
``scaled_dot_product_attention(Q, K, V, mask=None) -> (output, weights)`` and compares
it with :func:`llmref.attention.scaled_dot_product_attention`, itself tested against
PyTorch's ``scaled_dot_product_attention`` in tests/test_llmref_attention.py.

Before comparing numbers, a check looks for the usual mistakes and names the first
one it finds, so a failure says what to fix rather than only that values differ.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from llmref.attention import scaled_dot_product_attention as reference

from ._core import (NUMPY_SHORTCUTS, as_float_array, call_learner, close, expect_tuple, fail,
                    find_bad_values, hint_on_error, passed, refuse_shortcuts, seeded, worst_mismatch)

# Inputs are float64, so any correct float64 implementation agrees with the reference to
# about 1e-13. 1e-5 still admits a learner who computes in float32 (eps 1.2e-7, summed
# over at most 64 terms), while every known mistake moves some weight by more than 1e-2.
RTOL = 1e-5
ATOL = 1e-5

Function = Callable[..., object]


def _random_qkv(rng, batch_shape, q_len, k_len, d_k, d_v, scale=1.0):
    Q = rng.standard_normal((*batch_shape, q_len, d_k)) * scale
    K = rng.standard_normal((*batch_shape, k_len, d_k)) * scale
    V = rng.standard_normal((*batch_shape, k_len, d_v))
    return Q, K, V

# Why torch's scaled_dot_product_attention (or scipy's softmax) is refused.
WHY_BY_HAND = ("Write it in NumPy: the scores, the scaling, the mask and the softmax written "
               "out by hand are the exercise, and the weights it returns are what a library "
               "kernel never shows.")


def _batch_axes_hint(K: np.ndarray) -> Callable[[BaseException], str | None]:
    """A line for a learner whose matrix product failed on batched inputs: the likeliest
    cause is `K.T`, which reverses the batch axes too."""
    def hint(error: BaseException) -> str | None:
        if K.ndim > 2 and isinstance(error, ValueError) and "matmul" in str(error):
            return (f"K here has shape {K.shape}: batch axes first, then (L_k, d_k). K.T reverses "
                    "all of its axes, batch axes included; transpose only the last two "
                    "(np.swapaxes or np.moveaxis), and take d_k from the last axis of Q.")
        return None
    return hint


def _run(fn: Function, Q, K, V, mask=None):
    """Call the learner's function and return (output, weights) as checked float arrays."""
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "scaled_dot_product_attention")
    kwargs = {} if mask is None else {"mask": mask}
    with hint_on_error(_batch_axes_hint(K)), refuse_shortcuts(NUMPY_SHORTCUTS, name, WHY_BY_HAND):
        result = call_learner(fn, Q.copy(), K.copy(), V.copy(), name=name, **kwargs)
    output, weights = expect_tuple(result, name, ("output", "weights"))
    *batch, q_len, _ = Q.shape
    k_len, d_v = V.shape[-2], V.shape[-1]
    output = as_float_array(output, f"The output `{name}` returned (its first value)",
                            (*batch, q_len, d_v))
    weights = as_float_array(weights, f"The attention weights `{name}` returned (its second value)",
                             (*batch, q_len, k_len))
    return output, weights


def _non_finite_hint(Q, K, mask) -> str:
    largest = float(np.abs(Q @ np.swapaxes(K, -1, -2)).max() / np.sqrt(Q.shape[-1]))
    if largest > 700:
        return (f"The scores here reach {largest:.0f}; exp() of anything above ~709 overflows "
                "float64. Subtract each row's maximum score before exponentiating: "
                "softmax(x) = softmax(x - max(x)).")
    if mask is not None:
        return ("A row whose keys are all blocked gives 0/0; every row here allows at least one "
                "key, so check the mask's polarity: True means 'may attend'.")
    return "Check for a division by zero."


def _diagnose(Q, K, V, mask, output, weights) -> None:
    """Compare with the reference; on a mismatch, fail with the likeliest cause."""
    __tracebackhide__ = True
    expected_out, expected_w = reference(Q, K, V, mask)
    for what, array in (("weights", weights), ("output", output)):
        bad = find_bad_values(array)
        if bad:
            fail(f"The {what} contain {bad} values. {_non_finite_hint(Q, K, mask)}")

    if mask is not None:
        allowed = np.broadcast_to(mask, weights.shape)
        leaked = np.abs(weights[~allowed]).max(initial=0.0)
        if leaked > ATOL:
            if np.abs(weights[allowed]).max(initial=0.0) <= ATOL:
                fail("All weight goes to the positions where the mask is False. In this course "
                     "(as in PyTorch) True means 'may attend': keep scores where mask is True "
                     "and block those where it is False.")
            fail(f"Weight {leaked:.3g} reaches a key the mask blocks (mask False). Blocked "
                 "scores must become -inf before the softmax so their weight is exactly 0.")

    row_sums = weights.sum(axis=-1)
    if not np.allclose(row_sums, 1.0, atol=ATOL):
        if np.allclose(weights.sum(axis=-2), 1.0, atol=ATOL):
            fail("The weights sum to 1 down each column (over queries) instead of along each "
                 "row (over keys). Take the softmax over the last axis: axis=-1.")
        if mask is not None and np.all(row_sums <= 1 + ATOL) and np.allclose(
                np.where(np.broadcast_to(mask, weights.shape), weights, 0.0), weights):
            fail("Rows with blocked keys sum to less than 1: it looks like the mask was applied "
                 "after the softmax. Set the blocked scores to -inf (np.where(mask, scores, "
                 "-np.inf)) before the softmax, so the allowed keys share all the weight.")
        fail("The attention weights do not sum to 1 along the key axis (last axis): "
             f"row sums range from {row_sums.min():.4g} to {row_sums.max():.4g}. "
             "Normalise the exponentiated scores by their sum over the keys.")

    if not close(weights, expected_w, rtol=RTOL, atol=ATOL):
        d_k = Q.shape[-1]
        # Feeding the reference Q * c computes softmax(QK^T * c / sqrt(d_k)); pick c so the
        # reference reproduces each common wrong scaling s of the raw scores QK^T.
        wrong_scalings = (
            (1.0, "softmax(QK^T): the scores are not scaled. Divide QK^T by sqrt(d_k) "
                  "before the softmax"),
            (1.0 / d_k, "softmax(QK^T / d_k): divide by sqrt(d_k), not d_k"),
            (np.sqrt(d_k), "softmax(QK^T * sqrt(d_k)): divide by sqrt(d_k) instead of "
                           "multiplying"),
        )
        if d_k > 1:  # with d_k = 1 every one of these scalings is the correct one
            for s, what in wrong_scalings:
                _, wrong_w = reference(Q * s * np.sqrt(d_k), K, V, mask)
                if close(weights, wrong_w, rtol=RTOL, atol=ATOL):
                    fail(f"With d_k = {d_k} your weights match {what}.")
        fail("The attention weights differ from softmax(QK^T / sqrt(d_k)): "
             + worst_mismatch(weights, expected_w) + ". Check the order of Q and K^T and "
             "that you transpose only the last two axes (np.swapaxes(K, -1, -2)).")

    if not close(output, expected_out, rtol=RTOL, atol=ATOL):
        fail("The weights are right but the output is not weights @ V: "
             + worst_mismatch(output, expected_out) + ".")


def check_unmasked(fn: Function, *, seed: int = 0, batch_shape=(2,), q_len: int = 4,
                   k_len: int = 6, d_k: int = 8, d_v: int = 5) -> None:
    """Shapes and values without a mask, batched over leading axes, with Lq != Lk and d_v != d_k."""
    __tracebackhide__ = True
    Q, K, V = _random_qkv(seeded(seed), batch_shape, q_len, k_len, d_k, d_v)
    output, weights = _run(fn, Q, K, V)
    _diagnose(Q, K, V, None, output, weights)
    passed(f"unmasked attention matches the reference for Q{Q.shape}, K{K.shape}, V{V.shape}")


def check_scaling(fn: Function, *, seed: int = 1, d_ks=(1, 64)) -> None:
    """The scores are divided by sqrt(d_k), including the edge case d_k = 1."""
    __tracebackhide__ = True
    rng = seeded(seed)
    for d_k in d_ks:
        Q, K, V = _random_qkv(rng, (3,), 5, 5, d_k, 4)
        output, weights = _run(fn, Q, K, V)
        _diagnose(Q, K, V, None, output, weights)
    passed(f"scaling by sqrt(d_k) is right for d_k in {tuple(d_ks)}")


def causal_mask(q_len: int, k_len: int) -> np.ndarray:
    """True where query i may attend to key j, i.e. j <= i (keys aligned to the end)."""
    return np.tril(np.ones((q_len, k_len), dtype=bool), k=k_len - q_len)


def check_causal_mask(fn: Function, *, seed: int = 2, batch_shape=(2, 3), length: int = 5,
                      d_k: int = 4, d_v: int = 3) -> None:
    """A causal (lower-triangular) boolean mask broadcast over the batch axes."""
    __tracebackhide__ = True
    Q, K, V = _random_qkv(seeded(seed), batch_shape, length, length, d_k, d_v)
    mask = causal_mask(length, length)
    output, weights = _run(fn, Q, K, V, mask)
    _diagnose(Q, K, V, mask, output, weights)
    passed(f"a causal mask of shape {mask.shape} broadcast over batch {tuple(batch_shape)} works")


def check_single_key_rows(fn: Function, *, seed: int = 3, q_len: int = 4, k_len: int = 6,
                          d_k: int = 8, d_v: int = 5) -> None:
    """Rows whose mask allows exactly one key must put all their weight on it."""
    __tracebackhide__ = True
    rng = seeded(seed)
    Q, K, V = _random_qkv(rng, (2,), q_len, k_len, d_k, d_v)
    mask = np.ones((2, q_len, k_len), dtype=bool)
    # Every other row may see exactly one key, chosen at random.
    for b in range(2):
        for i in range(0, q_len, 2):
            mask[b, i] = False
            mask[b, i, rng.integers(k_len)] = True
    output, weights = _run(fn, Q, K, V, mask)
    _diagnose(Q, K, V, mask, output, weights)
    passed("rows with a single allowed key put all their weight on it")


def check_padding_mask(fn: Function, *, seed: int = 4, lengths=(3, 6, 1), q_len: int = 4,
                       d_k: int = 8, d_v: int = 2) -> None:
    """A key-padding mask of shape (B, 1, Lk): sequence b has only lengths[b] real keys."""
    __tracebackhide__ = True
    k_len = max(lengths)
    Q, K, V = _random_qkv(seeded(seed), (len(lengths),), q_len, k_len, d_k, d_v)
    mask = (np.arange(k_len)[None, :] < np.asarray(lengths)[:, None])[:, None, :]
    output, weights = _run(fn, Q, K, V, mask)
    _diagnose(Q, K, V, mask, output, weights)
    passed(f"a key-padding mask for lengths {tuple(lengths)} works")


def check_large_logits(fn: Function, *, seed: int = 5, magnitude: float = 40.0,
                       with_mask: bool = False) -> None:
    """Scores in the thousands: a softmax that does not subtract the maximum overflows."""
    __tracebackhide__ = True
    # Entries of size `magnitude` give scaled scores of order magnitude**2 (about 1600),
    # far past the ~709 at which exp() overflows float64.
    Q, K, V = _random_qkv(seeded(seed), (2,), 4, 6, 16, 3, scale=magnitude)
    mask = causal_mask(4, 6) if with_mask else None
    output, weights = _run(fn, Q, K, V, mask)
    _diagnose(Q, K, V, mask, output, weights)
    largest = float(np.abs(Q @ np.swapaxes(K, -1, -2)).max() / np.sqrt(Q.shape[-1]))
    passed(f"scores up to {largest:.0f} do not overflow")
