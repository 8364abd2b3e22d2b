"""Checks for exercise 15_sampling: decoding strategies in NumPy.

Each check draws seeded logits (rounded to one decimal, so that ties occur as they do in
real models' float16 logits) or builds an edge case by hand, calls the learner's function
and compares with :mod:`llmref.sampling`, itself tested against Hugging Face
transformers' TopKLogitsWarper, TopPLogitsWarper and RepetitionPenaltyLogitsProcessor in
tests/test_llmref_sampling.py. torch is not imported here: the exercise is NumPy only.

Filters are compared exactly: the same tokens kept, their logits unchanged, the others
-inf. Before comparing, a check looks for the usual mistakes and names the first it finds.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from llmref import sampling as reference

from ._core import NUMPY_SHORTCUTS, as_float_array, refuse_shortcuts, call_learner, fail, fail_from, passed, seeded, worst_mismatch

# Dividing by the penalty or temperature, or multiplying by its inverse, differ by one
# rounding (relative 1.1e-16 in float64); 1e-12 forgives any such order of operations and
# float32 inputs returned as float32 (they are compared with the reference on the same
# float32 numbers), while every mistake the checks look for changes a logit by more than 1e-2.
RTOL = 1e-12

Function = Callable[..., object]


def _logits(rng, shape, dtype="float64", scale=2.0) -> np.ndarray:
    """Random logits rounded to one decimal: ties at the boundaries happen, as in real models."""
    return np.round(rng.standard_normal(shape) * scale, 1).astype(dtype)


def _shown(logits: np.ndarray, limit: int = 8) -> str:
    """A short rendering of one row of logits, for messages."""
    row = np.asarray(logits, dtype=np.float64).reshape(-1, logits.shape[-1])[0]
    text = ", ".join("-inf" if v == -np.inf else f"{v:g}" for v in row[:limit])
    return "[" + text + (", ...]" if row.size > limit else "]")

# torch's sampling and Hugging Face's logits processors would do the exercise; and the
# ONNX Runtime generation of the export chapter reuses this code where there is no torch.
SHORTCUTS = {**NUMPY_SHORTCUTS, "transformers": None}
WHY_BY_HAND = ("Write the strategy in NumPy: filtering and sampling the logits yourself is the "
               "exercise, and the export chapter runs this code where there is no PyTorch.")


def _call(fn: Function, name: str, logits: np.ndarray, *args, **kwargs):
    """Call the learner's function on a copy it may not change; fail if it changed it."""
    __tracebackhide__ = True
    given = logits.copy()
    with refuse_shortcuts(SHORTCUTS, name, WHY_BY_HAND):
        result = call_learner(fn, given, *args, name=name, **kwargs)
    if not np.array_equal(given, logits, equal_nan=True):
        fail(f"`{name}` changed the logits it was given (in place). The caller may still need "
             "them: build a new array (np.where(...) does) or work on logits.copy().")
    return result


