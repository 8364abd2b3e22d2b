"""Wrong versions of softmax_backward and attention_backward (exercise 03_backprop)."""
from . import Mistake

EXERCISE = "03_backprop"


def _softmax(body: str) -> str:
    return "def softmax_backward(y, grad_y, axis=-1):\n" + body


def _attention(body: str) -> str:
    return "def attention_backward(Q, K, V, grad_out, mask=None):\n" + body


SOFTMAX = [
    Mistake("jacobian_diagonal_only", "softmax_backward", _softmax("""
    return y * (1 - y) * grad_y
"""), says="only the diagonal"),
    Mistake("missing_sum_term", "softmax_backward", _softmax("""
    return y * grad_y
"""), says="the sum term is missing"),
    Mistake("sum_along_last_axis_always", "softmax_backward", _softmax("""
    return y * (grad_y - np.sum(grad_y * y, axis=-1, keepdims=True))
"""), says="Sum along `axis`"),
    Mistake("sum_over_whole_array", "softmax_backward", _softmax("""
    return y * (grad_y - np.sum(grad_y * y))
"""), says="one sum per softmax"),
    Mistake("sum_without_keepdims", "softmax_backward", _softmax("""
    return y * (grad_y - np.sum(grad_y * y, axis=axis))
"""), says="keepdims=True"),
    Mistake("sign_flipped", "softmax_backward", _softmax("""
    return y * (np.sum(grad_y * y, axis=axis, keepdims=True) - grad_y)
"""), says="wrong sign"),
    Mistake("returns_the_jacobian", "softmax_backward", _softmax("""
    return y[..., :, None] * (np.eye(y.shape[-1]) - y[..., None, :])
"""), says="a Jacobian rather than its product"),
]

# Each attention mistake starts from the right forward weights unless the mistake is there.
_WEIGHTS = """
    _, W = scaled_dot_product_attention(Q, K, V, mask)
    scale = 1.0 / np.sqrt(Q.shape[-1])
"""
_RIGHT_dV_dS = _WEIGHTS + """
    dV = np.swapaxes(W, -1, -2) @ grad_out
    dS = softmax_backward(W, grad_out @ np.swapaxes(V, -1, -2))
"""

ATTENTION = [
    Mistake("missing_scale", "attention_backward", _attention(_RIGHT_dV_dS + """
    return dS @ K, np.swapaxes(dS, -1, -2) @ Q, dV
"""), says="the 1/sqrt(d_k) of the forward pass is missing"),
    Mistake("dK_transposed", "attention_backward", _attention(_RIGHT_dV_dS + """
    return dS @ K * scale, np.swapaxes(Q, -1, -2) @ dS * scale, dV
"""), says="it looks transposed"),
    Mistake("dK_uses_dS_not_its_transpose", "attention_backward", _attention(_RIGHT_dV_dS + """
    return dS @ K * scale, dS @ Q * scale, dV
"""), says="where it needs dS^T"),
    Mistake("dQ_dK_swapped", "attention_backward", _attention(_RIGHT_dV_dS + """
    return np.swapaxes(dS, -1, -2) @ Q * scale, dS @ K * scale, dV
"""), says="swapped"),
    Mistake("dV_without_transpose", "attention_backward", _attention(_WEIGHTS + """
    dV = W @ grad_out
    dS = softmax_backward(W, grad_out @ np.swapaxes(V, -1, -2))
    return dS @ K * scale, np.swapaxes(dS, -1, -2) @ Q * scale, dV
"""), says="Transpose the weights"),
    Mistake("mask_ignored_in_backward", "attention_backward", _attention("""
    _, W = scaled_dot_product_attention(Q, K, V)
    scale = 1.0 / np.sqrt(Q.shape[-1])
    dV = np.swapaxes(W, -1, -2) @ grad_out
    dS = softmax_backward(W, grad_out @ np.swapaxes(V, -1, -2))
    return dS @ K * scale, np.swapaxes(dS, -1, -2) @ Q * scale, dV
"""), says="positions the mask blocks"),
    Mistake("skips_softmax_backward", "attention_backward", _attention(_WEIGHTS + """
    dV = np.swapaxes(W, -1, -2) @ grad_out
    dS = grad_out @ np.swapaxes(V, -1, -2)
    return dS @ K * scale, np.swapaxes(dS, -1, -2) @ Q * scale, dV
"""), says="skips the softmax's backward pass"),
    Mistake("forgets_return", "attention_backward", _attention(_RIGHT_dV_dS + """
    dQ, dK = dS @ K * scale, np.swapaxes(dS, -1, -2) @ Q * scale
"""), says="returned None"),
]

MISTAKES = SOFTMAX + ATTENTION + [
    # The right numbers from autograd: the exercise is to derive the backward pass.
    Mistake("softmax_backward_by_autograd", "softmax_backward", _softmax("""
    import torch
    logits = torch.from_numpy(np.log(np.asarray(y, dtype=np.float64))).requires_grad_(True)
    torch.softmax(logits, dim=axis).backward(torch.from_numpy(np.asarray(grad_y, dtype=np.float64)))
    return logits.grad.numpy()
"""), says="which does the exercise for you"),
]
