"""Checks for exercise 03_backprop: the backward pass of the softmax and of attention.

The learner writes ``softmax_backward(y, grad_y, axis=-1) -> dL/dx`` and
``attention_backward(Q, K, V, grad_out, mask=None) -> (dQ, dK, dV)``. Each check draws
seeded float64 inputs and compares with :mod:`llmref.backprop`, itself tested against
finite differences and torch.autograd in tests/test_llmref_backprop.py.

Before comparing numbers, a check recomputes the usual wrong formulas (the Jacobian's
diagonal only, a missing sum term or scale, a transpose in the wrong place, a mask left out
of the backward pass) and, when the learner's result matches one, says which.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from llmref.attention import scaled_dot_product_attention as forward
from llmref.backprop import attention_backward as reference_attention
from llmref.backprop import softmax_backward as reference_softmax
from llmref.probability import softmax

from ._core import (NUMPY_SHORTCUTS, as_float_array, call_learner, close, expect_tuple, fail,
                    find_bad_values, first_match, passed, refuse_shortcuts, seeded, shape_of,
                    worst_mismatch)
from .attention import causal_mask

# Inputs are float64, so a correct float64 implementation agrees with the reference to about
# 1e-14 (the same formulas in another order). 1e-5 still admits a learner who computes in
# float32 (eps 1.2e-7, summed over at most ~20 terms of order 1), while every known mistake
# changes some gradient entry by more than 1e-2 on these inputs.
RTOL = 1e-5
ATOL = 1e-5
TOL = {"rtol": RTOL, "atol": ATOL}

Function = Callable[..., object]


# --------------------------------------------------------------------------- softmax_backward
# Why autograd (torch, jax) is refused.
WHY_BY_HAND = ("Derive the gradient and write it in NumPy: working out the backward pass by "
               "hand is the exercise; autograd would hand you the numbers without the "
               "understanding.")


def _run_softmax(fn: Function, y, grad_y, axis):
    """Call the learner's softmax_backward; axis=None means 'rely on the default'."""
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "softmax_backward")
    kwargs = {} if axis is None else {"axis": axis}
    with refuse_shortcuts(NUMPY_SHORTCUTS, name, WHY_BY_HAND):
        result = call_learner(fn, y.copy(), grad_y.copy(), name=name, **kwargs)
    if result is None:
        fail(f"`{name}` returned None. Does it end with a `return` statement? It should "
             "return dL/dx, an array with the shape of y.")
    shape = shape_of(result)
    if shape is not None and shape != y.shape and shape in {(y.size, y.size), (*y.shape, y.shape[-1])}:
        fail(f"`{name}` returned an array of shape {shape}, a Jacobian rather than its product "
             "with grad_y. Return the vector-Jacobian product J^T grad_y: an array with the "
             "shape of y, computed without building J.")
    return as_float_array(result, f"The gradient returned by `{name}`", y.shape)


def _diagnose_softmax(y, grad_y, axis, got) -> None:
    __tracebackhide__ = True
    expected = reference_softmax(y, grad_y, axis)
    bad = find_bad_values(got)
    if bad:
        fail(f"The gradient contains {bad} values. y is already the softmax's output: the "
             "backward pass needs no exp() and no division, only y * (grad_y - sum(grad_y * y)).")
    if close(got, expected, **TOL):
        return
    axis_n = axis % y.ndim
    candidates = [
        (lambda: y * (1 - y) * grad_y,
         "The gradient is y * (1 - y) * grad_y: only the diagonal of the softmax's Jacobian. "
         "Every output depends on every input through the normalisation, so the off-diagonal "
         "terms -y_i * y_j count too: dL/dx = y * (grad_y - sum(grad_y * y, axis, keepdims=True))."),
        (lambda: y * grad_y,
         "The gradient is y * grad_y: the sum term is missing. Subtract "
         "sum(grad_y * y) along `axis` (keepdims=True) from grad_y before multiplying by y."),
        (lambda: -expected,
         "The gradient has the wrong sign: it is y * (sum(grad_y * y) - grad_y). "
         "Use y * (grad_y - sum(grad_y * y, axis, keepdims=True))."),
        (lambda: y * (grad_y - np.sum(grad_y * y)),
         "The sum runs over the whole array, but there is one sum per softmax: "
         "np.sum(grad_y * y, axis=axis, keepdims=True)."),
    ]
    candidates += [
        (lambda other=other: y * (grad_y - np.sum(grad_y * y, axis=other, keepdims=True)),
         f"The sum runs along axis {other}, but this softmax is normalised along axis "
         f"{axis_n} (the check passed axis={axis}). Sum along `axis`, the function's "
         "argument, rather than a fixed axis.")
        for other in range(y.ndim) if other != axis_n]
    candidates += [
        # Without keepdims the sums broadcast along the wrong axis, when the shapes allow it.
        (lambda: y * (grad_y - np.sum(grad_y * y, axis=axis)),
         "The sums are right but broadcast back along the wrong axis: pass keepdims=True "
         "to np.sum so each sum stays in line with its own softmax."),
        (lambda: reference_softmax(softmax(y, axis), grad_y, axis),
         "It looks like the softmax was applied to y again. y is already the softmax's "
         "output: use it as it is."),
    ]
    message = first_match(got, candidates, **TOL)
    if message:
        fail(message)
    fail("dL/dx differs from y * (grad_y - sum(grad_y * y, axis, keepdims=True)): "
         + worst_mismatch(got, expected) + ".")


