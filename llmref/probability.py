# GENERATED from solutions/01_softmax/01_softmax.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Softmax, log-softmax and cross-entropy in NumPy: the reference for exercise 01_softmax."""
import numpy as np


def softmax(x, axis=-1):
    """Softmax of `x` along `axis`: non-negative, sums to 1 along that axis.

    x: float array of any shape. Returns an array of the same shape.
    Must not overflow for large logits (e.g. +-1e4).
    """
    x = np.asarray(x, dtype=float)
    # softmax(x) = softmax(x - m): with m the slice's maximum every exponent is <= 0,
    # so exp() cannot overflow and the largest term is exactly 1 (no 0 / 0 either).
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """Logarithm of softmax(x, axis), computed stably with the log-sum-exp trick.

    x: float array of any shape. Returns an array of the same shape, all values <= 0.
    Must stay finite for large logits (e.g. +-1e4), where log(softmax(x)) gives -inf.
    """
    x = np.asarray(x, dtype=float)
    shifted = x - x.max(axis=axis, keepdims=True)
    # log(sum(exp(shifted))) lies in [0, log(n)]: the sum holds a term equal to 1, so it
    # never underflows to 0, and the log is never taken of a probability that did.
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy(logits, targets):
    """Mean negative log-likelihood of integer `targets` under softmax(logits).

    logits: float array of shape (..., C), classes on the last axis.
    targets: integer array of shape (...), each entry a class id in 0 .. C-1.
    Returns a float: -mean(log_softmax(logits)[..., target]) over all examples.
    """
    logp = log_softmax(logits, axis=-1)
    targets = np.asarray(targets)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)
    return float(-picked.mean())
