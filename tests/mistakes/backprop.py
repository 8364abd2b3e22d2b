"""Wrong versions of softmax_backward and attention_backward (exercise 03_backprop).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "03_backprop"

RIGHT_SOFTMAX = '''def softmax_backward(y, grad_y, axis=-1):
    total = np.sum(grad_y * y, axis=axis, keepdims=True)
    return y * (grad_y - total)
'''

RIGHT_ATTENTION = '''def attention_backward(Q, K, V, grad_out, mask=None):
    _, W = scaled_dot_product_attention(Q, K, V, mask)
    scale = 1.0 / np.sqrt(Q.shape[-1])
    dV = np.swapaxes(W, -1, -2) @ grad_out
    dS = softmax_backward(W, grad_out @ np.swapaxes(V, -1, -2))
    dQ = dS @ K * scale
    dK = np.swapaxes(dS, -1, -2) @ Q * scale
    return dQ, dK, dV
'''


SOFTMAX = [
    Mistake("jacobian_diagonal_only", "softmax_backward", edited(RIGHT_SOFTMAX,
        ("return y * (grad_y - total)", "return y * (1 - y) * grad_y"),
    ), says="only the diagonal"),
    Mistake("missing_sum_term", "softmax_backward", edited(RIGHT_SOFTMAX,
        ("return y * (grad_y - total)", "return y * grad_y"),
    ), says="the sum term is missing"),
    Mistake("sum_along_last_axis_always", "softmax_backward", edited(RIGHT_SOFTMAX,
        ("axis=axis, keepdims=True", "axis=-1, keepdims=True"),
    ), says="Sum along `axis`"),
    Mistake("sum_over_whole_array", "softmax_backward", edited(RIGHT_SOFTMAX,
        ("np.sum(grad_y * y, axis=axis, keepdims=True)", "np.sum(grad_y * y)"),
    ), says="one sum per softmax"),
    Mistake("sum_without_keepdims", "softmax_backward", edited(RIGHT_SOFTMAX,
        (", keepdims=True", ""),
    ), says="keepdims=True"),
    Mistake("sign_flipped", "softmax_backward", edited(RIGHT_SOFTMAX,
        ("y * (grad_y - total)", "y * (total - grad_y)"),
    ), says="wrong sign"),
    Mistake("returns_the_jacobian", "softmax_backward", edited(RIGHT_SOFTMAX,
        ("return y * (grad_y - total)", "return y[..., :, None] * (np.eye(y.shape[-1]) - y[..., None, :])"),
    ), says="a Jacobian rather than its product"),
]

ATTENTION = [
    Mistake("missing_scale", "attention_backward", edited(RIGHT_ATTENTION,
        ("dQ = dS @ K * scale", "dQ = dS @ K"),
        ("dK = np.swapaxes(dS, -1, -2) @ Q * scale", "dK = np.swapaxes(dS, -1, -2) @ Q"),
    ), says="the 1/sqrt(d_k) of the forward pass is missing"),
    Mistake("dK_transposed", "attention_backward", edited(RIGHT_ATTENTION,
        ("dK = np.swapaxes(dS, -1, -2) @ Q * scale", "dK = np.swapaxes(Q, -1, -2) @ dS * scale"),
    ), says="it looks transposed"),
    Mistake("dK_uses_dS_not_its_transpose", "attention_backward", edited(RIGHT_ATTENTION,
        ("dK = np.swapaxes(dS, -1, -2) @ Q * scale", "dK = dS @ Q * scale"),
    ), says="where it needs dS^T"),
    Mistake("dQ_dK_swapped", "attention_backward", edited(RIGHT_ATTENTION,
        ("return dQ, dK, dV", "return dK, dQ, dV"),
    ), says="swapped"),
    Mistake("dV_without_transpose", "attention_backward", edited(RIGHT_ATTENTION,
        ("dV = np.swapaxes(W, -1, -2) @ grad_out", "dV = W @ grad_out"),
    ), says="Transpose the weights"),
    Mistake("mask_ignored_in_backward", "attention_backward", edited(RIGHT_ATTENTION,
        ("scaled_dot_product_attention(Q, K, V, mask)", "scaled_dot_product_attention(Q, K, V)"),
    ), says="positions the mask blocks"),
    Mistake("skips_softmax_backward", "attention_backward", edited(RIGHT_ATTENTION,
        ("dS = softmax_backward(W, grad_out @ np.swapaxes(V, -1, -2))", "dS = grad_out @ np.swapaxes(V, -1, -2)"),
    ), says="skips the softmax's backward pass"),
    Mistake("forgets_return", "attention_backward", edited(RIGHT_ATTENTION,
        ("    return dQ, dK, dV\n", ""),
    ), says="returned None"),
]

MISTAKES = SOFTMAX + ATTENTION + [
    # The right numbers from autograd: the exercise is to derive the backward pass.
    Mistake("softmax_backward_by_autograd", "softmax_backward", """def softmax_backward(y, grad_y, axis=-1):
    import torch
    logits = torch.from_numpy(np.log(np.asarray(y, dtype=np.float64))).requires_grad_(True)
    torch.softmax(logits, dim=axis).backward(torch.from_numpy(np.asarray(grad_y, dtype=np.float64)))
    return logits.grad.numpy()
""", says="which does the exercise for you"),
]
