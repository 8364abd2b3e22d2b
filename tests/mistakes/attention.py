"""Wrong versions of scaled_dot_product_attention (exercise 02_attention).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
Most instructive first (the first three go through real nbgrader); the library shortcut last.
"""
from . import Mistake, edited

EXERCISE = "02_attention"
CELL = "scaled_dot_product_attention"

RIGHT = '''def scaled_dot_product_attention(Q, K, V, mask=None):
    d_k = Q.shape[-1]
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(d_k)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights = weights / weights.sum(axis=-1, keepdims=True)
    return weights @ V, weights
'''


MASK_BEFORE = ("    if mask is not None:\n"
               "        scores = np.where(mask, scores, -np.inf)\n")
RETURN = "    return weights @ V, weights\n"

MISTAKES = [
    Mistake("missing_scale", CELL, edited(RIGHT,
        (" / np.sqrt(d_k)", ""),
    ), says="not scaled"),
    Mistake("scaled_by_d_k", CELL, edited(RIGHT,
        ("/ np.sqrt(d_k)", "/ d_k"),
    ), says="not d_k"),
    Mistake("softmax_wrong_axis", CELL, edited(RIGHT,
        ("scores.max(axis=-1, ", "scores.max(axis=-2, "),
        ("weights.sum(axis=-1, ", "weights.sum(axis=-2, "),
    ), says="axis=-1"),
    Mistake("mask_after_softmax", CELL, edited(RIGHT,
        (MASK_BEFORE, ""),
        (RETURN, "    if mask is not None:\n        weights = weights * mask\n" + RETURN),
    ), says="after the softmax"),
    # The mask read the other way round; nan_to_num hides the all-blocked rows it makes.
    Mistake("mask_polarity_inverted", CELL, edited(RIGHT,
        ("np.where(mask, scores, -np.inf)", "np.where(mask, -np.inf, scores)"),
        (RETURN, "    weights = np.nan_to_num(weights)\n" + RETURN),
    ), says="True means 'may attend'"),
    Mistake("naive_softmax_overflows", CELL, edited(RIGHT,
        ("    scores = scores - scores.max(axis=-1, keepdims=True)\n", ""),
    ), says="Subtract each row's maximum"),
    Mistake("transposes_batch_axes", CELL, edited(RIGHT,
        ("np.swapaxes(K, -1, -2)", "K.T"),
    ), says="raised ValueError"),
    Mistake("forgets_return", CELL, edited(RIGHT,
        (RETURN, "    output = weights @ V\n"),
    ), says="returned None"),
    Mistake("returns_output_only", CELL, edited(RIGHT,
        ("return weights @ V, weights", "return weights @ V"),
    ), says="pair `(output, weights)`"),
    # The right numbers from torch's kernel: the exercise is to write attention in NumPy.
    Mistake("torch_scaled_dot_product_attention", CELL, edited(RIGHT,
        (RETURN,
         "    import torch\n"
         "    q, k, v = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (Q, K, V))\n"
         "    allowed = None if mask is None else torch.from_numpy(np.asarray(mask))\n"
         "    output = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)\n"
         "    return output.numpy(), weights\n"),
    ), says="which does the exercise for you"),
]