def _refuses(fn: Function, name: str, args: tuple, kwargs: dict, bad, allowed: str) -> None:
    """The call must raise ValueError whose message names the bad value."""
    __tracebackhide__ = True
    shown = ", ".join(["logits"] + [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    call = f"`{name}({shown})`"
    try:
        fn(np.array([1.0, 0.5, -1.0]), *args, **kwargs)
    except NotImplementedError:
        fail(f"`{name}` still raises NotImplementedError. Replace the "
             "`raise NotImplementedError()` line with your implementation.")
    except ValueError as error:
        if repr(bad) not in str(error) and str(bad) not in str(error):
            fail_from(error, f"{call} raised ValueError({str(error)!r}), which does not name the "
                      f"value. Say what was given and what is allowed, e.g. "
                      f"ValueError(f\"... got {{value!r}}; {allowed}\").")
        return
    except Exception as error:  # the learner's bug: the wrong exception
        fail_from(error, f"{call} raised {type(error).__name__}: {error}. A bad setting should "
                  f"raise ValueError naming the value ({allowed}), checked at the start.")
    fail(f"{call} returned instead of raising ValueError: {allowed}. Check the value at the "
         "start of the function and raise ValueError naming it, so that a typo in a setting "
         "fails loudly instead of generating from a distribution nobody asked for.")


def _filtered(result, what: str, logits: np.ndarray) -> np.ndarray:
    __tracebackhide__ = True
    got = as_float_array(result, what, logits.shape)
    if np.isnan(got).any():
        fail(f"{what} contains NaN. Removed entries must be -np.inf; NaN usually comes from "
             "inf - inf or 0 * inf in the arithmetic around the filter.")
    return got


def _compare_filter(got: np.ndarray, expected: np.ndarray, logits: np.ndarray, call: str,
                    rule: str, extra: Callable[[np.ndarray, np.ndarray], None] | None = None) -> None:
    """A filter's output against the reference's, exactly, with the likeliest cause on failure."""
    __tracebackhide__ = True
    kept, expected_kept = got > -np.inf, expected > -np.inf
    if np.array_equal(got, expected):
        return
    both = kept & expected_kept
    if np.any(got[both] != logits[both]):
        fail(f"{call}: the logits you kept are not the logits you were given ("
             + worst_mismatch(np.where(both, got, 0.0), np.where(both, logits, 0.0))
             + "). A filter only removes entries: return the kept logits unchanged, not "
             "probabilities or shifted values.")
    removed = ~expected_kept & np.isfinite(logits)
    if np.any(removed & (got == 0)) and not np.any(removed & (got == -np.inf)):
        fail(f"{call}: removed entries are 0, not -inf. A logit of 0 still has a probability "
             "(e^0 = 1 before normalising): set removed entries to -np.inf, which the softmax "
             "turns into exactly 0.")
    if np.any(kept & ~np.isfinite(logits) & (logits == -np.inf)):
        fail(f"{call}: an entry that was already -inf came back finite.")
    if extra is not None:
        extra(got, expected)
    missing = expected_kept & ~kept
    surplus = kept & ~expected_kept
    rows = np.atleast_2d(logits)
    if missing.any():
        row = int(np.argwhere(np.atleast_2d(missing))[0][0])
        boundary = np.atleast_2d(np.where(expected_kept, logits, np.inf)).min(axis=-1)[row]
        tied = np.atleast_2d(missing)[row] & (rows[row] == boundary)
        if tied.any() and np.atleast_2d(kept)[row][rows[row] == boundary].any():
            fail(f"{call} removes a token whose logit ({boundary:g}) equals one it keeps, in row "
                 f"{row} ({_shown(rows[row:row + 1])}). The course keeps ties: every token whose "
                 f"logit equals the last one kept stays too ({rule}), so the result does not "
                 "depend on where tied tokens sit in the vocabulary.")
        fail(f"{call} removes {int(missing.sum())} token(s) the reference keeps, e.g. in row {row} "
             f"({_shown(rows[row:row + 1])}): it keeps {int(np.atleast_2d(kept)[row].sum())} "
             f"tokens there instead of {int(np.atleast_2d(expected_kept)[row].sum())}. The rule: {rule}."
             + (" Each row is filtered on its own, along the last axis (axis=-1)."
                if logits.ndim == 2 else ""))
    if surplus.any():
        row = int(np.argwhere(np.atleast_2d(surplus))[0][0])
        fail(f"{call} keeps {int(surplus.sum())} token(s) the reference removes, e.g. in row {row} "
             f"({_shown(rows[row:row + 1])}): it keeps {int(np.atleast_2d(kept)[row].sum())} "
             f"tokens there instead of {int(np.atleast_2d(expected_kept)[row].sum())}. The rule: "
             f"{rule}." + (" Each row is filtered on its own, along the last axis (axis=-1)."
                            if logits.ndim == 2 else ""))
    fail(f"{call} differs from the reference: {worst_mismatch(got, expected)}.")


# -- top-k ------------------------------------------------------------------------------------

TOP_K_RULE = "keep every token whose logit is >= the k-th largest logit of its row"


def _top_k_case(fn: Function, logits: np.ndarray, k) -> None:
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "top_k_filter")
    call = f"{name}(logits of shape {logits.shape}, k={k})"
    if k > logits.shape[-1]:
        try:
            result = _call(fn, name, logits, k)
        except Exception as error:
            fail_from(error, f"{call} failed, with k larger than the vocabulary of "
                      f"{logits.shape[-1]}: such a k is no error, it keeps every token. Clip "
                      "it first: k = min(k, logits.shape[-1]).")
    else:
        result = _call(fn, name, logits, k)
    got = _filtered(result, f"The result of {call}", logits)
    _compare_filter(got, reference.top_k_filter(logits, k), logits, call, TOP_K_RULE)


def check_top_k(fn: Function, *, seed: int = 0, batch: int = 4, vocab: int = 12,
                ks=(1, 3, 12, 20), dtype: str = "float64") -> None:
    """Random rows (with ties from rounding), batched, for several k including k > V."""
    __tracebackhide__ = True
    logits = _logits(seeded(seed), (batch, vocab), dtype)
    for k in ks:
        _top_k_case(fn, logits, k)
    passed(f"top_k_filter matches the reference on logits {logits.shape} for k in {tuple(ks)}")


def check_top_k_edges(fn: Function, *, seed: int = 1) -> None:
    """Ties at the k-th logit, k > V, -inf present, all-equal logits, one row, k < 1 refused."""
    __tracebackhide__ = True
    rng = seeded(seed)
    name = getattr(fn, "__name__", "top_k_filter")
    _top_k_case(fn, np.array([3.0, 1.0, 1.0, 0.0]), 2)                          # a tie at the 2nd
    _top_k_case(fn, np.array([[0.5, 2.0, 0.5, 0.5, -1.0], [1.0, 1.0, 1.0, 1.0, 1.0]]), 2)
    _top_k_case(fn, np.full((2, 6), 0.7), 1)                                      # all equal
    with_inf = _logits(rng, (3, 8))
    with_inf[:, ::2] = -np.inf                                                    # 4 finite per row
    _top_k_case(fn, with_inf, 6)
    _top_k_case(fn, with_inf, 2)
    _top_k_case(fn, _logits(rng, (9,)), 3)                                        # one row, (V,)
    _top_k_case(fn, _logits(rng, (2, 5)), 50)                                     # k > V
    for k in (0, -2):
        _refuses(fn, name, (k,), {}, k, "k must be a whole number >= 1")
    passed("top_k_filter keeps ties, handles k > V, -inf and all-equal rows, and refuses k < 1")


# -- top-p ------------------------------------------------------------------------------------

TOP_P_RULE = ("going from the most to the least probable token, keep tokens up to and including "
              "the one at which the running total of probabilities first reaches p, plus any "
              "token whose logit equals that last one's")


def _top_p_diagnosis(logits: np.ndarray, p: float, call: str):
    """Compare a learner's result with the wrong rules learners write, to name the mistake."""
    def diagnose(got: np.ndarray, expected: np.ndarray) -> None:
        __tracebackhide__ = True
        kept = got > -np.inf
        if not np.all(np.atleast_2d(kept).any(axis=-1)):
            fail(f"{call} removes every token of a row. The most probable token always stays, "
                 "however small p is: it is the token at which the running total first reaches "
                 "p when p is below its probability.")
        probs = np.atleast_2d(reference.softmax(logits))
        mass = np.where(np.atleast_2d(kept), probs, 0.0).sum(axis=-1)
        if np.any(mass < p * (1 - 1e-12)):
            row = int(np.argmax(mass < p * (1 - 1e-12)))
            fail(f"{call}: the tokens kept in row {row} have a total probability of "
                 f"{mass[row]:.4g}, below p = {p}. The filter stops before the token at which "
                 "the running total of probabilities (softmax, not the logits) first reaches p; "
                 "keep that token too: without it the kept mass is below p.")
        sorted_p = -np.sort(-probs, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p
        if p == 1:
            fail(f"{call} removes tokens, but p = 1 keeps every token. In floating point the "
                 "running total reaches 1.0 before the last token when the tail's probabilities "
                 f"are tiny (here the total before the last token is {before.max():.17g}): "
                 "return the logits unchanged when p == 1.")
    return diagnose


def _top_p_case(fn: Function, logits: np.ndarray, p: float) -> None:
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "top_p_filter")
    call = f"{name}(logits of shape {logits.shape}, p={p})"
    got = _filtered(_call(fn, name, logits, p), f"The result of {call}", logits)
    _compare_filter(got, reference.top_p_filter(logits, p), logits, call, TOP_P_RULE,
                    extra=_top_p_diagnosis(logits, p, call))


def check_top_p(fn: Function, *, seed: int = 2, batch: int = 4, vocab: int = 12,
                ps=(0.1, 0.5, 0.8, 0.95), dtype: str = "float64") -> None:
    """Random rows (with ties from rounding), batched, for several p."""
    __tracebackhide__ = True
    logits = _logits(seeded(seed), (batch, vocab), dtype)
    for p in ps:
        _top_p_case(fn, logits, p)
    passed(f"top_p_filter matches the reference on logits {logits.shape} for p in {tuple(ps)}")


def check_top_p_edges(fn: Function, *, seed: int = 3) -> None:
    """The crossing token, ties at the boundary, tiny p, p = 1 with a tiny tail, -inf present,
    all-equal logits, one row, p outside (0, 1] refused."""
    __tracebackhide__ = True
    rng = seeded(seed)
    name = getattr(fn, "__name__", "top_p_filter")
    # probabilities 0.5, 0.3, 0.2 (logs of them): p = 0.6 must keep the first two
    _top_p_case(fn, np.log(np.array([0.3, 0.5, 0.2])), 0.6)
    _top_p_case(fn, np.array([2.0, 1.0, 1.0, 1.0, -1.0]), 0.75)                 # ties at the boundary
    _top_p_case(fn, np.full((2, 5), -0.3), 0.3)                                  # all equal
    _top_p_case(fn, _logits(rng, (3, 10)), 1e-9)                                 # tiny p: top token
    # Tails below 1e-16 of the top: the running total is exactly 1.0 after one or two tokens.
    _top_p_case(fn, np.array([[40.0, 0.0, -3.0, -8.0, 1.5], [0.0, 0.0, -40.0, -45.0, -50.0]]), 1.0)
    with_inf = _logits(rng, (3, 8))
    with_inf[:, 1::3] = -np.inf
    _top_p_case(fn, with_inf, 0.9)
    _top_p_case(fn, with_inf, 1.0)
    _top_p_case(fn, _logits(rng, (11,)), 0.7)                                    # one row, (V,)
    for p in (0.0, -0.1, 1.5):
        _refuses(fn, name, (p,), {}, p, "p must be in (0, 1]")
    passed("top_p_filter keeps the crossing token and ties, the top token for tiny p, every "
           "token for p = 1, and refuses p outside (0, 1]")


# -- repetition penalty -------------------------------------------------------------------------

def _penalty_case(fn: Function, logits: np.ndarray, ids: np.ndarray, penalty: float) -> None:
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "apply_repetition_penalty")
    call = f"{name}(logits of shape {logits.shape}, previous_ids of shape {ids.shape}, {penalty})"
    got = _filtered(_call(fn, name, logits, ids.copy(), penalty), f"The result of {call}", logits)
    expected = reference.apply_repetition_penalty(logits, ids, penalty)
    if np.allclose(got, expected, rtol=RTOL, atol=0.0, equal_nan=False) and np.array_equal(
            got == -np.inf, expected == -np.inf):
        return
    if logits.ndim == 2:
        rows = np.arange(logits.shape[0])[:, None]
        seen = np.zeros(logits.shape, dtype=bool)
        seen[rows, ids] = True
    else:
        seen = np.zeros(logits.shape, dtype=bool)
        seen[ids] = True
    negative = seen & (logits < 0)
    if negative.any() and np.allclose(got[negative], logits[negative] / penalty, rtol=RTOL):
        fail(f"{call}: negative logits of seen tokens were divided by the penalty. Dividing "
             f"-2 by {penalty:g} gives {-2 / penalty:.3g}, which is "
             + ("larger" if penalty > 1 else "smaller") + " than -2 and makes the token "
             + ("more" if penalty > 1 else "less") + " likely, the opposite of the intent: "
             "positive logits are divided by the penalty, negative ones multiplied.")
    counts = np.zeros(logits.shape)
    if logits.ndim == 2:
        np.add.at(counts, (np.broadcast_to(rows, ids.shape), ids), 1)
    else:
        np.add.at(counts, ids, 1)
    scale = float(penalty) ** counts
    per_occurrence = np.where(logits < 0, logits * scale, logits / scale)
    if (counts > 1).any() and np.allclose(got, per_occurrence, rtol=1e-9, atol=0.0):
        fail(f"{call}: a token that occurs several times in the history is penalised once "
             "per occurrence. The penalty marks *whether* a token was used: penalise each "
             "distinct id once (a boolean mask of seen ids does this).")
    unseen_changed = ~seen & ~np.isclose(got, logits, rtol=RTOL, atol=0.0) & np.isfinite(logits)
    if logits.ndim == 2 and unseen_changed.any():
        fail(f"{call}: a row's logits were penalised for ids that occur only in another row's "
             "history. Row b of previous_ids is the history of row b of the logits alone: mark "
             "seen[b, previous_ids[b]] for each row, e.g. seen[np.arange(B)[:, None], previous_ids].")
    if unseen_changed.any():
        fail(f"{call}: logits of tokens that are not in the history changed. Only the ids in "
             "previous_ids are penalised; every other logit is returned as it was.")
    fail(f"{call} differs from the reference: {worst_mismatch(got, expected)}. For each id in "
         "the row's history: positive logit / penalty, negative logit * penalty.")