def _softmax_case(fn: Function, rng, shape, axis, scale, pass_axis: bool) -> None:
    __tracebackhide__ = True
    y = softmax(rng.standard_normal(shape) * scale, axis)
    grad_y = rng.standard_normal(shape)
    got = _run_softmax(fn, y, grad_y, axis if pass_axis else None)
    _diagnose_softmax(y, grad_y, axis, got)


def check_softmax_backward(fn: Function, *, seed: int = 10, shape=(6, 6), scale: float = 2.0) -> None:
    """The VJP along the default axis (the last); `scale` spreads the logits, so a large one
    gives a nearly one-hot softmax."""
    __tracebackhide__ = True
    _softmax_case(fn, seeded(seed), tuple(shape), -1, scale, pass_axis=False)
    passed(f"softmax_backward matches the reference along the last axis for shape {tuple(shape)}")


def check_softmax_backward_axis(fn: Function, *, seed: int = 11, shape=(4, 3, 5), axes=(0, 1)) -> None:
    """The VJP along other axes, passed as `axis`."""
    __tracebackhide__ = True
    rng = seeded(seed)
    for axis in axes:
        _softmax_case(fn, rng, tuple(shape), axis, 2.0, pass_axis=True)
    passed(f"softmax_backward matches the reference along axes {tuple(axes)} for shape {tuple(shape)}")


# ------------------------------------------------------------------------- attention_backward

def _swap_last(shape):
    return (*shape[:-2], shape[-1], shape[-2])


def _run_attention(fn: Function, Q, K, V, grad_out, mask):
    """Call the learner's attention_backward; return (dQ, dK, dV) as checked float arrays."""
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "attention_backward")
    kwargs = {} if mask is None else {"mask": mask}
    with refuse_shortcuts(NUMPY_SHORTCUTS, name, WHY_BY_HAND):
        result = call_learner(fn, Q.copy(), K.copy(), V.copy(), grad_out.copy(), name=name, **kwargs)
    result = expect_tuple(result, name, ("dQ", "dK", "dV"), what="three gradients")
    shapes = [shape_of(r) for r in result]
    wanted = {"dQ": Q.shape, "dK": K.shape, "dV": V.shape}
    if Q.shape != K.shape and shapes[0] == K.shape and shapes[1] == Q.shape:
        fail("The first returned gradient has the shape of K and the second that of Q: dQ and dK "
             "look swapped. Return them in the order (dQ, dK, dV).")
    for what, shape in zip(wanted, shapes):
        expected = wanted[what]
        if shape is not None and shape != expected and len(expected) >= 2 and shape == _swap_last(expected):
            fail(f"{what} has shape {shape}, the transpose of the expected {expected}: it looks "
                 f"transposed. Each gradient has the shape of its input: "
                 + {"dQ": "dQ = dS @ K / sqrt(d_k), with dS the gradient of the scores.",
                    "dK": "dK = dS^T @ Q / sqrt(d_k), with dS the gradient of the scores.",
                    "dV": "dV = W^T @ grad_out, with W the forward pass's weights."}[what])
    return tuple(as_float_array(r, f"{what} (returned value {i + 1})", wanted[what])
                 for i, (what, r) in enumerate(zip(wanted, result)))


