"""Wrong versions of softmax, log_softmax and cross_entropy (exercise 01_softmax).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
The mistakes of each function come most instructive first (the first three of each go
through real nbgrader); the library shortcut comes last.
"""
from . import Mistake, edited

EXERCISE = "01_softmax"

RIGHT = {
    "softmax": '''def softmax(x, axis=-1):
    x = np.asarray(x, dtype=float)
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)
''',
    "log_softmax": '''def log_softmax(x, axis=-1):
    x = np.asarray(x, dtype=float)
    m = x.max(axis=axis, keepdims=True)
    shifted = x - m
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
''',
    "cross_entropy": '''def cross_entropy(logits, targets):
    logp = log_softmax(logits, axis=-1)
    targets = np.asarray(targets)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)
    return float(-picked.mean())
''',
}


def _mistake(name: str, cell: str, *changes: tuple[str, str], says: str) -> Mistake:
    return Mistake(name, cell, edited(RIGHT[cell], *changes), says=says)


LOGSUMEXP = "np.log(np.exp(shifted).sum(axis=axis, keepdims=True))"
PICK = "np.take_along_axis(logp, targets[..., None], axis=-1)"

MISTAKES = [
    # ---- softmax
    _mistake("softmax_no_max_shift", "softmax",
             ("np.exp(x - m)", "np.exp(x)"),
             says="Subtract the maximum along `axis` first"),
    _mistake("softmax_global_max", "softmax",
             ("m = x.max(axis=axis, keepdims=True)", "m = x.max()"),
             says="each slice's own maximum"),
    _mistake("softmax_ignores_axis", "softmax",
             ("x.max(axis=axis, ", "x.max(axis=-1, "), ("e.sum(axis=axis, ", "e.sum(axis=-1, "),
             says="ignores the `axis` argument"),
    _mistake("softmax_sums_over_axis_0", "softmax",
             ("e.sum(axis=axis, ", "e.sum(axis=0, "),
             says="normalised along axis 0"),
    _mistake("softmax_not_normalised", "softmax",
             ("return e / e.sum(axis=axis, keepdims=True)", "return e"),
             says="not normalised"),
    _mistake("softmax_without_keepdims", "softmax",
             ("x.max(axis=axis, keepdims=True)", "x.max(axis=axis)"),
             ("e.sum(axis=axis, keepdims=True)", "e.sum(axis=axis)"),
             says="keepdims=True"),
    # ---- log_softmax
    _mistake("log_of_softmax", "log_softmax",
             (f"return shifted - {LOGSUMEXP}", "return np.log(softmax(x, axis=axis))"),
             says="log-sum-exp trick"),
    _mistake("logsumexp_without_shift", "log_softmax",
             ("shifted = x - m", "shifted = x"),
             says="Subtract the maximum m first and add it back"),
    _mistake("logsumexp_drops_the_max", "log_softmax",
             ("return shifted - ", "return x - "),
             says="off by the maximum m"),
    _mistake("log_softmax_wrong_sign", "log_softmax",
             (f"return shifted - {LOGSUMEXP}", f"return {LOGSUMEXP} - shifted"),
             says="wrong sign"),
    _mistake("log_softmax_ignores_axis", "log_softmax",
             ("x.max(axis=axis, ", "x.max(axis=-1, "), (".sum(axis=axis, ", ".sum(axis=-1, "),
             says="ignores the `axis` argument"),
    _mistake("log_softmax_returns_probabilities", "log_softmax",
             (f"return shifted - {LOGSUMEXP}",
              "e = np.exp(shifted)\n    return e / e.sum(axis=axis, keepdims=True)"),
             says="returned the probabilities themselves"),
    # ---- cross_entropy
    _mistake("cross_entropy_sum", "cross_entropy",
             ("-picked.mean()", "-picked.sum()"),
             says="sum over the"),
    _mistake("cross_entropy_no_minus", "cross_entropy",
             ("float(-picked.mean())", "float(picked.mean())"),
             says="wrong sign"),
    _mistake("cross_entropy_per_example", "cross_entropy",
             ("return float(-picked.mean())", "return -picked[..., 0]"),
             says="one loss per example"),
    _mistake("cross_entropy_targets_as_one_hot", "cross_entropy",
             (PICK, "(logp * targets[..., None]).sum(axis=-1)"),
             says="not one-hot vectors"),
    _mistake("cross_entropy_indexes_columns", "cross_entropy",
             (PICK, "logp[:, targets]"),
             says="Pick one entry per example"),
    _mistake("cross_entropy_targets_times_logp", "cross_entropy",
             (PICK, "(logp * targets).sum(axis=-1)"),
             says="integer class ids"),
    _mistake("cross_entropy_log_of_softmax", "cross_entropy",
             ("logp = log_softmax(logits, axis=-1)", "logp = np.log(softmax(logits, axis=-1))"),
             says="from log_softmax (the log-sum-exp trick)"),
    _mistake("cross_entropy_only_2d", "cross_entropy",
             (PICK, "logp[np.arange(len(targets)), targets]"),
             says="Reshape the logits to (-1, C)"),
    # The right numbers from a library: the exercise is to write the softmax.
    _mistake("softmax_from_scipy", "softmax",
             ("    m = x.max(axis=axis, keepdims=True)\n"
              "    e = np.exp(x - m)\n"
              "    return e / e.sum(axis=axis, keepdims=True)\n",
              "    from scipy.special import softmax as library_softmax\n"
              "    return library_softmax(x, axis=axis)\n"),
             says="uses scipy.special"),
]
