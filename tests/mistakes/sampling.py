"""Wrong versions of the decoding functions (exercise 15_sampling).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "15_sampling"

TOP_K = '''def top_k_filter(logits, k):
    logits = np.asarray(logits)
    if k < 1:
        raise ValueError(f"k must be a whole number >= 1, got {k}")
    k = min(k, logits.shape[-1])
    kth = np.sort(logits, axis=-1)[..., -k, None]
    return np.where(logits < kth, -np.inf, logits)
'''

TOP_P = '''def top_p_filter(logits, p):
    logits = np.asarray(logits)
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if p == 1:
        return logits.copy()
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    total = np.cumsum(softmax(sorted_logits), axis=-1)
    reached = total >= p
    reached[..., -1] = True
    last = np.argmax(reached, axis=-1)[..., None]
    threshold = np.take_along_axis(sorted_logits, last, axis=-1)
    return np.where(logits < threshold, -np.inf, logits)
'''

PENALTY = '''def apply_repetition_penalty(logits, previous_ids, penalty):
    logits = np.asarray(logits)
    if penalty <= 0:
        raise ValueError(f"penalty must be > 0, got {penalty}")
    seen = np.zeros(logits.shape, dtype=bool)
    if logits.ndim == 1:
        seen[previous_ids] = True
    else:
        seen[np.arange(len(logits))[:, None], previous_ids] = True
    penalised = np.where(logits < 0, logits * penalty, logits / penalty)
    return np.where(seen, penalised, logits)
'''

DECODING = '''def greedy(logits):
    return np.argmax(logits, axis=-1).astype(np.int64)


def apply_temperature(logits, temperature):
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits / temperature


def sample(logits, rng, *, temperature=1.0, top_k=None, top_p=None):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = softmax(logits).reshape(-1, logits.shape[-1])
    ids = []
    for row in probs:
        cdf = np.cumsum(row)
        u = rng.random()
        ids.append(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return np.array(ids, dtype=np.int64).reshape(logits.shape[:-1])
'''


MISTAKES = [
    # top_k_filter
    Mistake("top_k_breaks_ties", "top_k_filter", edited(
        TOP_K, ("    kth = np.sort(logits, axis=-1)[..., -k, None]\n"
                "    return np.where(logits < kth, -np.inf, logits)\n",
                "    top = np.argsort(-logits, axis=-1, kind='stable')[..., :k]\n"
                "    keep = np.zeros(logits.shape, dtype=bool)\n"
                "    np.put_along_axis(keep, top, True, axis=-1)\n"
                "    return np.where(keep, logits, -np.inf)\n")), says="keeps ties"),
    Mistake("top_k_removed_set_to_zero", "top_k_filter", edited(
        TOP_K, ("np.where(logits < kth, -np.inf, logits)", "np.where(logits < kth, 0.0, logits)")),
        says="not -inf"),
    Mistake("top_k_larger_than_vocabulary_fails", "top_k_filter", edited(
        TOP_K, ("    k = min(k, logits.shape[-1])\n", "")), says="larger than the vocabulary"),
    Mistake("top_k_in_place", "top_k_filter", edited(
        TOP_K, ("    return np.where(logits < kth, -np.inf, logits)\n",
                "    logits[logits < kth] = -np.inf\n    return logits\n")), says="in place"),
    Mistake("top_k_accepts_zero", "top_k_filter", edited(
        TOP_K, ("    if k < 1:\n        raise ValueError(f\"k must be a whole number >= 1, got {k}\")\n", "")),
        says="instead of raising ValueError"),
    # top_p_filter
    Mistake("top_p_drops_the_crossing_token", "top_p_filter", edited(
        TOP_P, ("    reached = total >= p\n    reached[..., -1] = True\n"
                "    last = np.argmax(reached, axis=-1)[..., None]\n",
                "    last = np.maximum((total < p).sum(axis=-1) - 1, 0)[..., None]\n")),
        says="stops before the token"),
    Mistake("top_p_float_total_at_p_equal_one", "top_p_filter", edited(
        TOP_P, ("    if p == 1:\n        return logits.copy()\n", "")), says="p = 1 keeps every token"),
    Mistake("top_p_breaks_ties", "top_p_filter", edited(
        TOP_P, ("    threshold = np.take_along_axis(sorted_logits, last, axis=-1)\n"
                "    return np.where(logits < threshold, -np.inf, logits)\n",
                "    keep_sorted = np.arange(logits.shape[-1]) <= last\n"
                "    keep = np.zeros(logits.shape, dtype=bool)\n"
                "    np.put_along_axis(keep, order, keep_sorted, axis=-1)\n"
                "    return np.where(keep, logits, -np.inf)\n")), says="keeps ties"),
    Mistake("top_p_can_empty_a_row", "top_p_filter", edited(
        TOP_P, ("    return np.where(logits < threshold, -np.inf, logits)\n",
                "    keep = np.zeros(logits.shape, dtype=bool)\n"
                "    np.put_along_axis(keep, order, total <= p, axis=-1)\n"
                "    return np.where(keep, logits, -np.inf)\n")), says="removes every token"),
    Mistake("top_p_running_total_of_logits", "top_p_filter", edited(
        TOP_P, ("np.cumsum(softmax(sorted_logits), axis=-1)", "np.cumsum(sorted_logits, axis=-1)")),
        says="softmax, not the logits"),
    # apply_repetition_penalty
    Mistake("penalty_divides_negative_logits", "apply_repetition_penalty", edited(
        PENALTY, ("np.where(logits < 0, logits * penalty, logits / penalty)", "logits / penalty")),
        says="negative ones multiplied"),
    Mistake("penalty_once_per_occurrence", "apply_repetition_penalty", edited(
        PENALTY, ("    seen = np.zeros(logits.shape, dtype=bool)\n"
                  "    if logits.ndim == 1:\n        seen[previous_ids] = True\n    else:\n"
                  "        seen[np.arange(len(logits))[:, None], previous_ids] = True\n"
                  "    penalised = np.where(logits < 0, logits * penalty, logits / penalty)\n"
                  "    return np.where(seen, penalised, logits)\n",
                  "    out = logits.astype(np.float64)\n"
                  "    rows = out[None] if out.ndim == 1 else out\n"
                  "    for row, ids in zip(rows, np.atleast_2d(previous_ids)):\n"
                  "        for i in ids:\n"
                  "            row[i] = row[i] * penalty if row[i] < 0 else row[i] / penalty\n"
                  "    return out\n")), says="once per occurrence"),
    Mistake("penalty_shares_histories_across_rows", "apply_repetition_penalty", edited(
        PENALTY, ("seen[np.arange(len(logits))[:, None], previous_ids] = True",
                  "seen[:, np.ravel(previous_ids)] = True")), says="another row's history"),
    Mistake("penalty_in_place", "apply_repetition_penalty", edited(
        PENALTY, ("    return np.where(seen, penalised, logits)\n",
                  "    logits[seen] = penalised[seen]\n    return logits\n")), says="in place"),
    # greedy, apply_temperature, sample
    Mistake("sample_filters_before_temperature", "decoding", edited(
        DECODING, ("    logits = apply_temperature(logits, temperature)\n"
                   "    if top_k is not None:\n        logits = top_k_filter(logits, top_k)\n"
                   "    if top_p is not None:\n        logits = top_p_filter(logits, top_p)\n",
                   "    if top_k is not None:\n        logits = top_k_filter(logits, top_k)\n"
                   "    if top_p is not None:\n        logits = top_p_filter(logits, top_p)\n"
                   "    logits = apply_temperature(logits, temperature)\n")), says="before the temperature"),
    Mistake("sample_one_number_for_the_batch", "decoding", edited(
        DECODING, ("    ids = []\n    for row in probs:\n        cdf = np.cumsum(row)\n        u = rng.random()\n",
                   "    ids = []\n    u = rng.random()\n    for row in probs:\n        cdf = np.cumsum(row)\n")),
        says="one number per row"),
    Mistake("temperature_multiplies", "decoding", edited(
        DECODING, ("    return logits / temperature\n", "    return logits * temperature\n")),
        says="multiplies the logits"),
    Mistake("greedy_over_the_batch_axis", "decoding", edited(
        DECODING, ("np.argmax(logits, axis=-1)", "np.argmax(logits, axis=0)")), says="has shape"),
    Mistake("sample_ignores_the_generator", "decoding", edited(
        DECODING, ("        u = rng.random()\n        ids.append(np.searchsorted(cdf, u * cdf[-1], side=\"right\"))\n",
                   "        ids.append(np.random.choice(len(row), p=row))\n")), says="used the generator differently"),
    Mistake("temperature_accepts_zero", "decoding", edited(
        DECODING, ("    if temperature <= 0:\n        raise ValueError(f\"temperature must be > 0, got {temperature}\")\n",
                   "")), says="instead of raising ValueError"),
    # The right filter from torch: the exercise is NumPy, and runs where torch is absent.
    Mistake("top_k_with_torch", "top_k_filter", edited(
        TOP_K, ("    kth = np.sort(logits, axis=-1)[..., -k, None]\n",
                "    import torch\n"
                "    kth = torch.topk(torch.from_numpy(logits), k, dim=-1).values[..., -1:].numpy()\n")),
        says="which does the exercise for you"),
]