def _non_finite_hint(mask) -> str:
    if mask is not None:
        return ("Blocked scores are -inf, and -inf - (-inf) or 0 * inf give NaN: in the backward "
                "pass use the weights W (exactly 0 where blocked), never the scores.")
    return "Check for a division by zero or an exp() that overflows."


def _diagnose_attention(Q, K, V, grad_out, mask, dQ, dK, dV) -> None:
    """Compare with the reference; on a mismatch, fail with the likeliest cause."""
    __tracebackhide__ = True
    eQ, eK, eV = reference_attention(Q, K, V, grad_out, mask)
    for what, array in (("dQ", dQ), ("dK", dK), ("dV", dV)):
        bad = find_bad_values(array)
        if bad:
            fail(f"{what} contains {bad} values. {_non_finite_hint(mask)}")
    if close(dQ, eQ, **TOL) and close(dK, eK, **TOL) and close(dV, eV, **TOL):
        return

    if mask is not None:
        allowed = np.broadcast_to(mask, (*Q.shape[:-1], K.shape[-2]))
        hidden = ~allowed.any(axis=-2)  # (..., L_k): keys no query may attend to
        if hidden.any():
            leaked = max(np.abs(dK[hidden]).max(), np.abs(dV[hidden]).max())
            if leaked > ATOL:
                fail(f"Gradient {leaked:.3g} reaches keys the mask blocks for every query; their "
                     "rows of dK and dV must be 0. Recompute the weights with the mask, exactly as "
                     "the forward pass did: scaled_dot_product_attention(Q, K, V, mask).")
        unmasked = reference_attention(Q, K, V, grad_out, None)
        if any(close(got, free, **TOL) and not close(got, want, **TOL)
               for got, free, want in zip((dQ, dK, dV), unmasked, (eQ, eK, eV))):
            fail("Your gradients are those of attention without the mask, so gradient flows to "
                 "positions the mask blocks. Pass the mask when you recompute the weights: "
                 "scaled_dot_product_attention(Q, K, V, mask).")

    if Q.shape == K.shape and close(dQ, eK, **TOL) and close(dK, eQ, **TOL):
        fail("dQ and dK are swapped: return the gradients in the order (dQ, dK, dV).")

    _, W = forward(Q, K, V, mask)
    square = W.shape[-1] == W.shape[-2]
    if not close(dV, eV, **TOL):
        if square and close(dV, W @ grad_out, **TOL):
            fail("dV is weights @ grad_out; it should be weights^T @ grad_out: value j collects "
                 "the gradient of every query that read it. Transpose the weights: "
                 "np.swapaxes(weights, -1, -2) @ grad_out.")
        fail("dV differs from W^T @ grad_out, where W are the forward pass's weights: "
             + worst_mismatch(dV, eV) + ".")

    d_k = Q.shape[-1]
    scale = 1.0 / np.sqrt(d_k)
    dW = grad_out @ np.swapaxes(V, -1, -2)
    dS = reference_softmax(W, dW, -1)
    wrong_dS = {  # the gradient of the scores, computed the usual wrong ways
        "skips the softmax's backward pass: the scores' gradient is not grad_out @ V^T itself but "
        "its softmax VJP, dS = softmax_backward(W, grad_out @ V^T)": dW,
        "uses only the diagonal of the softmax's Jacobian, W * (1 - W) * dW; use "
        "dS = softmax_backward(W, grad_out @ V^T)": W * (1 - W) * dW,
        "uses dS = W * dW: the sum term of the softmax's backward pass is missing; use "
        "dS = softmax_backward(W, grad_out @ V^T)": W * dW,
    }
    gradients = (
        ("dQ", dQ, eQ, "dS @ K / sqrt(d_k)", lambda s: s @ K * scale,
         lambda s: np.swapaxes(s, -1, -2) @ K * scale,
         "dS^T where it needs dS: query i collects from the keys it scored"),
        ("dK", dK, eK, "dS^T @ Q / sqrt(d_k)", lambda s: np.swapaxes(s, -1, -2) @ Q * scale,
         lambda s: s @ Q * scale,
         "dS where it needs dS^T: key j collects the gradient of every query that scored it"),
    )
    for what, got, want, formula, correct, transposed, orientation in gradients:
        if close(got, want, **TOL):
            continue
        if d_k > 1:  # with d_k = 1 every scale below is the right one
            if close(got, want * np.sqrt(d_k), **TOL):
                fail(f"{what} is sqrt(d_k) = {np.sqrt(d_k):.3g} times too large: the 1/sqrt(d_k) "
                     f"of the forward pass is missing. The scores are QK^T / sqrt(d_k), so "
                     f"{what} = {formula}.")
            if close(got, want / np.sqrt(d_k), **TOL):
                fail(f"{what} is sqrt(d_k) = {np.sqrt(d_k):.3g} times too small: divide by "
                     f"sqrt(d_k) once (not by d_k). {what} = {formula}.")
        if square and close(got, transposed(dS), **TOL):
            fail(f"{what} uses {orientation}, so {what} = {formula}.")
        says = first_match(got, ((functools.partial(correct, wrong), says)
                                 for says, wrong in wrong_dS.items()), **TOL)
        if says:
            fail(f"dV is right, but {what} {says}.")
        fail(f"{what} differs from {formula}: {worst_mismatch(got, want)}. dV is right, so check "
             "dS = softmax_backward(W, grad_out @ V^T) and the transposes (and if the "
             "softmax_backward test fails, fix that first).")


