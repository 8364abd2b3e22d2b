# GENERATED from solutions/02_attention/02_attention.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Scaled dot-product attention in NumPy: the reference for exercise 02_attention."""
import numpy as np


def scaled_dot_product_attention(Q, K, V, mask=None):
    """Scaled dot-product attention, batched over any leading axes.

    Q: (..., L_q, d_k), K: (..., L_k, d_k), V: (..., L_k, d_v).
    mask: optional boolean array broadcastable to (..., L_q, L_k); True = may attend.
    Returns (output, weights) with shapes (..., L_q, d_v) and (..., L_q, L_k).
    """
    d_k = Q.shape[-1]
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(d_k)
    if mask is not None:
        # -inf becomes exactly 0 after exp, so the allowed keys share all the weight.
        scores = np.where(mask, scores, -np.inf)
    # softmax is unchanged by subtracting a constant per row; the row max keeps exp() <= 1.
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights = weights / weights.sum(axis=-1, keepdims=True)
    return weights @ V, weights
