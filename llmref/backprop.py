# GENERATED from solutions/03_backprop/03_backprop.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Backward passes of the softmax and of scaled dot-product attention in NumPy: the reference for exercise 03_backprop."""
import numpy as np

from llmref.attention import scaled_dot_product_attention


def softmax_backward(y, grad_y, axis=-1):
    """Vector-Jacobian product of the softmax.

    y: the softmax's output, y = softmax(x, axis); grad_y: dL/dy, the same shape.
    Returns dL/dx, the same shape as y.
    """
    # One <grad_y, y> per softmax: keepdims so it broadcasts back along `axis`.
    total = np.sum(grad_y * y, axis=axis, keepdims=True)
    return y * (grad_y - total)


def attention_backward(Q, K, V, grad_out, mask=None):
    """Gradients of scaled dot-product attention's output with respect to Q, K and V.

    Q: (..., L_q, d_k), K: (..., L_k, d_k), V: (..., L_k, d_v), with the same batch axes.
    grad_out: (..., L_q, d_v), dL/d(output) for output = scaled_dot_product_attention(Q, K, V, mask)[0].
    mask: optional boolean array broadcastable to (..., L_q, L_k); True = may attend.
    Returns (dQ, dK, dV) with the shapes of Q, K and V.
    """
    # The forward weights, masked exactly as in the forward pass.
    weights = scaled_dot_product_attention(Q, K, V, mask)[1]
    # output = weights @ V: each value collects the gradient of every query that read it.
    dV = np.swapaxes(weights, -1, -2) @ grad_out
    d_weights = grad_out @ np.swapaxes(V, -1, -2)
    # Blocked pairs have weight exactly 0, so their scores get exactly 0 gradient.
    d_scores = softmax_backward(weights, d_weights, axis=-1)
    # scores = Q @ K^T / sqrt(d_k): the scale comes back in both gradients.
    scale = 1.0 / np.sqrt(Q.shape[-1])
    dQ = d_scores @ K * scale
    dK = np.swapaxes(d_scores, -1, -2) @ Q * scale
    return dQ, dK, dV