def _random_inputs(rng, batch_shape, q_len, k_len, d_k, d_v):
    Q = rng.standard_normal((*batch_shape, q_len, d_k))
    K = rng.standard_normal((*batch_shape, k_len, d_k))
    V = rng.standard_normal((*batch_shape, k_len, d_v))
    grad_out = rng.standard_normal((*batch_shape, q_len, d_v))
    return Q, K, V, grad_out


def _attention_case(fn, Q, K, V, grad_out, mask=None) -> None:
    __tracebackhide__ = True
    dQ, dK, dV = _run_attention(fn, Q, K, V, grad_out, mask)
    _diagnose_attention(Q, K, V, grad_out, mask, dQ, dK, dV)


def check_attention_backward_self(fn: Function, *, seed: int = 20, batch_shape=(2,), length: int = 5,
                                  d_k: int = 8, d_v: int = 3) -> None:
    """Self-attention shapes (L_q = L_k), no mask: where a transpose goes wrong quietly."""
    __tracebackhide__ = True
    Q, K, V, grad_out = _random_inputs(seeded(seed), tuple(batch_shape), length, length, d_k, d_v)
    _attention_case(fn, Q, K, V, grad_out)
    passed(f"attention_backward matches the reference for self-attention with Q and K of shape "
           f"{K.shape}, V of shape {V.shape}")


def check_attention_backward_cross(fn: Function, *, seed: int = 21, batch_shape=(2, 3), q_len: int = 4,
                                   k_len: int = 6, d_k: int = 8, d_v: int = 5) -> None:
    """Batched, L_q != L_k and d_v != d_k, no mask: every gradient has its own shape."""
    __tracebackhide__ = True
    Q, K, V, grad_out = _random_inputs(seeded(seed), tuple(batch_shape), q_len, k_len, d_k, d_v)
    _attention_case(fn, Q, K, V, grad_out)
    passed(f"attention_backward matches the reference for Q{Q.shape}, K{K.shape}, V{V.shape}")


def check_attention_backward_causal(fn: Function, *, seed: int = 22, batch_shape=(2,), q_len: int = 5,
                                    k_len: int = 5, d_k: int = 4, d_v: int = 3) -> None:
    """A causal mask (needs k_len >= q_len) broadcast over the batch axes."""
    __tracebackhide__ = True
    Q, K, V, grad_out = _random_inputs(seeded(seed), tuple(batch_shape), q_len, k_len, d_k, d_v)
    mask = causal_mask(q_len, k_len)
    _attention_case(fn, Q, K, V, grad_out, mask)
    passed(f"attention_backward with a causal mask of shape {mask.shape} matches the reference")


def check_attention_backward_padding(fn: Function, *, seed: int = 23, lengths=(3, 6, 1), q_len: int = 4,
                                     d_k: int = 8, d_v: int = 2) -> None:
    """A key-padding mask of shape (B, 1, L_k): padded keys must get exactly no gradient."""
    __tracebackhide__ = True
    k_len = max(lengths)
    Q, K, V, grad_out = _random_inputs(seeded(seed), (len(lengths),), q_len, k_len, d_k, d_v)
    mask = (np.arange(k_len)[None, :] < np.asarray(lengths)[:, None])[:, None, :]
    _attention_case(fn, Q, K, V, grad_out, mask)
    passed(f"attention_backward with a key-padding mask for lengths {tuple(lengths)} matches the reference")
