"""Checks for exercise 01_softmax: softmax, log-softmax and cross-entropy in NumPy.

Each check draws seeded random logits (float64), calls the learner's function and compares
it with :mod:`llmref.probability`, itself tested against ``torch.softmax``,
``torch.log_softmax`` and ``torch.nn.functional.cross_entropy`` in
tests/test_llmref_probability.py.

On a mismatch a check first compares the learner's result with what each common mistake
computes (no max subtracted, log of the softmax, the sum instead of the mean, ...) and
names the one it matches, so a failure says what to fix rather than only that values differ.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from llmref.probability import cross_entropy as reference_cross_entropy
from llmref.probability import log_softmax as reference_log_softmax
from llmref.probability import softmax as reference_softmax

from ._core import (as_float_array, call_learner, fail, find_bad_values, first_match, hint_on_error,
                    matches, passed, refuse_shortcuts, seeded, shape_of, to_numpy, worst_mismatch)

# Inputs are float64. Correct implementations differ only in rounding: a few ulps of the
# largest logit, about 2e-16 * 1e5 = 2e-11 for the largest logits the checks use. 1e-6
# (relative and absolute) leaves a wide margin for that and for a learner who computes in
# float32 on ordinary logits (errors near 1e-7), while every mistake the checks name moves
# some value by more than 1e-2.
RTOL = 1e-6
ATOL = 1e-6

Function = Callable[..., object]

KEEPDIMS_HINT = ("A reduction such as x.max(axis=axis) drops that axis, so its result no longer "
                 "lines up with x; pass keepdims=True to max and sum so the result broadcasts "
                 "against x.")
CLASS_IDS_HINT = ("`targets` holds integer class ids of shape {targets_shape}, not one-hot rows of "
                  "shape {logits_shape}. Use it as an index: logp[np.arange(N), targets] for 2-D "
                  "logits, or np.take_along_axis(logp, targets[..., None], axis=-1) for any shape.")
LEADING_AXES_HINT = ("The logits here have shape {logits_shape}: every position of the leading "
                     "axes {batch} is one example. Reshape the logits to (-1, C) and the targets to "
                     "(-1,), or use np.take_along_axis(logp, targets[..., None], axis=-1), so that "
                     "every example counts once.")
DEPENDS_HINT = ("If your function calls your softmax or log_softmax, make that function's test "
                "pass first.")


# The library functions that compute a softmax, a log-softmax or a cross-entropy for the learner.
# Only those: a cross_entropy may return its number as a torch tensor (tests/test_01_softmax.py).
SHORTCUTS = {"scipy.special": None, "jax": None, "torch.nn.functional": None, "torch.special": None,
             **{f"torch.{f}": None for f in ("softmax", "log_softmax", "logsumexp",
                                             "cross_entropy", "nll_loss", "_softmax",
                                             "_log_softmax")}}
# Why the exercise refuses them.
WHY_BY_HAND = ("Write it in NumPy: subtracting the maximum, exponentiating and normalising "
               "yourself is the exercise, and it is where the overflow of large logits is won "
               "or lost.")


# --------------------------------------------------------------------------- helpers

def _call(fn: Function, *args, name: str, hint: Callable[[BaseException], str | None], **kwargs):
    """The learner's call, shortcuts refused; if their code raises, `hint(error)` may add a line."""
    __tracebackhide__ = True
    with hint_on_error(hint), refuse_shortcuts(SHORTCUTS, name, WHY_BY_HAND):
        return call_learner(fn, *args, name=name, **kwargs)


def _keepdims_hint(error: BaseException) -> str | None:
    return KEEPDIMS_HINT if isinstance(error, ValueError) and "broadcast" in str(error) else None


# Whether a result is what a candidate (usually a known mistake) computes, at the checks'
# tolerance; NaN and inf count as equal to themselves, so an overflow is recognised by where
# it happens.
_looks_like = functools.partial(matches, rtol=RTOL, atol=ATOL)


