"""Checks for exercise 04_adam: one Adam step, an Adam optimizer class and a training loop.

Each check draws seeded float64 inputs, calls the learner's ``adam_step`` or ``Adam`` and
compares with :mod:`llmref.optim`, which tests/test_llmref_optim.py compares with
``torch.optim.Adam`` (one step from a given state, and 100-step trajectories). Comparing with
the NumPy reference keeps every check far under a second and free of torch at grading time.

On a mismatch a check first compares the learner's result with what each common mistake
computes (no bias correction, eps inside the square root, one m and v shared by all
parameters, ...) and names the one it matches.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from llmref.optim import Adam as ReferenceAdam
from llmref.optim import adam_step as reference_step

from ._core import (NUMPY_SHORTCUTS, CheckFailure, refuse_shortcuts, as_float_array, call_learner, describe, fail, find_bad_values,
                    passed, seeded, worst_mismatch)

# Everything is float64. A correct adam_step differs from the reference only in the order of
# a few roundings (e.g. sqrt(v) / sqrt(1 - beta2**t) instead of sqrt(v / (1 - beta2**t))):
# about 1e-16 relative. Over the 100 closed-loop steps of check_adam_loop such differences
# stay below 1e-14 (tests/test_llmref_optim.py sees 2e-16 against torch). RTOL = 1e-9 leaves
# five orders of margin; ATOL only guards entries that are exactly 0. Every mistake the checks
# name changes some value by more than 1e-4 relative on the inputs below: the gradients span
# 1e-6 .. 1, so that eps placement matters, and the hyperparameters are not the defaults.
RTOL = 1e-9
ATOL = 1e-300

DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}

Function = Callable[..., object]

# torch.optim.Adam (or any of torch) computes the step for the learner.
WHY_BY_HAND = ("Write the update in NumPy: the moment estimates, their bias correction and "
               "where eps goes are the exercise, and what torch.optim.Adam hides.")


def _close(actual, expected) -> bool:
    with np.errstate(all="ignore"):
        try:
            return bool(np.allclose(actual, expected, rtol=RTOL, atol=ATOL, equal_nan=True))
        except ValueError:  # shapes that do not broadcast: not the same thing
            return False


def _matches(actual: np.ndarray, candidate: Callable[[], object]) -> bool:
    """Whether `actual` equals what a candidate (usually a known mistake) computes."""
    with np.errstate(all="ignore"):
        try:
            value = np.asarray(candidate(), dtype=np.float64)
        except Exception:  # the candidate does not apply to these inputs
            return False
    return value.shape == np.shape(actual) and _close(actual, value)


def _gradients(rng: np.random.Generator, shape) -> np.ndarray:
    """Gradients whose sizes span 1e-6 .. 1: the small ones are where eps matters."""
    return rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 0, shape)


# ------------------------------------------------------------------------- adam_step

def _step_with(p, g, m, v, t, lr, beta1, beta2, eps, *, correct_m=True, correct_v=True,
               t_used=None, eps_inside=False, eps_on_raw_v=False, moments="new", sign=-1.0,
               numerator="m"):
    """The parameter update, with one piece swapped out for a known mistake."""
    new_m = beta1 * m + (1 - beta1) * g
    new_v = beta2 * v + (1 - beta2) * g**2
    mm, vv = (new_m, new_v) if moments == "new" else (m, v)
    t = t if t_used is None else t_used
    bc1 = 1 - beta1**t if correct_m else 1.0
    bc2 = 1 - beta2**t if correct_v else 1.0
    top = (mm / bc1) if numerator == "m" else g
    if eps_inside:
        denominator = np.sqrt(vv / bc2 + eps)
    elif eps_on_raw_v:  # the Adam paper's "efficient" form with an unscaled eps
        return p + sign * lr * np.sqrt(bc2) / bc1 * mm / (np.sqrt(vv) + eps)
    else:
        denominator = np.sqrt(vv / bc2) + eps
    return p + sign * lr * top / denominator


def _diagnose_moment(which: str, actual, state, g, beta, other_beta, beta_name: str,
                     other_name: str) -> None:
    """new_m (g**1, beta1) or new_v (g**2, beta2) is wrong: say how."""
    __tracebackhide__ = True
    power = 1 if which == "m" else 2
    gp = g**power
    expected = beta * state + (1 - beta) * gp
    formula = (f"new_{which} = {beta_name} * {which} + (1 - {beta_name}) * "
               + ("grad" if power == 1 else "grad**2"))
    if _matches(actual, lambda: other_beta * state + (1 - other_beta) * gp):
        fail(f"new_{which} uses {other_name} where it should use {beta_name}: beta1 and beta2 look "
             f"swapped. beta1 (0.9 by default) belongs to m, beta2 (0.999) to v: {formula}.")
    if which == "v" and _matches(actual, lambda: beta * state + (1 - beta) * g):
        fail("new_v averages the gradient itself; v is the running average of the squared "
             f"gradient: {formula}.")
    if which == "v" and _matches(actual, lambda: beta * state + (1 - beta) * np.abs(g)):
        fail(f"new_v averages |grad|; v is the running average of the squared gradient: {formula}.")
    if _matches(actual, lambda: beta * state + gp):
        fail(f"new_{which} adds the whole {'gradient' if power == 1 else 'squared gradient'}: scale "
             f"it by (1 - {beta_name}), {formula}.")
    if _matches(actual, lambda: (1 - beta) * state + beta * gp):
        fail(f"new_{which} has its weights the wrong way round: {beta_name} multiplies the old "
             f"{which}, (1 - {beta_name}) the new gradient term: {formula}.")
    default = DEFAULTS[beta_name]
    if beta != default and _matches(actual, lambda: default * state + (1 - default) * gp):
        fail(f"adam_step was called with {beta_name}={beta} but new_{which} is computed as if "
             f"{beta_name}={default}: use the argument, not a hard-coded value.")
    fail(f"new_{which} should be {formula}: " + worst_mismatch(actual, expected) + ".")


def _diagnose_param(actual, p, g, m, v, t, hyper) -> None:
    __tracebackhide__ = True
    lr, beta1, beta2, eps = hyper["lr"], hyper["beta1"], hyper["beta2"], hyper["eps"]
    expected = _step_with(p, g, m, v, t, lr, beta1, beta2, eps)
    args = (p, g, m, v, t, lr, beta1, beta2, eps)
    bad = find_bad_values(actual)
    if bad and t == 1:
        fail(f"new_param has {bad} values at t = 1, as if the bias correction used t - 1 = 0: "
             "1 - beta1**0 = 0 and the division blows up. t is already the step's number, "
             "starting at 1: use 1 - beta1**t and 1 - beta2**t.")
    if bad:
        fail(f"new_param has {bad} values. Look for a division by zero: eps must be added to "
             "sqrt(v_hat) so the denominator is never 0.")
    rule = "new_param = param - lr * m_hat / (sqrt(v_hat) + eps)"
    candidates = [
        (dict(correct_m=False, correct_v=False),
         f"new_param is computed without bias correction. Divide new_m by 1 - beta1**t and new_v "
         f"by 1 - beta2**t (t = {t} here) before using them: {rule}."),
        (dict(correct_v=False),
         "Only m is bias-corrected: divide new_v by 1 - beta2**t as well before the square root."),
        (dict(correct_m=False),
         "Only v is bias-corrected: divide new_m by 1 - beta1**t as well."),
        (dict(t_used=t - 1),
         f"The bias correction uses t - 1 (= {t - 1}): t is already the step's number, starting "
         "at 1. Use 1 - beta1**t and 1 - beta2**t."),
        (dict(t_used=t + 1),
         f"The bias correction uses t + 1 (= {t + 1}): t is already the step's number, starting "
         "at 1. Use 1 - beta1**t and 1 - beta2**t."),
        (dict(eps_inside=True),
         "eps is inside the square root. Add it outside, to sqrt(v_hat), as torch.optim.Adam does: "
         f"{rule}. The two differ wherever the gradients are small."),
        (dict(eps_on_raw_v=True),
         "eps is added to sqrt(new_v) before the bias correction (the Adam paper's 'efficient' "
         f"form). This exercise follows torch.optim.Adam: {rule}, eps added to sqrt(v_hat)."),
        (dict(moments="old"),
         "new_param uses the old m and v. Update m and v first, then use the new ones (bias-"
         f"corrected) in the step: {rule}."),
        (dict(sign=+1.0),
         "new_param moves along the gradient instead of against it: subtract the step, "
         f"{rule}."),
        (dict(numerator="g"),
         f"The step's numerator is the raw gradient; it is the bias-corrected m: {rule}."),
    ]
    for changes, message in candidates:
        if _matches(actual, lambda: _step_with(*args, **changes)):
            fail(message)
    for name, default in DEFAULTS.items():
        if hyper[name] != default:
            used = {**hyper, name: default}
            if _matches(actual, lambda: _step_with(p, g, m, v, t, used["lr"], used["beta1"],
                                                   used["beta2"], used["eps"])):
                fail(f"adam_step was called with {name}={hyper[name]} but computed as if "
                     f"{name}={default}: use the argument, not a hard-coded value.")
    fail(f"new_param should be {rule}: " + worst_mismatch(actual, expected) + ".")


def _run_step(fn: Function, p, g, m, v, t, kwargs):
    __tracebackhide__ = True
    with refuse_shortcuts(NUMPY_SHORTCUTS, "adam_step", WHY_BY_HAND):
        result = call_learner(fn, p.copy(), g.copy(), m.copy(), v.copy(), t, name="adam_step",
                              **kwargs)
    if result is None:
        fail("`adam_step` returned None. It should end with `return new_param, new_m, new_v`.")
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        fail("`adam_step` should return a tuple `(new_param, new_m, new_v)`, but returned "
             f"{describe(result)}"
             + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "") + ".")
    names = ("new_param (first returned value)", "new_m (second returned value)",
             "new_v (third returned value)")
    return [as_float_array(r, n, p.shape) for r, n in zip(result, names)]


def _check_one_step(fn: Function, p, g, m, v, t, kwargs) -> None:
    __tracebackhide__ = True
    hyper = {**DEFAULTS, **kwargs}
    new_p, new_m, new_v = _run_step(fn, p, g, m, v, t, kwargs)
    expected = reference_step(p, g, m, v, t, **kwargs)
    if not all(_close(a, e) for a, e in zip((new_p, new_m, new_v), expected)):
        # The right values in the wrong order?
        for order in ((1, 2, 0), (2, 0, 1), (0, 2, 1), (1, 0, 2), (2, 1, 0)):
            if all(_close(a, expected[i]) for a, i in zip((new_p, new_m, new_v), order)):
                fail("adam_step computes the right values but returns them in another order: "
                     "return new_param, new_m, new_v.")
    if not _close(new_m, expected[1]):
        _diagnose_moment("m", new_m, m, g, hyper["beta1"], hyper["beta2"], "beta1", "beta2")
    if not _close(new_v, expected[2]):
        _diagnose_moment("v", new_v, v, g, hyper["beta2"], hyper["beta1"], "beta2", "beta1")
    if not _close(new_p, expected[0]):
        _diagnose_param(new_p, p, g, m, v, t, hyper)


def check_adam_step(fn: Function, *, seed: int = 0, shape=(3, 4), ts=(1, 2, 10, 1000),
                    lr: float = 0.01, betas=(0.8, 0.99), eps: float = 1e-6) -> None:
    """One step from a fresh state with the default hyperparameters, then steps t in `ts`
    from random states with the given (non-default) hyperparameters."""
    __tracebackhide__ = True
    rng = seeded(seed)
    p, g = rng.standard_normal(shape), _gradients(rng, shape)
    zeros = np.zeros(shape)
    _check_one_step(fn, p, g, zeros, zeros, 1, {})
    kwargs = {"lr": lr, "beta1": betas[0], "beta2": betas[1], "eps": eps}
    for t in ts:
        p, g = rng.standard_normal(shape), _gradients(rng, shape)
        if t == 1:
            m, v = zeros, zeros
        else:  # a state as earlier gradients of this size would leave it
            scale = np.abs(_gradients(rng, shape))
            m, v = scale * rng.standard_normal(shape), (scale * rng.standard_normal(shape))**2
        _check_one_step(fn, p, g, m, v, t, kwargs)
    passed(f"adam_step matches the reference on arrays of shape {tuple(shape)}: t = 1 with the "
           f"default hyperparameters, t in {tuple(ts)} with lr={lr}, betas={tuple(betas)}, eps={eps}")


# ------------------------------------------------------------------------ Adam class

class _Variant:
    """What a known-wrong optimizer class does, simulated with the reference adam_step."""

    def __init__(self, kind: str, params, lr, betas, eps):
        self.kind = kind
        self.params = [p.copy() for p in params]
        if kind == "defaults":
            lr, betas, eps = DEFAULTS["lr"], (DEFAULTS["beta1"], DEFAULTS["beta2"]), DEFAULTS["eps"]
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.shared_m = self.shared_v = 0.0
        self.t = 0

    def step(self, grads):
        if self.kind != "t_per_parameter":
            self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if self.kind == "t_per_parameter":
                self.t += 1
            t = {"t_from_zero": self.t - 1, "t_fixed": 1}.get(self.kind, self.t)
            hyper = (self.lr, self.beta1, self.beta2, self.eps)
            if self.kind == "shared":
                self.params[i], self.shared_m, self.shared_v = reference_step(
                    p, g, self.shared_m, self.shared_v, t, *hyper)
            elif self.kind == "no_state":
                self.params[i], _, _ = reference_step(p, g, 0.0, 0.0, t, *hyper)
            else:
                self.params[i], self.m[i], self.v[i] = reference_step(
                    p, g, self.m[i], self.v[i], t, *hyper)


VARIANTS = {
    "shared": "Your parameters move as if they all shared one m and one v. Each parameter needs "
              "its own running averages: in __init__ make lists with one np.zeros_like(p) per "
              "parameter for m and for v, and use m[i], v[i] for params[i].",
    "t_per_parameter": "t grows once per parameter instead of once per call of step(): "
                       "increment it once at the top of step(), outside the loop over parameters.",
    "t_fixed": "t stays at 1: increment it (once) on every call of step(), so the bias "
               "correction fades as training goes on.",
    "t_from_zero": "The first step used t = 0: the bias correction divides by 1 - beta1**0 = 0. "
                   "Increment t before computing the update, so the first step has t = 1.",
    "no_state": "m and v start from zero on every call of step(): they must carry over between "
                "steps. Create them once in __init__ and store the new values adam_step returns.",
    "defaults": "The parameters move as if lr, betas and eps had their default values "
                "(1e-3, (0.9, 0.999), 1e-8), not those passed to Adam(...): store them in "
                "__init__ and pass them on to adam_step in step().",
}


def _per_parameter_hint(error: Exception) -> str | None:
    if isinstance(error, ValueError) and "broadcast" in str(error):
        return ("Arrays of different shapes were combined: does one m (or v) serve several "
                "parameters? Each parameter needs its own, np.zeros_like(p).")
    return None


def _make(cls, params, lr, betas, eps):
    __tracebackhide__ = True
    if not callable(cls):
        fail(f"Expected `Adam` to be a class, but it is {describe(cls)}. Did a later cell "
             "reassign the name? Re-run the cell that defines it.")
    with refuse_shortcuts(NUMPY_SHORTCUTS, "Adam", WHY_BY_HAND):
        optimizer = call_learner(cls, params, lr=lr, betas=betas, eps=eps, name="Adam")
    if not callable(getattr(optimizer, "step", None)):
        fail("An Adam object has no step method: define `def step(self, grads):` inside the "
             "class, indented like __init__.")
    return optimizer


def _learner_step(optimizer, grads) -> None:
    __tracebackhide__ = True
    try:
        with refuse_shortcuts(NUMPY_SHORTCUTS, "Adam.step", WHY_BY_HAND):
            call_learner(optimizer.step, [g.copy() for g in grads], name="Adam.step")
    except CheckFailure as failure:
        extra = _per_parameter_hint(failure.__cause__) if failure.__cause__ is not None else None
        if extra:
            raise CheckFailure(f"{failure}\n{extra}") from failure.__cause__
        raise


def _follow(cls, init, grad_fn, steps: int, lr, betas, eps) -> list[np.ndarray]:
    """Run the learner's optimizer next to the reference; fail at the first step they part.

    grad_fn(params, k) gives the gradients at step k (0-based) from the current parameters.
    Returns the learner's final parameters.
    """
    __tracebackhide__ = True
    params = [p.copy() for p in init]
    optimizer = _make(cls, params, lr, betas, eps)
    reference = ReferenceAdam([p.copy() for p in init], lr=lr, betas=betas, eps=eps)
    history, grads_seen = [], []
    for k in range(steps):
        before = [p.copy() for p in params]
        grads = grad_fn(params, k)
        grads_seen.append([g.copy() for g in grads])
        _learner_step(optimizer, grads)
        reference.step(grad_fn(reference.params, k))
        # Copies: as_float_array returns the live array itself when it is already float64.
        history.append([as_float_array(p, f"parameter {i}", q.shape).copy()
                        for i, (p, q) in enumerate(zip(params, init))])
        if all(_close(a, e) for a, e in zip(history[-1], reference.params)):
            continue
        _diagnose_class(k, history, grads_seen, init, before, reference.params, lr, betas, eps)
    return params


def _diagnose_class(k, history, grads_seen, init, before, expected, lr, betas, eps) -> None:
    __tracebackhide__ = True
    now = history[-1]
    if any(find_bad_values(p) for p in now) and k == 0:
        fail(VARIANTS["t_from_zero"])
    moved = [not np.array_equal(a, e) for a, e in zip(before, expected)]
    if all(np.array_equal(a, b) for a, b in zip(now, before)) and any(moved):
        fail(f"After step() number {k + 1} the arrays passed to Adam(params) are unchanged. step() "
             "must update them in place (p -= ..., or p[...] = new_p): the training loop keeps "
             "references to those arrays, so assigning a new array to a name or a list entry "
             "(or updating a copy) leaves them as they were.")
    for kind, message in VARIANTS.items():
        variant = _Variant(kind, init, lr, betas, eps)
        with np.errstate(all="ignore"):
            try:
                same = True
                for step_grads, learner_params in zip(grads_seen, history):
                    variant.step(step_grads)
                    same = all(_close(a, e) for a, e in zip(learner_params, variant.params))
                    if not same:
                        break
            except Exception:  # e.g. a shared m cannot serve parameters of different shapes
                same = False
        if same:
            fail(message)
    i = next(i for i, (a, e) in enumerate(zip(now, expected)) if not _close(a, e))
    fail(f"After step() number {k + 1}, parameter {i} differs from the reference: "
         + worst_mismatch(now[i], expected[i]) + ". If test_adam_step passes, look at how step() "
         "uses it: one m and v per parameter kept between steps, t counted once per step and 1 "
         "on the first, and the lr, betas and eps given to Adam(...).")


def check_adam_class(cls, *, seed: int = 0, shapes=((2, 3), (2, 3)), steps: int = 10,
                     lr: float = 0.05, betas=(0.8, 0.99), eps: float = 1e-6) -> None:
    """`steps` calls of Adam.step with fixed random gradients, parameter by parameter."""
    __tracebackhide__ = True
    rng = seeded(seed)
    init = [rng.standard_normal(shape) for shape in shapes]
    sequence = [[_gradients(rng, shape) for shape in shapes] for _ in range(steps)]
    _follow(cls, init, lambda params, k: sequence[k], steps, lr, betas, eps)
    passed(f"Adam follows the reference for {steps} steps on parameters of shapes "
           f"{tuple(tuple(s) for s in shapes)}")


def check_adam_loop(cls, *, seed: int = 1, steps: int = 100, lr: float = 0.05,
                    n_features: int = 4, n_samples: int = 30) -> None:
    """Train least-squares weights w and bias b with Adam; the gradients come from the current
    parameters, so one wrong step changes every later one."""
    __tracebackhide__ = True
    rng = seeded(seed)
    X = rng.standard_normal((n_samples, n_features))
    y = X @ rng.standard_normal(n_features) + 0.5 + 0.1 * rng.standard_normal(n_samples)
    init = [np.zeros(n_features), np.zeros(1)]

    def loss(params):
        w, b = params
        return float(np.mean((X @ w + b - y) ** 2))

    def grads(params, k):
        w, b = params
        r = X @ w + b - y
        return [2 * X.T @ r / n_samples, np.array([2 * r.mean()])]

    final = _follow(cls, init, grads, steps, lr, (0.9, 0.999), 1e-8)
    passed(f"{steps} Adam steps on a least-squares problem follow the reference "
           f"(loss {loss(init):.3f} -> {loss(final):.3f})")
