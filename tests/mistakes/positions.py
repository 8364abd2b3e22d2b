"""Wrong versions of the functions of exercise 09_positions.

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "09_positions"

FORWARD = '''def embedding_forward(weight, ids):
    V = weight.shape[0]
    bad = (ids < 0) | (ids >= V)
    if bad.any():
        raise IndexError(f"id {ids[bad][0].item()} is not in [0, {V})")
    return weight[ids]
'''

BACKWARD = '''def embedding_backward(grad_output, ids, num_embeddings):
    d = grad_output.shape[-1]
    grad = torch.zeros(num_embeddings, d, dtype=grad_output.dtype)
    grad.index_add_(0, ids.reshape(-1), grad_output.reshape(-1, d))
    return grad
'''

TABLE = '''def sinusoidal_table(length, dim, base=10000.0):
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    p = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    w = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(p * w)
    table[:, 1::2] = torch.cos(p * w)
    return table.float()
'''

ROPE = '''def apply_rope(x, positions=None, base=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = torch.arange(T)
    w = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    angle = positions.float()[:, None] * w
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    a = x[..., 0::2]
    b = x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out
'''


MISTAKES = [
    # ------------------------------------------------------------------ embedding_forward
    # weight[-1] is the last row: without a check of its own a negative id reads a real vector.
    Mistake("lookup_without_range_check", "embedding_forward", edited(FORWARD, (
        '    bad = (ids < 0) | (ids >= V)\n'
        '    if bad.any():\n'
        '        raise IndexError(f"id {ids[bad][0].item()} is not in [0, {V})")\n', ""),
    ), says="silently wraps around"),
    Mistake("lookup_checks_only_the_upper_bound", "embedding_forward", edited(FORWARD, (
        "bad = (ids < 0) | (ids >= V)", "bad = ids >= V"),
    ), says="silently wraps around"),
    Mistake("lookup_error_without_the_id", "embedding_forward", edited(FORWARD, (
        'raise IndexError(f"id {ids[bad][0].item()} is not in [0, {V})")',
        'raise IndexError("an id is out of range")'),
    ), says="does not name the offending id"),
    Mistake("lookup_flattens_the_ids", "embedding_forward", edited(FORWARD, (
        "return weight[ids]", "return weight[ids.reshape(-1)]"),
    ), says="the ids were flattened"),
    Mistake("lookup_by_f_embedding", "embedding_forward", edited(FORWARD, (
        "return weight[ids]", "return torch.nn.functional.embedding(ids, weight)"),
    ), says="uses F.embedding, which does the exercise for you"),

    # ----------------------------------------------------------------- embedding_backward
    Mistake("gradient_by_assignment", "embedding_backward", edited(BACKWARD, (
        "grad.index_add_(0, ids.reshape(-1), grad_output.reshape(-1, d))",
        "grad[ids.reshape(-1)] = grad_output.reshape(-1, d)"),
    ), says="holds the gradient of just one"),
    Mistake("gradient_by_plus_equals", "embedding_backward", edited(BACKWARD, (
        "grad.index_add_(0, ids.reshape(-1), grad_output.reshape(-1, d))",
        "grad[ids.reshape(-1)] += grad_output.reshape(-1, d)"),
    ), says="holds the gradient of just one"),
    Mistake("gradient_rows_up_to_max_id", "embedding_backward", edited(BACKWARD, (
        "grad = torch.zeros(num_embeddings, d, dtype=grad_output.dtype)",
        "grad = torch.zeros(int(ids.max()) + 1, d, dtype=grad_output.dtype)"),
    ), says="expected num_embeddings"),
    Mistake("gradient_by_autograd", "embedding_backward", edited(BACKWARD, (
        "    grad = torch.zeros(num_embeddings, d, dtype=grad_output.dtype)\n"
        "    grad.index_add_(0, ids.reshape(-1), grad_output.reshape(-1, d))\n",
        "    table = torch.zeros(num_embeddings, d, dtype=grad_output.dtype, requires_grad=True)\n"
        "    table[ids].backward(grad_output)\n"
        "    grad = table.grad\n"),
    ), says="which does the exercise for you"),

    # ------------------------------------------------------------------- sinusoidal_table
    Mistake("table_sin_cos_swapped", "sinusoidal_table", edited(
        TABLE, ("table[:, 0::2] = torch.sin(p * w)", "table[:, 0::2] = torch.cos(p * w)"),
        ("table[:, 1::2] = torch.cos(p * w)", "table[:, 1::2] = torch.sin(p * w)"),
    ), says="sine and cosine are swapped"),
    Mistake("table_exponent_i", "sinusoidal_table", edited(TABLE, (
        "w = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)",
        "w = base ** (-torch.arange(dim // 2, dtype=torch.float64) / dim)"),
    ), says="the exponent is 2i / dim"),
    Mistake("table_sines_then_cosines", "sinusoidal_table", edited(
        TABLE, ("table[:, 0::2] = torch.sin(p * w)", "table[:, :dim // 2] = torch.sin(p * w)"),
        ("table[:, 1::2] = torch.cos(p * w)", "table[:, dim // 2:] = torch.cos(p * w)"),
    ), says="all the sines come first"),
    Mistake("table_ignores_base", "sinusoidal_table", edited(TABLE, (
        "w = base ** (", "w = 10000.0 ** ("),
    ), says="`base` is ignored"),
    Mistake("table_positions_from_one", "sinusoidal_table", edited(TABLE, (
        "p = torch.arange(length, dtype=torch.float64)", "p = torch.arange(1, length + 1, dtype=torch.float64)"),
    ), says="the positions start at 1"),

    # ------------------------------------------------------------------------ apply_rope
    # Llama's and GPT-NeoX's pairing: right in those code bases, wrong for this contract.
    Mistake("rope_rotates_halves", "apply_rope", edited(
        ROPE, ("a = x[..., 0::2]", "a = x[..., : d // 2]"), ("b = x[..., 1::2]", "b = x[..., d // 2:]"),
        ("out[..., 0::2] = a * cos - b * sin", "out[..., : d // 2] = a * cos - b * sin"),
        ("out[..., 1::2] = a * sin + b * cos", "out[..., d // 2:] = a * sin + b * cos"),
    ), says="GPT-NeoX/Llama convention"),
    Mistake("rope_minus_angle", "apply_rope", edited(
        ROPE, ("a * cos - b * sin", "a * cos + b * sin"), ("a * sin + b * cos", "-a * sin + b * cos"),
    ), says="minus the angle"),
    Mistake("rope_exponent_i", "apply_rope", edited(ROPE, (
        "w = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)",
        "w = base ** (-torch.arange(d // 2, dtype=torch.float32) / d)"),
    ), says="the exponent is 2i / d"),
    Mistake("rope_ignores_positions", "apply_rope", edited(ROPE, (
        "    if positions is None:\n        positions = torch.arange(T)\n",
        "    positions = torch.arange(T)\n"),
    ), says="`positions` is ignored"),
    Mistake("rope_exponent_over_half_d", "apply_rope", edited(ROPE, (
        "w = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)",
        "w = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / (d // 2))"),
    ), says="divided by d / 2 instead of d"),
    Mistake("rope_in_place", "apply_rope", edited(
        ROPE, ("    out = torch.empty_like(x)\n", "    out = x\n    a, b = a.clone(), b.clone()\n"),
    ), says="changed the x it was given"),
    # PyTorch's embedding layer does the lookup the exercise asks for.
    Mistake("lookup_by_nn_embedding", "embedding_forward", edited(FORWARD, (
        "return weight[ids]", "return torch.nn.Embedding.from_pretrained(weight)(ids)"),
    ), says="uses nn.Embedding"),
]
