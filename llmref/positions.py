# GENERATED from solutions/09_positions/09_positions.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Token embeddings (the lookup and its gradient), the sinusoidal position table and rotary position embedding: the reference for exercise 09_positions."""
import torch


def embedding_forward(weight, ids):
    """Look up one row of `weight` per token id, as nn.Embedding's forward pass does.

    weight: (V, d), one vector per token; ids: int64 tensor of any shape, each id in [0, V).
    Returns (*ids.shape, d): result[..., :] = weight[ids[...]].
    Raises IndexError naming an id outside [0, V); negative ids included.
    """
    V = weight.shape[0]
    outside = (ids < 0) | (ids >= V)
    if outside.any():
        # A negative id would not fail by itself: weight[-1] is the last row.
        bad = ids[outside][0].item()
        raise IndexError(f"token id {bad} is outside the table: ids must lie in [0, {V}), "
                         f"one per row of the ({V}, {weight.shape[1]}) weight")
    # Indexing with an integer tensor gathers one row per id and keeps the ids' shape.
    return weight[ids]                                  # (*ids.shape, d)


def embedding_backward(grad_output, ids, num_embeddings):
    """The gradient of the loss with respect to the table of embedding_forward.

    grad_output: (*ids.shape, d), the gradient with respect to the looked-up vectors.
    ids: the ids of the forward pass; num_embeddings: V, the number of rows of the table.
    Returns (V, d): row v is the sum of grad_output over every position whose id is v,
    zeros for ids that do not occur.
    """
    if tuple(grad_output.shape[:-1]) != tuple(ids.shape):
        raise ValueError(f"grad_output has shape {tuple(grad_output.shape)}, but ids has shape "
                         f"{tuple(ids.shape)}: expected (*ids.shape, d), one vector per id")
    d = grad_output.shape[-1]
    grad = torch.zeros(num_embeddings, d, dtype=grad_output.dtype, device=grad_output.device)
    # index_add_ adds row i of the source into row ids[i], so repeated ids accumulate;
    # grad[ids] = g (or +=) would keep one contribution per repeated row.
    grad.index_add_(0, ids.reshape(-1), grad_output.reshape(-1, d))
    return grad


def sinusoidal_table(length, dim, base=10000.0):
    """The sinusoidal position table of "Attention is all you need" (Vaswani et al., 2017).

    Row p, pair i (columns 2i and 2i + 1): sin(p * w_i) and cos(p * w_i), where
    w_i = base ** (-2i / dim) for i = 0 .. dim/2 - 1. Returns float32 (length, dim).
    """
    if dim % 2:
        raise ValueError(f"dim must be even: each sine column needs its cosine, got dim={dim}")
    position = torch.arange(length, dtype=torch.float64)[:, None]    # (length, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)              # (dim/2,): 0, 2, 4, ...
    angle = position * base ** (-two_i / dim)                         # (length, dim/2)
    table = torch.empty(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)                                 # even columns
    table[:, 1::2] = torch.cos(angle)                                 # odd columns
    return table.float()


def apply_rope(x, positions=None, base=10000.0):
    """Rotary position embedding (RoFormer, Su et al. 2021) with interleaved pairs.

    x: (..., T, d), d even; row t is the query or key at position positions[t].
    positions: integer tensor (T,); None means torch.arange(T).
    Pair i, (x[..., 2i], x[..., 2i+1]), at position p turns by the angle p * base ** (-2i / d).
    Returns a new tensor with x's shape and dtype; x itself is not changed.
    """
    T, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"the last axis of x must have even size (pairs are rotated), got {d}")
    positions = torch.arange(T) if positions is None else torch.as_tensor(positions)
    if tuple(positions.shape) != (T,):
        raise ValueError(f"positions must have shape (T,) = ({T},), one per row of x, "
                         f"got {tuple(positions.shape)}")
    two_i = torch.arange(0, d, 2, dtype=torch.float64)                   # (d/2,)
    angle = positions.to(torch.float64)[:, None] * base ** (-two_i / d)   # (T, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    first, second = x[..., 0::2], x[..., 1::2]                            # (..., T, d/2) each
    # The 2x2 rotation by +angle: (a, b) -> (a cos - b sin, a sin + b cos).
    rotated = torch.stack([first * cos - second * sin,
                           first * sin + second * cos], dim=-1)           # (..., T, d/2, 2)
    return rotated.flatten(-2)                                            # pairs back in place
