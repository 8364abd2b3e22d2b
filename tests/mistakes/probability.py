"""Wrong versions of softmax, log_softmax and cross_entropy (exercise 01_softmax)."""
from . import Mistake

EXERCISE = "01_softmax"


def _softmax(body: str) -> str:
    return "def softmax(x, axis=-1):\n" + body


def _log_softmax(body: str) -> str:
    return "def log_softmax(x, axis=-1):\n" + body


def _cross_entropy(body: str) -> str:
    return "def cross_entropy(logits, targets):\n" + body


MISTAKES = [
    # ---- softmax
    Mistake("softmax_no_max_shift", "softmax", _softmax("""
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)
"""), says="Subtract the maximum along `axis` first"),
    Mistake("softmax_global_max", "softmax", _softmax("""
    e = np.exp(x - x.max())
    return e / e.sum(axis=axis, keepdims=True)
"""), says="each slice's own maximum"),
    Mistake("softmax_ignores_axis", "softmax", _softmax("""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
"""), says="ignores the `axis` argument"),
    Mistake("softmax_sums_over_axis_0", "softmax", _softmax("""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)
"""), says="normalised along axis 0"),
    Mistake("softmax_not_normalised", "softmax", _softmax("""
    return np.exp(x - x.max(axis=axis, keepdims=True))
"""), says="not normalised"),
    Mistake("softmax_without_keepdims", "softmax", _softmax("""
    e = np.exp(x - x.max(axis=axis))
    return e / e.sum(axis=axis)
"""), says="keepdims=True"),
    # ---- log_softmax
    Mistake("log_of_softmax", "log_softmax", _log_softmax("""
    return np.log(softmax(x, axis=axis))
"""), says="log-sum-exp trick"),
    Mistake("logsumexp_without_shift", "log_softmax", _log_softmax("""
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))
"""), says="Subtract the maximum m first and add it back"),
    Mistake("logsumexp_drops_the_max", "log_softmax", _log_softmax("""
    m = x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
"""), says="off by the maximum m"),
    Mistake("log_softmax_wrong_sign", "log_softmax", _log_softmax("""
    m = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) - (x - m)
"""), says="wrong sign"),
    Mistake("log_softmax_ignores_axis", "log_softmax", _log_softmax("""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
"""), says="ignores the `axis` argument"),
    Mistake("log_softmax_returns_probabilities", "log_softmax", _log_softmax("""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
"""), says="returned the probabilities themselves"),
    # ---- cross_entropy
    Mistake("cross_entropy_sum", "cross_entropy", _cross_entropy("""
    logp = log_softmax(logits, axis=-1)
    return float(-np.take_along_axis(logp, targets[..., None], axis=-1).sum())
"""), says="sum over the"),
    Mistake("cross_entropy_no_minus", "cross_entropy", _cross_entropy("""
    logp = log_softmax(logits, axis=-1)
    return float(np.take_along_axis(logp, targets[..., None], axis=-1).mean())
"""), says="wrong sign"),
    Mistake("cross_entropy_per_example", "cross_entropy", _cross_entropy("""
    logp = log_softmax(logits, axis=-1)
    return -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
"""), says="one loss per example"),
    Mistake("cross_entropy_targets_as_one_hot", "cross_entropy", _cross_entropy("""
    logp = log_softmax(logits, axis=-1)
    return float(-(logp * targets[..., None]).sum(axis=-1).mean())
"""), says="not one-hot vectors"),
    Mistake("cross_entropy_indexes_columns", "cross_entropy", _cross_entropy("""
    logp = log_softmax(logits, axis=-1)
    return float(-logp[:, targets].mean())
"""), says="Pick one entry per example"),
    Mistake("cross_entropy_targets_times_logp", "cross_entropy", _cross_entropy("""
    logp = log_softmax(logits, axis=-1)
    return float(-(logp * targets).sum(axis=-1).mean())
"""), says="integer class ids"),
    Mistake("cross_entropy_log_of_softmax", "cross_entropy", _cross_entropy("""
    p = softmax(logits, axis=-1)
    return float(-np.log(np.take_along_axis(p, targets[..., None], axis=-1)).mean())
"""), says="from log_softmax (the log-sum-exp trick)"),
    Mistake("cross_entropy_only_2d", "cross_entropy", _cross_entropy("""
    logp = log_softmax(logits, axis=-1)
    return float(-logp[np.arange(len(targets)), targets].mean())
"""), says="Reshape the logits to (-1, C)"),
    # The right numbers from a library: the exercise is to write the softmax.
    Mistake("softmax_from_scipy", "softmax", _softmax("""
    from scipy.special import softmax as library_softmax
    return library_softmax(x, axis=axis)
"""), says="uses scipy.special"),
]