def check_repetition_penalty(fn: Function, *, seed: int = 4, batch: int = 3, vocab: int = 10,
                             history: int = 8, penalty: float = 1.5) -> None:
    """Signs, repeated ids, per-row histories, an empty history, one row, penalty <= 0 refused."""
    __tracebackhide__ = True
    rng = seeded(seed)
    name = getattr(fn, "__name__", "apply_repetition_penalty")
    logits = _logits(rng, (batch, vocab))
    ids = rng.integers(0, max(2, vocab // 2), (batch, history))  # repeats are likely
    if batch > 1:
        ids[1] = rng.integers(vocab // 2, vocab, history)        # a history of its own
    _penalty_case(fn, logits, ids, penalty)
    _penalty_case(fn, logits[0], ids[0], penalty)                                 # one row
    _penalty_case(fn, np.array([2.0, -2.0, 0.0, -np.inf, 1.0]), np.array([0, 1, 1, 1, 2, 3]), penalty)
    _penalty_case(fn, logits, np.zeros((batch, 0), dtype=np.int64), penalty)     # empty history
    for bad in (0.0, -1.0):
        _refuses(fn, name, (np.array([0]), bad), {}, bad, "the penalty must be > 0")
    passed(f"apply_repetition_penalty matches the reference (penalty {penalty:g}, logits "
           f"{logits.shape}), penalises each seen id once, per row, and refuses penalty <= 0")


# -- greedy, temperature, sample ------------------------------------------------------------------

def _ids(result, what: str, shape: tuple) -> np.ndarray:
    __tracebackhide__ = True
    if result is None:
        fail(f"{what} is None. Does your function end with a `return` statement?")
    array = np.asarray(result)
    if not np.issubdtype(array.dtype, np.integer):
        fail(f"{what} has dtype {array.dtype}: return integer token ids (np.int64), e.g. "
             "with .astype(np.int64), not probabilities or floats.")
    if array.shape != tuple(shape):
        fail(f"{what} has shape {array.shape}, expected {tuple(shape)}: one id per row of logits, "
             "taken along the last axis" + (" (a single row of shape (V,) gives shape ())."
                                            if shape == () else "."))
    return array.astype(np.int64)


def check_greedy_and_temperature(greedy_fn: Function, temperature_fn: Function, *, seed: int = 5,
                                 batch: int = 3, vocab: int = 10) -> None:
    """greedy: argmax per row (ties to the lowest id), shapes (B,) and (); temperature: division."""
    __tracebackhide__ = True
    rng = seeded(seed)
    gname = getattr(greedy_fn, "__name__", "greedy")
    tname = getattr(temperature_fn, "__name__", "apply_temperature")
    logits = _logits(rng, (batch, vocab))
    logits[0, -2:] = logits[0].max() + 1.0            # a tie for the top: the lowest id wins
    logits[-1, ::2] = -np.inf
    for case in (logits, logits[0], np.full((2, 4), -np.inf) + np.array([0, 0, 0, 1.0])):
        got = _ids(_call(greedy_fn, gname, case), f"`{gname}` on logits of shape {case.shape}",
                   case.shape[:-1])
        expected = reference.greedy(case)
        if not np.array_equal(got, expected):
            fail(f"`{gname}` on logits of shape {case.shape} returned {got.tolist()}, expected "
                 f"{expected.tolist()}: the index of each row's highest logit (np.argmax along "
                 "the last axis; a tie goes to the lowest index).")
    for temperature in (0.5, 1.0, 2.5):
        call = f"{tname}(logits, {temperature})"
        got = as_float_array(_call(temperature_fn, tname, logits, temperature),
                             f"The result of {call}", logits.shape)
        expected = reference.apply_temperature(logits, temperature)
        finite = np.isfinite(expected)
        if not (np.array_equal(got == -np.inf, expected == -np.inf)
                and np.allclose(got[finite], expected[finite], rtol=RTOL, atol=0.0)):
            if np.allclose(got[finite], (logits * temperature)[finite], rtol=RTOL, atol=0.0):
                fail(f"{call} multiplies the logits by the temperature: divide them, so that T < 1 "
                     "sharpens the distribution and T > 1 flattens it.")
            fail(f"{call} is not logits / temperature: {worst_mismatch(np.where(finite, got, 0), np.where(finite, expected, 0))}.")
    for bad in (0, -1.0):
        _refuses(temperature_fn, tname, (bad,), {}, bad,
                 "the temperature must be > 0 (greedy() is the limit T -> 0)")
    passed("greedy takes each row's argmax (ties to the lowest id); apply_temperature divides "
           "and refuses T <= 0")


SETTINGS = ((1.0, None, None), (0.8, 5, None), (1.5, None, 0.9), (0.7, 8, 0.8))


def _describe_setting(temperature, top_k, top_p) -> str:
    return f"temperature={temperature}, top_k={top_k}, top_p={top_p}"


def check_sample(fn: Function, *, seed: int = 6, batch: int = 8, vocab: int = 20,
                 settings=SETTINGS, draws: int = 4) -> None:
    """Seeded sampling gives the reference's tokens and consumes one rng.random() per row."""
    __tracebackhide__ = True
    rng_logits = seeded(seed)
    name = getattr(fn, "__name__", "sample")
    for setting in settings:
        temperature, top_k, top_p = setting
        logits = _logits(rng_logits, (batch, vocab), scale=2.5)
        for case in (logits, logits[0]):
            call = f"`{name}(logits of shape {case.shape}, rng, {_describe_setting(*setting)})`"
            mine, theirs = np.random.default_rng(seed + 1), np.random.default_rng(seed + 1)
            for draw in range(draws):
                before = theirs.bit_generator.state
                got = _ids(_call(fn, name, case, mine, temperature=temperature, top_k=top_k,
                                 top_p=top_p), f"The result of {call}", case.shape[:-1])
                expected = reference.sample(case, theirs, temperature=temperature, top_k=top_k,
                                            top_p=top_p)
                if np.array_equal(got, expected) and mine.bit_generator.state == theirs.bit_generator.state:
                    continue
                _diagnose_sample(got, expected, case, setting, call, draw,
                                 mine.bit_generator.state == theirs.bit_generator.state, before)
    passed(f"sample draws the reference's tokens for {len(settings)} settings, batched and "
           "single rows, one rng.random() per row")


def _filters(logits, temperature, top_k, top_p):
    """The reference's filters in the right order: temperature, top-k, top-p."""
    out = reference.apply_temperature(logits, temperature)
    if top_k is not None:
        out = reference.top_k_filter(out, top_k)
    if top_p is not None:
        out = reference.top_p_filter(out, top_p)
    return out


def _draw_from(state: dict, filtered_logits: np.ndarray) -> np.ndarray:
    """The reference's draw on already filtered logits, from a saved generator state."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return reference.sample(filtered_logits, rng)


def _diagnose_sample(got, expected, logits, setting, call, draw, same_state, before) -> None:
    __tracebackhide__ = True
    temperature, top_k, top_p = setting
    filtered = np.atleast_2d(reference.softmax(_filters(logits, temperature, top_k, top_p)))
    flat = np.atleast_1d(got)
    if np.any((flat < 0) | (flat >= logits.shape[-1])):
        fail(f"{call} returned ids outside 0 .. {logits.shape[-1] - 1}: {flat.tolist()[:8]}.")
    if not same_state:
        fail(f"{call} used the generator differently from the reference (draw {draw + 1}). "
             "Draw exactly one number per row with rng.random(), row 0 first (rng.random(B) "
             "gives the same numbers), and no other random numbers: then the same seed gives "
             "the same tokens in your code and the course's.")
    if temperature != 1.0 and (top_k is not None or top_p is not None):
        swapped = reference.apply_temperature(_filters(logits, 1.0, top_k, top_p), temperature)
        if np.array_equal(_draw_from(before, swapped), got) and not np.array_equal(
                _draw_from(before, swapped), expected):
            fail(f"{call} applies the filters before the temperature. Apply the temperature "
                 "first, then top-k, then top-p: the nucleus must be that of the distribution "
                 "you sample from.")
    if top_k is not None and top_p is not None:
        swapped = reference.top_k_filter(reference.top_p_filter(
            reference.apply_temperature(logits, temperature), top_p), top_k)
        if np.array_equal(_draw_from(before, swapped), got):
            fail(f"{call} applies top-p before top-k. The order is temperature, then top-k, "
                 "then top-p (the nucleus of what top-k left).")
    if np.any(np.take_along_axis(filtered, flat[:, None], axis=-1)[:, 0] == 0):
        fail(f"{call} drew a token that the filters remove (probability 0 after temperature, "
             "top-k and top-p). Sample from the softmax of the filtered logits.")
    fail(f"{call} drew {flat.tolist()[:8]} where the reference draws "
         f"{np.atleast_1d(expected).tolist()[:8]} (draw {draw + 1}). With probabilities "
         "probs = softmax(filtered logits) and cdf = np.cumsum(probs), the token is the first "
         "index with cdf > u * cdf[-1], for one u = rng.random() per row; check also that the "
         "temperature is applied first, then top-k, then top-p.")