def _logits(rng: np.random.Generator, shape, scale: float = 3.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale


def _large_logits(rng: np.random.Generator, magnitude: float, n_classes: int = 6) -> np.ndarray:
    """Four rows of logits, each a trap for one way of computing softmax.

    row 0 sits near +magnitude: exp() overflows unless the maximum is subtracted;
    row 1 sits near -magnitude: subtracting the whole array's maximum instead of the row's
          leaves every exponent far below 0, exp() gives 0 and 0 / 0 = NaN;
    row 2 is ordinary, but far below the global maximum, like row 1;
    row 3 mixes +-magnitude: its small probabilities underflow to exactly 0, so
          log(softmax) gives -inf where the true value is about -2 * magnitude.
    """
    noise = rng.standard_normal((4, n_classes))
    rows = np.stack([magnitude + noise[0], -magnitude + noise[1], 2.0 * noise[2],
                     magnitude * rng.choice([-1.0, 1.0], n_classes) + noise[3]])
    rows[3, 0] = magnitude  # at least one large entry, so the row is a real mix
    return rows


def _other_axes(ndim: int, axis: int) -> list[int]:
    return [k for k in range(ndim) if k != axis % ndim]


def _axis_text(axis: int) -> str:
    return f"axis={axis}"


# ------------------------------------------------------------------ known mistakes

def _softmax_no_shift(x, axis):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_global_max(x, axis):
    e = np.exp(x - x.max())
    return e / e.sum(axis=axis, keepdims=True)


def _log_of_softmax(x, axis):
    return np.log(reference_softmax(x, axis=axis))


def _log_of_unshifted_softmax(x, axis):
    return np.log(_softmax_no_shift(x, axis))


def _logsumexp_no_shift(x, axis):
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


# --------------------------------------------------------------------------- softmax

def _run_softmax_like(fn: Function, name: str, x: np.ndarray, axis: int | None) -> np.ndarray:
    __tracebackhide__ = True
    kwargs = {} if axis is None else {"axis": axis}
    result = _call(fn, x.copy(), name=name, hint=_keepdims_hint, **kwargs)
    if result is None:
        fail(f"`{name}` returned None. Does it end with a `return` statement?")
    return as_float_array(result, f"The array `{name}` returned", x.shape)


def _diagnose_softmax(x: np.ndarray, axis: int, out: np.ndarray) -> None:
    __tracebackhide__ = True
    expected = reference_softmax(x, axis=axis)
    largest = float(np.abs(x).max())
    bad = find_bad_values(out)
    if bad:
        if _looks_like(out, lambda: _softmax_global_max(x, axis)):
            fail(f"softmax returned {bad} values. It looks like you subtract the maximum of the "
                 "whole array (x.max()), which is right in theory, but a slice whose logits all lie "
                 "far below that maximum gets exp() = 0 everywhere and 0 / 0 = NaN. Subtract each "
                 "slice's own maximum: x.max(axis=axis, keepdims=True).")
        fail(f"softmax returned {bad} values for logits up to {largest:.3g} in size. np.exp "
             "overflows to inf above about 709 (and inf / inf is NaN). Subtract the maximum along "
             "`axis` first, x - x.max(axis=axis, keepdims=True): softmax(x) = softmax(x - c) for "
             "any constant c, and afterwards the largest exponent is exp(0) = 1.")
    if out.min() < -ATOL:
        fail(f"softmax returned a negative value ({out.min():.3g}); probabilities are >= 0. "
             "Exponentiate the (shifted) logits before normalising.")
    if axis % x.ndim != x.ndim - 1 and _looks_like(out, lambda: reference_softmax(x, axis=-1)):
        fail(f"Called with {_axis_text(axis)}, your softmax normalised along the last axis instead: "
             "it ignores the `axis` argument. Pass `axis` on to every max and sum.")
    sums = out.sum(axis=axis)
    if not np.allclose(sums, 1.0, rtol=RTOL, atol=ATOL):
        for k in _other_axes(x.ndim, axis):
            if np.allclose(out.sum(axis=k), 1.0, rtol=RTOL, atol=ATOL):
                fail(f"Your softmax sums to 1 along axis {k}, but it was asked for "
                     f"{_axis_text(axis)}: normalised along axis {k}, not {axis}. Use the same "
                     "`axis` for the max, the exp-sum and keepdims.")
        if _looks_like(out, lambda: np.exp(x - x.max(axis=axis, keepdims=True))):
            fail("The values are exp(x - max) but not normalised: divide by their sum along "
                 "`axis` (keepdims=True) so that they add up to 1.")
        fail(f"softmax does not sum to 1 along {_axis_text(axis)}: sums range from "
             f"{sums.min():.4g} to {sums.max():.4g}. Divide the exponentials by their sum "
             "along that axis.")
    if not np.allclose(out, expected, rtol=RTOL, atol=ATOL):
        fail("softmax sums to 1 but its values differ from exp(x) / sum(exp(x)): "
             + worst_mismatch(out, expected) + ". Subtract a constant per slice (its maximum) "
             "only, the same one for every entry of the slice.")


def check_softmax(fn: Function, *, seed: int = 0, shape=(4, 7)) -> None:
    """Values along the default (last) axis, called as softmax(x)."""
    __tracebackhide__ = True
    x = _logits(seeded(seed), shape)
    out = _run_softmax_like(fn, "softmax", x, None)
    _diagnose_softmax(x, -1, out)
    passed(f"softmax matches the reference on logits of shape {x.shape}")


def check_softmax_axis(fn: Function, *, seed: int = 1, shape=(3, 4, 5), axes=(0, 1)) -> None:
    """The `axis` argument: softmax(x, axis=k) normalises along axis k."""
    __tracebackhide__ = True
    x = _logits(seeded(seed), shape)
    for axis in axes:
        out = _run_softmax_like(fn, "softmax", x, axis)
        _diagnose_softmax(x, axis, out)
    passed(f"softmax(x, axis=k) is right for k in {tuple(axes)} on shape {x.shape}")


def check_softmax_large_logits(fn: Function, *, seed: int = 2, magnitude: float = 1e4,
                               axis: int = -1) -> None:
    """Logits of +-magnitude: no overflow, no 0 / 0, exact-looking probabilities."""
    __tracebackhide__ = True
    x = np.moveaxis(_large_logits(seeded(seed), magnitude), -1, axis)
    out = _run_softmax_like(fn, "softmax", x, None if axis == -1 else axis)
    _diagnose_softmax(x, axis, out)
    passed(f"softmax of logits of ±{magnitude:.0e} is finite and right")


# ----------------------------------------------------------------------- log_softmax

def _diagnose_log_softmax(x: np.ndarray, axis: int, out: np.ndarray) -> None:
    __tracebackhide__ = True
    expected = reference_log_softmax(x, axis=axis)
    largest = float(np.abs(x).max())
    m = x.max(axis=axis, keepdims=True)
    bad = find_bad_values(out)
    if bad:
        if _looks_like(out, lambda: _log_of_softmax(x, axis)):
            fail(f"log_softmax returned {bad} values: it computes log(softmax(x)). For logits "
                 f"up to {largest:.3g} in size some probabilities are below the smallest float64 "
                 "(about 1e-308) and become exactly 0, and log(0) = -inf. Use the log-sum-exp "
                 "trick instead: (x - m) - log(sum(exp(x - m))) with m = x.max(axis=axis, "
                 "keepdims=True); it never takes the log of a tiny number.")
        if _looks_like(out, lambda: _logsumexp_no_shift(x, axis)):
            fail(f"log_softmax returned {bad} values: it computes x - log(sum(exp(x))) without "
                 "shifting, and exp() overflows to inf (or underflows to 0) for logits this "
                 f"large ({largest:.3g}). Subtract the maximum m first and add it back: "
                 "log(sum(exp(x))) = m + log(sum(exp(x - m))).")
        if _looks_like(out, lambda: _log_of_unshifted_softmax(x, axis)):
            fail(f"log_softmax returned {bad} values: np.exp overflows for logits this large "
                 f"({largest:.3g}). Subtract the maximum along `axis` first, and use the "
                 "log-sum-exp trick rather than log(softmax(x)).")
        if np.isnan(out).any():
            fail(f"log_softmax returned {bad} values: np.exp overflows above about 709. Subtract "
                 "the maximum along `axis` first and use the log-sum-exp trick: "
                 "(x - m) - log(sum(exp(x - m))).")
        fail(f"log_softmax returned {bad} values where the true log-probabilities are finite: "
             "a probability that underflowed to 0 has been put through log(). Use the log-sum-exp "
             "trick, (x - m) - log(sum(exp(x - m))) with m the maximum along `axis`.")
    if axis % x.ndim != x.ndim - 1 and _looks_like(out, lambda: reference_log_softmax(x, axis=-1)):
        fail(f"Called with {_axis_text(axis)}, your log_softmax worked along the last axis "
             "instead: it ignores the `axis` argument. Pass `axis` on to every max and sum.")
    if np.allclose(out, expected, rtol=RTOL, atol=ATOL):
        return
    if _looks_like(out, lambda: reference_softmax(x, axis=axis)):
        fail("log_softmax returned the probabilities themselves (they sum to 1): return their "
             "logarithm, computed as (x - m) - log(sum(exp(x - m))).")
    if _looks_like(out, lambda: -expected):
        fail("log_softmax has the wrong sign: log-probabilities are <= 0. It is "
             "x - logsumexp(x), not logsumexp(x) - x.")
    if _looks_like(out, lambda: expected + m):
        fail("log_softmax is off by the maximum m: log(sum(exp(x - m))) is the log-sum-exp of the "
             "*shifted* logits, so subtract it from the shifted logits x - m (or add m back: "
             "log(sum(exp(x))) = m + log(sum(exp(x - m)))).")
    if _looks_like(out, lambda: x - m):
        fail("log_softmax returns x - max(x): subtracting the maximum is only the first part. "
             "Also subtract log(sum(exp(x - m))) along `axis`.")
    with np.errstate(all="ignore"):
        sums = np.exp(out).sum(axis=axis)
    if not np.allclose(sums, 1.0, rtol=RTOL, atol=ATOL):
        for k in _other_axes(x.ndim, axis):
            with np.errstate(all="ignore"):
                other = np.exp(out).sum(axis=k)
            if np.allclose(other, 1.0, rtol=RTOL, atol=ATOL):
                fail(f"exp(log_softmax) sums to 1 along axis {k}, but it was asked for "
                     f"{_axis_text(axis)}: normalised along axis {k}, not {axis}. Use the same "
                     "`axis` for the max and the sum, with keepdims=True.")
    fail("log_softmax differs from x - log(sum(exp(x))): " + worst_mismatch(out, expected)
         + ". Compute (x - m) - log(sum(exp(x - m))) with m = x.max(axis=axis, keepdims=True).")


def check_log_softmax(fn: Function, *, seed: int = 3, shape=(4, 7)) -> None:
    """Values along the default (last) axis, called as log_softmax(x)."""
    __tracebackhide__ = True
    x = _logits(seeded(seed), shape)
    out = _run_softmax_like(fn, "log_softmax", x, None)
    _diagnose_log_softmax(x, -1, out)
    passed(f"log_softmax matches the reference on logits of shape {x.shape}")


def check_log_softmax_axis(fn: Function, *, seed: int = 4, shape=(3, 4, 5), axes=(0, 1)) -> None:
    """The `axis` argument: log_softmax(x, axis=k) normalises along axis k."""
    __tracebackhide__ = True
    x = _logits(seeded(seed), shape)
    for axis in axes:
        out = _run_softmax_like(fn, "log_softmax", x, axis)
        _diagnose_log_softmax(x, axis, out)
    passed(f"log_softmax(x, axis=k) is right for k in {tuple(axes)} on shape {x.shape}")


def check_log_softmax_large_logits(fn: Function, *, seed: int = 5, magnitude: float = 1e4,
                                   axis: int = -1) -> None:
    """Logits of +-magnitude: finite log-probabilities as small as -2 * magnitude."""
    __tracebackhide__ = True
    x = np.moveaxis(_large_logits(seeded(seed), magnitude), -1, axis)
    out = _run_softmax_like(fn, "log_softmax", x, None if axis == -1 else axis)
    _diagnose_log_softmax(x, axis, out)
    passed(f"log_softmax of logits of ±{magnitude:.0e} is finite and right "
           f"(down to {out.min():.4g})")


# --------------------------------------------------------------------- cross_entropy

def _run_cross_entropy(fn: Function, logits: np.ndarray, targets: np.ndarray) -> float:
    __tracebackhide__ = True
    def hint(error: BaseException) -> str | None:
        if logits.ndim > 2 and isinstance(error, (IndexError, ValueError)):
            return LEADING_AXES_HINT.format(logits_shape=logits.shape, batch=logits.shape[:-1])
        if isinstance(error, ValueError) and "broadcast" in str(error):
            return CLASS_IDS_HINT.format(targets_shape=targets.shape, logits_shape=logits.shape)
        return None

    result = _call(fn, logits.copy(), targets.copy(), name="cross_entropy", hint=hint)
    if result is None:
        fail("`cross_entropy` returned None. Does it end with a `return` statement?")
    result = to_numpy(result)  # a torch tensor is fine; compare its value
    shape = shape_of(result)
    if shape is None:  # e.g. a ragged list
        fail(f"`cross_entropy` should return one number, but returned {type(result).__name__}.")
    if targets.size > 1 and shape == targets.shape:
        fail(f"`cross_entropy` returned one loss per example (shape {shape}). It should return "
             "their mean, one number: take .mean() over all examples.")
    if shape != () and int(np.prod(shape)) == 1:  # a one-element array holds one number too
        result = np.reshape(result, ())
    elif shape != ():
        fail(f"`cross_entropy` returned an array of shape {shape}; it should return one number, "
             "the mean negative log-likelihood over all examples.")
    return float(as_float_array(result, "The value `cross_entropy` returned", ()))


def _diagnose_cross_entropy(logits: np.ndarray, targets: np.ndarray, value: float) -> None:
    __tracebackhide__ = True
    expected = reference_cross_entropy(logits, targets)
    n_examples, n_classes = targets.size, logits.shape[-1]
    if not np.isfinite(value):
        if np.isinf(value):
            fail(f"The loss is {value}: a log-probability became -inf. That is what "
                 "np.log(softmax(logits)) gives when a probability underflows to exactly 0 "
                 f"(logits here reach {np.abs(logits).max():.3g}). Get the log-probabilities "
                 "from log_softmax (the log-sum-exp trick) instead. " + DEPENDS_HINT)
        fail("The loss is NaN: np.exp overflowed somewhere. Get the log-probabilities from a "
             "log_softmax that subtracts the maximum (the log-sum-exp trick). " + DEPENDS_HINT)
    if np.isclose(value, expected, rtol=RTOL, atol=ATOL):
        return
    logp = reference_log_softmax(logits, axis=-1)
    probs = reference_softmax(logits, axis=-1)
    candidates = (
        (lambda: -expected,
         "The loss has the wrong sign: it is the *negative* log-likelihood, "
         "-mean(log p[target]), a positive number. Add the minus sign."),
        (lambda: expected * n_examples,
         f"The loss is the sum over the {n_examples} examples instead of the mean: divide by the "
         "number of examples (or use .mean())."),
        (lambda: expected / n_classes,
         f"The loss is {n_classes} times too small: it averages over the classes as well as the "
         "examples. Pick one log-probability per example, then take the mean over the examples only."),
        (lambda: -np.mean(logp[..., targets]),
         "The loss averages log-probabilities of every example at every target (logp[:, targets] "
         "is an N x N block). Pick one entry per example: logp[np.arange(N), targets], or "
         "np.take_along_axis(logp, targets[..., None], axis=-1)."),
        (lambda: -np.mean((logp * targets[..., None]).sum(axis=-1)),
         "The loss multiplies the log-probabilities by the target values: `targets` holds class "
         "ids, not one-hot vectors. Use each id as an index into its row of log-probabilities "
         "(or build one-hot rows with np.eye(C)[targets])."),
        (lambda: -np.mean(np.take_along_axis(probs, targets[..., None], axis=-1)),
         "The loss averages the probabilities of the targets, not their logarithms: use "
         "log_softmax(logits), not softmax(logits)."),
        (lambda: -np.mean(np.take_along_axis(reference_log_softmax(logits, axis=0),
                                             targets[..., None], axis=-1)),
         "The log-probabilities are normalised over the examples (axis 0), not over the classes: "
         "take log_softmax along the last axis (axis=-1)."),
    )
    message = first_match(np.asarray(value), candidates, rtol=RTOL, atol=ATOL)
    if message:
        fail(message)
    shape_hint = ""
    if logits.ndim > 2:
        shape_hint = " " + LEADING_AXES_HINT.format(logits_shape=logits.shape, batch=logits.shape[:-1])
    fail(f"cross_entropy returned {value:.6g}, expected {expected:.6g}: "
         "-mean(log_softmax(logits)[..., target]) over all examples." + shape_hint + " "
         + DEPENDS_HINT)


def check_cross_entropy(fn: Function, *, seed: int = 6, batch_shape=(8,), num_classes: int = 5) -> None:
    """Logits of shape (*batch_shape, C) and integer targets of shape batch_shape."""
    __tracebackhide__ = True
    rng = seeded(seed)
    logits = _logits(rng, (*batch_shape, num_classes))
    targets = rng.integers(num_classes, size=batch_shape)
    value = _run_cross_entropy(fn, logits, targets)
    _diagnose_cross_entropy(logits, targets, value)
    passed(f"cross_entropy matches the reference for logits of shape {logits.shape} "
           f"(loss {value:.4f})")


def check_cross_entropy_large_logits(fn: Function, *, seed: int = 7, magnitude: float = 1e4,
                                     batch_shape=(4,)) -> None:
    """Logits of +-magnitude, targets often on a class far below the maximum."""
    __tracebackhide__ = True
    rng = seeded(seed)
    rows = int(np.prod(batch_shape))
    blocks = [_large_logits(rng, magnitude) for _ in range(-(-rows // 4))]
    logits = np.concatenate(blocks)[:rows].reshape(*batch_shape, -1)
    # In each mixed row (every fourth, see _large_logits) the target is the smallest logit,
    # whose softmax probability is exactly 0 in float64: only a loss computed through
    # log-sum-exp gets it right, about 2 * magnitude.
    targets = rng.integers(logits.shape[-1], size=rows)
    targets[3::4] = logits.reshape(rows, -1).argmin(axis=-1)[3::4]
    targets = targets.reshape(batch_shape)
    value = _run_cross_entropy(fn, logits, targets)
    _diagnose_cross_entropy(logits, targets, value)
    passed(f"cross_entropy of logits of ±{magnitude:.0e} is finite and right (loss {value:.6g})")
