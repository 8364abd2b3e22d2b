"""Wrong versions of scaled_dot_product_attention (exercise 02_attention)."""
from . import Mistake

EXERCISE = "02_attention"
CELL = "scaled_dot_product_attention"


def _sdpa(body: str) -> str:
    return "def scaled_dot_product_attention(Q, K, V, mask=None):\n" + body


MISTAKES = [
    Mistake("missing_scale", CELL, _sdpa("""
    scores = Q @ np.swapaxes(K, -1, -2)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(axis=-1, keepdims=True)
    return w @ V, w
"""), says="not scaled"),
    Mistake("scaled_by_d_k", CELL, _sdpa("""
    scores = Q @ np.swapaxes(K, -1, -2) / Q.shape[-1]
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(axis=-1, keepdims=True)
    return w @ V, w
"""), says="not d_k"),
    Mistake("softmax_wrong_axis", CELL, _sdpa("""
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=-2, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(axis=-2, keepdims=True)
    return w @ V, w
"""), says="axis=-1"),
    Mistake("mask_after_softmax", CELL, _sdpa("""
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
    scores = scores - scores.max(axis=-1, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(axis=-1, keepdims=True)
    if mask is not None:
        w = w * mask
    return w @ V, w
"""), says="after the softmax"),
    Mistake("mask_polarity_inverted", CELL, _sdpa("""
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
    if mask is not None:
        scores = np.where(mask, -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(axis=-1, keepdims=True)
    w = np.nan_to_num(w)
    return w @ V, w
"""), says="True means 'may attend'"),
    Mistake("naive_softmax_overflows", CELL, _sdpa("""
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    w = np.exp(scores)
    w = w / w.sum(axis=-1, keepdims=True)
    return w @ V, w
"""), says="Subtract each row's maximum"),
    Mistake("transposes_batch_axes", CELL, _sdpa("""
    scores = Q @ K.T / np.sqrt(Q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    w = np.exp(scores)
    w = w / w.sum(axis=-1, keepdims=True)
    return w @ V, w
"""), says="raised ValueError"),
    Mistake("forgets_return", CELL, _sdpa("""
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    w = w / w.sum(axis=-1, keepdims=True)
    output = w @ V
"""), says="returned None"),
    Mistake("returns_output_only", CELL, _sdpa("""
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(Q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)) @ V
"""), says="pair `(output, weights)`"),
    # The right numbers from torch's kernel: the exercise is to write attention in NumPy.
    Mistake("torch_scaled_dot_product_attention", CELL, _sdpa("""
    import torch
    q, k, v = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (Q, K, V))
    blocked = None if mask is None else torch.from_numpy(np.asarray(mask))
    output = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=blocked)
    scores = (Q @ np.swapaxes(K, -1, -2)) / np.sqrt(Q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return output.numpy(), w / w.sum(axis=-1, keepdims=True)
"""), says="which does the exercise for you"),
]
