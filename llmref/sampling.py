# GENERATED from solutions/15_sampling/15_sampling.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Decoding strategies in NumPy (no torch): greedy, temperature, top-k and top-p filtering, the repetition penalty and seeded sampling: the reference for exercise 15_sampling."""
import numpy as np


def softmax(logits):
    """Probabilities along the last axis, in float64; a -inf logit gets probability exactly 0.

    Each row needs at least one finite logit.
    """
    logits = np.asarray(logits, dtype=np.float64)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def top_k_filter(logits, k):
    """Keep the logits >= the k-th largest of each row (ties at it stay); the rest become -inf.

    logits: (V,) or (B, V). k: a whole number >= 1; k > V keeps every token.
    Returns a new array of the same shape; raises ValueError for k < 1.
    """
    logits = np.asarray(logits)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"top-k needs a whole number k >= 1, got k={k!r}")
    k = min(int(k), logits.shape[-1])
    # The k-th largest of each row; a logit below it goes, one equal to it stays (ties kept).
    kth_largest = np.sort(logits, axis=-1)[..., -k, None]
    return np.where(logits < kth_largest, -np.inf, logits)


def top_p_filter(logits, p):
    """Keep the most probable tokens until their probability first reaches p (ties at the
    boundary stay, the top token always stays, p = 1 keeps all); the rest become -inf.

    logits: (V,) or (B, V). p: 0 < p <= 1. Returns a new array of the same shape; raises
    ValueError for p outside (0, 1].
    """
    logits = np.asarray(logits)
    if not 0 < p <= 1:
        raise ValueError(f"top-p needs 0 < p <= 1, got p={p!r}")
    if p == 1:
        return logits.copy()  # a running total may reach 1.0 early in floating point
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    running = np.cumsum(softmax(sorted_logits), axis=-1)
    reached = running >= p
    reached[..., -1] = True  # rounding may leave the total just below p
    last_kept = np.argmax(reached, axis=-1)[..., None]
    threshold = np.take_along_axis(sorted_logits, last_kept, axis=-1)
    return np.where(logits < threshold, -np.inf, logits)


def apply_repetition_penalty(logits, previous_ids, penalty):
    """Make tokens already generated less likely: for each id in a row's history, a positive
    logit is divided by `penalty` and a negative one multiplied (once per distinct id).

    logits: (V,) with previous_ids (T,), or (B, V) with previous_ids (B, T).
    penalty > 0 (1 changes nothing). Returns a new array; raises ValueError for penalty <= 0.
    """
    logits = np.asarray(logits)
    if not penalty > 0:
        raise ValueError(f"the repetition penalty must be > 0 (1 changes nothing), got {penalty!r}")
    ids = np.asarray(previous_ids, dtype=np.int64)
    seen = np.zeros(logits.shape, dtype=bool)
    if logits.ndim == 1:
        seen[ids.reshape(-1)] = True
    else:
        seen[np.arange(logits.shape[0])[:, None], ids] = True
    # Dividing a negative logit would raise it: multiply those instead, so both kinds fall.
    penalised = np.where(logits < 0, logits * penalty, logits / penalty)
    return np.where(seen, penalised, logits)


def greedy(logits):
    """The id of the highest logit of each row (ties: the lowest id); int64, shape (B,) or ()."""
    return np.asarray(np.argmax(logits, axis=-1), dtype=np.int64)


def apply_temperature(logits, temperature):
    """The logits divided by `temperature` (> 0); raises ValueError otherwise."""
    if not temperature > 0:
        raise ValueError(f"the temperature must be > 0 (greedy() is the limit T -> 0), "
                         f"got temperature={temperature!r}")
    return np.asarray(logits) / temperature


def sample(logits, rng, *, temperature=1.0, top_k=None, top_p=None):
    """One token id per row: temperature, then top-k, then top-p, then one draw per row.

    The draw: probs = softmax(filtered logits), cdf = running total along the row, one
    u = rng.random() per row in row order; the token is the first index with
    cdf > u * cdf[-1] (np.searchsorted(cdf, u * cdf[-1], side="right")).
    logits: (V,) or (B, V); rng: np.random.Generator. Returns int64 ids, shape () or (B,).
    """
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = softmax(logits)
    rows = probs.reshape(-1, probs.shape[-1])
    u = rng.random(rows.shape[0])  # one number per row, row 0 first
    cdf = np.cumsum(rows, axis=-1)
    ids = (cdf <= (u * cdf[:, -1])[:, None]).sum(axis=-1)
    return ids.reshape(probs.shape[:-1]).astype(np.int64)
