"""Checks for exercise 04_adam: one Adam step, an Adam optimizer class, a training loop, and
one AdamW step (decoupled weight decay).

Each check draws seeded float64 inputs, calls the learner's ``adam_step``, ``Adam`` or
``adamw_step`` and compares with :mod:`llmref.optim`, which tests/test_llmref_optim.py
compares with ``torch.optim.Adam`` and ``torch.optim.AdamW`` (one step from a given state, and
trajectories of 100 and more steps). Comparing with the NumPy reference keeps every check far
under a second and free of torch at grading time.

On a mismatch a check first compares the learner's result with what each common mistake
computes (no bias correction, eps inside the square root, one m and v shared by all
parameters, weight decay added to the gradient, ...) and names the one it matches.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from llmref.optim import Adam as ReferenceAdam
from llmref.optim import adam_step as reference_step
from llmref.optim import adamw_step as reference_adamw

from ._core import (NUMPY_SHORTCUTS, as_float_array, call_learner, close, describe, expect_class,
                    expect_tuple, fail, find_bad_values, first_match, hint_on_error, matches,
                    passed, refuse_shortcuts, seeded, worst_mismatch)

# Everything is float64. A correct adam_step differs from the reference only in the order of
# a few roundings (e.g. sqrt(v) / sqrt(1 - beta2**t) instead of sqrt(v / (1 - beta2**t))):
# about 1e-16 relative. Over the 100 closed-loop steps of check_adam_loop such differences
# stay below 1e-14 (tests/test_llmref_optim.py sees 2e-16 against torch). RTOL = 1e-9 leaves
# five orders of margin; ATOL only guards entries that are exactly 0. Every mistake the checks
# name changes some value by more than 1e-4 relative on the inputs below: the gradients span
# 1e-6 .. 1, so that eps placement matters, and the hyperparameters are not the defaults.
# AdamW's decoupled decay adds one multiplication, param * (1 - lr * weight_decay), whose
# rounding (1e-16 relative) is as small; its smallest named mistake, decaying after the
# update, moves a parameter by lr**2 * weight_decay times the step (1e-5 relative and more
# on the inputs below).
RTOL = 1e-9
ATOL = 1e-300
# NaN equals NaN in comparisons, so a wrong value is recognised where it overflows.
TOL = {"rtol": RTOL, "atol": ATOL}

DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
ADAMW_DEFAULTS = {**DEFAULTS, "weight_decay": 1e-2}  # torch.optim.AdamW's

Function = Callable[..., object]

# torch.optim.Adam (or any of torch) computes the step for the learner.
WHY_BY_HAND = ("Write the update in NumPy: the moment estimates, their bias correction and "
               "where eps goes are the exercise, and what torch.optim.Adam hides.")
WHY_ADAMW_BY_HAND = ("Write the update in NumPy: where the decay goes (on the weight, scaled by "
                     "lr, outside the adaptive step) is the exercise, and what "
                     "torch.optim.AdamW hides.")


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
                     other_name: str, name: str = "adam_step") -> None:
    """new_m (g**1, beta1) or new_v (g**2, beta2) is wrong: say how."""
    __tracebackhide__ = True
    power = 1 if which == "m" else 2
    gp = g**power
    expected = beta * state + (1 - beta) * gp
    formula = (f"new_{which} = {beta_name} * {which} + (1 - {beta_name}) * "
               + ("grad" if power == 1 else "grad**2"))
    default = DEFAULTS[beta_name]
    candidates = [
        (lambda: other_beta * state + (1 - other_beta) * gp,
         f"new_{which} uses {other_name} where it should use {beta_name}: beta1 and beta2 look "
         f"swapped. beta1 (0.9 by default) belongs to m, beta2 (0.999) to v: {formula}."),
    ]
    if which == "v":
        candidates += [
            (lambda: beta * state + (1 - beta) * g,
             "new_v averages the gradient itself; v is the running average of the squared "
             f"gradient: {formula}."),
            (lambda: beta * state + (1 - beta) * np.abs(g),
             f"new_v averages |grad|; v is the running average of the squared gradient: {formula}."),
        ]
    candidates += [
        (lambda: beta * state + gp,
         f"new_{which} adds the whole {'gradient' if power == 1 else 'squared gradient'}: scale "
         f"it by (1 - {beta_name}), {formula}."),
        (lambda: (1 - beta) * state + beta * gp,
         f"new_{which} has its weights the wrong way round: {beta_name} multiplies the old "
         f"{which}, (1 - {beta_name}) the new gradient term: {formula}."),
    ]
    if beta != default:
        candidates.append(
            (lambda: default * state + (1 - default) * gp,
             f"{name} was called with {beta_name}={beta} but new_{which} is computed as if "
             f"{beta_name}={default}: use the argument, not a hard-coded value."))
    message = first_match(actual, candidates, **TOL)
    if message:
        fail(message)
    fail(f"new_{which} should be {formula}: " + worst_mismatch(actual, expected) + ".")


ADAM_RULE = "new_param = param - lr * m_hat / (sqrt(v_hat) + eps)"


def _diagnose_param(actual, p, g, m, v, t, hyper, *, name: str = "adam_step",
                    rule: str = ADAM_RULE) -> None:
    """new_param is wrong although new_m and new_v are right: name the mistake.

    `p` is the parameter Adam's step starts from (for AdamW, the decayed one)."""
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
    message = first_match(actual, ((functools.partial(_step_with, *args, **changes), says)
                                   for changes, says in candidates), **TOL)
    if message:
        fail(message)
    for key, default in DEFAULTS.items():
        if hyper[key] != default:
            used = {**hyper, key: default}
            if matches(actual, lambda: _step_with(p, g, m, v, t, used["lr"], used["beta1"],
                                                  used["beta2"], used["eps"]), **TOL):
                fail(f"{name} was called with {key}={hyper[key]} but computed as if "
                     f"{key}={default}: use the argument, not a hard-coded value.")
    fail(f"new_param should be {rule}: " + worst_mismatch(actual, expected) + ".")


def _run_step(fn: Function, p, g, m, v, t, kwargs, *, name: str = "adam_step",
              why: str = WHY_BY_HAND):
    """Call the learner's adam_step (or adamw_step) on copies; return its three arrays."""
    __tracebackhide__ = True
    with refuse_shortcuts(NUMPY_SHORTCUTS, name, why):
        result = call_learner(fn, p.copy(), g.copy(), m.copy(), v.copy(), t, name=name, **kwargs)
    result = expect_tuple(result, name, ("new_param", "new_m", "new_v"))
    names = (f"new_param (the first value `{name}` returned)",
             f"new_m (the second value `{name}` returned)",
             f"new_v (the third value `{name}` returned)")
    return [as_float_array(r, n, p.shape) for r, n in zip(result, names)]


def _wrong_order(got, expected, name: str) -> None:
    """Fail if the three returned arrays are the right ones in another order."""
    __tracebackhide__ = True
    if all(close(a, e, **TOL) for a, e in zip(got, expected)):
        return
    for order in ((1, 2, 0), (2, 0, 1), (0, 2, 1), (1, 0, 2), (2, 1, 0)):
        if all(close(a, expected[i], **TOL) for a, i in zip(got, order)):
            fail(f"{name} computes the right values but returns them in another order: "
                 "return new_param, new_m, new_v.")


def _check_one_step(fn: Function, p, g, m, v, t, kwargs) -> None:
    __tracebackhide__ = True
    hyper = {**DEFAULTS, **kwargs}
    new_p, new_m, new_v = _run_step(fn, p, g, m, v, t, kwargs)
    expected = reference_step(p, g, m, v, t, **kwargs)
    _wrong_order((new_p, new_m, new_v), expected, "adam_step")
    if not close(new_m, expected[1], **TOL):
        _diagnose_moment("m", new_m, m, g, hyper["beta1"], hyper["beta2"], "beta1", "beta2")
    if not close(new_v, expected[2], **TOL):
        _diagnose_moment("v", new_v, v, g, hyper["beta2"], hyper["beta1"], "beta2", "beta1")
    if not close(new_p, expected[0], **TOL):
        _diagnose_param(new_p, p, g, m, v, t, hyper)


def _random_state(rng, shape, t):
    """m and v as earlier gradients of this script's sizes would leave them after t - 1 steps."""
    if t == 1:
        return np.zeros(shape), np.zeros(shape)
    scale = np.abs(_gradients(rng, shape))
    return scale * rng.standard_normal(shape), (scale * rng.standard_normal(shape))**2


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
        m, v = _random_state(rng, shape, t)
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


def _per_parameter_hint(error: BaseException) -> str | None:
    if isinstance(error, ValueError) and "broadcast" in str(error):
        return ("Arrays of different shapes were combined: does one m (or v) serve several "
                "parameters? Each parameter needs its own, np.zeros_like(p).")
    return None


def _make(cls, params, lr, betas, eps):
    __tracebackhide__ = True
    expect_class(cls, "Adam")
    with refuse_shortcuts(NUMPY_SHORTCUTS, "Adam", WHY_BY_HAND):
        optimizer = call_learner(cls, params, lr=lr, betas=betas, eps=eps, name="Adam")
    if not callable(getattr(optimizer, "step", None)):
        fail("An Adam object has no step method: define `def step(self, grads):` inside the "
             "class, indented like __init__.")
    return optimizer


def _learner_step(optimizer, grads) -> None:
    __tracebackhide__ = True
    with hint_on_error(_per_parameter_hint), refuse_shortcuts(NUMPY_SHORTCUTS, "Adam.step", WHY_BY_HAND):
        call_learner(optimizer.step, [g.copy() for g in grads], name="Adam.step")


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
        if all(close(a, e, **TOL) for a, e in zip(history[-1], reference.params)):
            continue
        _diagnose_class(k, history, grads_seen, init, before, reference.params, lr, betas, eps)
    return params


def _replays(kind: str, grads_seen, history, init, lr, betas, eps) -> bool:
    """Whether the learner's parameters, step after step, are what VARIANTS[kind] gives."""
    variant = _Variant(kind, init, lr, betas, eps)
    with np.errstate(all="ignore"):
        try:
            for step_grads, learner_params in zip(grads_seen, history):
                variant.step(step_grads)
                if not all(close(a, e, **TOL) for a, e in zip(learner_params, variant.params)):
                    return False
        except Exception:  # e.g. a shared m cannot serve parameters of different shapes
            return False
    return True


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
        if _replays(kind, grads_seen, history, init, lr, betas, eps):
            fail(message)
    i = next(i for i, (a, e) in enumerate(zip(now, expected)) if not close(a, e, **TOL))
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


def _least_squares(rng, n_samples: int, n_features: int):
    """Features X, targets y and the gradient of mean((X w + b - y)^2) in w and b."""
    X = rng.standard_normal((n_samples, n_features))
    y = X @ rng.standard_normal(n_features) + 0.5 + 0.1 * rng.standard_normal(n_samples)

    def loss(w, b):
        return float(np.mean((X @ w + b - y) ** 2))

    def grads(w, b):
        r = X @ w + b - y
        return 2 * X.T @ r / n_samples, np.array([2 * r.mean()])

    return loss, grads


def check_adam_loop(cls, *, seed: int = 1, steps: int = 100, lr: float = 0.05,
                    n_features: int = 4, n_samples: int = 30) -> None:
    """Train least-squares weights w and bias b with Adam; the gradients come from the current
    parameters, so one wrong step changes every later one."""
    __tracebackhide__ = True
    loss, grads = _least_squares(seeded(seed), n_samples, n_features)
    init = [np.zeros(n_features), np.zeros(1)]
    final = _follow(cls, init, lambda params, k: list(grads(*params)), steps, lr, (0.9, 0.999), 1e-8)
    passed(f"{steps} Adam steps on a least-squares problem follow the reference "
           f"(loss {loss(*init):.3f} -> {loss(*final):.3f})")


# ------------------------------------------------------------------------- adamw_step

ADAMW_RULE = "new_param = param * (1 - lr * weight_decay) - lr * m_hat / (sqrt(v_hat) + eps)"


def _adamw_param(kind: str, p, g, m, v, t, lr, beta1, beta2, eps, wd):
    """AdamW's new parameter, right ("right") or with one known mistake about the decay."""
    adam = functools.partial(_step_with, g=g, m=m, v=v, t=t, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
    if kind == "l2":  # Adam with L2 regularisation: the decay goes through m and v
        return _step_with(p, g + wd * p, m, v, t, lr, beta1, beta2, eps)
    if kind == "decay_inside_step":  # added to the numerator, divided by sqrt(v_hat) + eps
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        new_m, new_v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g**2
        return p - lr * (new_m / bc1 + wd * p) / (np.sqrt(new_v / bc2) + eps)
    if kind == "decay_without_lr":
        return adam(p * (1 - wd))
    if kind == "decay_after_update":
        return adam(p) * (1 - lr * wd)
    if kind == "no_decay":
        return adam(p)
    if kind == "decay_grows":
        return adam(p * (1 + lr * wd))
    if kind == "decay_not_proportional":
        return adam(p - lr * wd)
    if kind == "default_decay":
        return adam(p * (1 - lr * ADAMW_DEFAULTS["weight_decay"]))
    return adam(p * (1 - lr * wd))


ADAMW_MISTAKES = {
    "l2": "The weight decay went into the gradient (grad + weight_decay * param): that is Adam "
          "with L2 regularisation, what torch.optim.Adam(weight_decay=...) computes, not AdamW. "
          "Adam then divides it by sqrt(v_hat) with the rest of the gradient, so weights with "
          "large gradients are barely decayed. Decouple it: m and v see the plain gradient, and "
          "the parameter itself shrinks by lr * weight_decay * param, outside the adaptive step.",
    "decay_inside_step": "The decay term weight_decay * param is divided by sqrt(v_hat) + eps "
                         "together with m_hat, so weights with large gradients are barely "
                         "decayed. AdamW keeps it outside the adaptive step: " + ADAMW_RULE + ".",
    "decay_without_lr": "The decay is not scaled by the learning rate: param * (1 - weight_decay) "
                        "shrinks every weight by weight_decay at every step, whatever lr is. AdamW "
                        "shrinks it by lr * weight_decay * param: " + ADAMW_RULE + ".",
    "decay_after_update": "The decay is applied after the Adam step, to the updated parameter. "
                          "torch.optim.AdamW decays the parameter as it was before this step: "
                          "param * (1 - lr * weight_decay) first, then the Adam update.",
    "no_decay": "new_param is exactly what adam_step gives: the weight decay is missing. AdamW also "
                "shrinks the parameter by lr * weight_decay * param: " + ADAMW_RULE + ".",
    "decay_grows": "The decay has the wrong sign: the weights grow by lr * weight_decay * param "
                   "instead of shrinking: " + ADAMW_RULE + ".",
    "decay_not_proportional": "The decay subtracts lr * weight_decay, the same amount from every "
                              "weight; it is proportional to the weight, a pull towards 0: "
                              "param * (1 - lr * weight_decay).",
}


def _diagnose_adamw(got, p, g, m, v, t, hyper) -> None:
    """Name what is wrong with the learner's AdamW step, or fail with the largest difference."""
    __tracebackhide__ = True
    new_p, new_m, new_v = got
    lr, beta1, beta2, eps, wd = (hyper[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay"))
    expected = reference_adamw(p, g, m, v, t, lr, beta1, beta2, eps, wd)
    _wrong_order(got, expected, "adamw_step")
    if not close(new_m, expected[1], **TOL) or not close(new_v, expected[2], **TOL):
        l2 = _step_with(p, g + wd * p, m, v, t, lr, beta1, beta2, eps)
        if wd and (matches(new_m, beta1 * m + (1 - beta1) * (g + wd * p), **TOL)
                   or matches(new_p, l2, **TOL)):
            fail(ADAMW_MISTAKES["l2"])
        if not close(new_m, expected[1], **TOL):
            _diagnose_moment("m", new_m, m, g, beta1, beta2, "beta1", "beta2", "adamw_step")
        _diagnose_moment("v", new_v, v, g, beta2, beta1, "beta2", "beta1", "adamw_step")
    if close(new_p, expected[0], **TOL):
        return
    args = (p, g, m, v, t, lr, beta1, beta2, eps, wd)
    candidates = [(functools.partial(_adamw_param, kind, *args), message)
                  for kind, message in ADAMW_MISTAKES.items() if wd or kind == "decay_grows"]
    if wd != ADAMW_DEFAULTS["weight_decay"]:
        candidates.append((functools.partial(_adamw_param, "default_decay", *args),
                           f"adamw_step was called with weight_decay={wd} but computed as if "
                           f"weight_decay={ADAMW_DEFAULTS['weight_decay']}: use the argument, not "
                           "a hard-coded value."))
    message = first_match(new_p, candidates, **TOL)
    if message:
        fail(message)
    # The decay is right; Adam's part of the step is not: adam_step's own diagnoses apply.
    _diagnose_param(new_p, p * (1 - lr * wd), g, m, v, t, hyper, name="adamw_step",
                    rule=ADAMW_RULE)


def _adamw_case(fn: Function, p, g, m, v, t, kwargs):
    """One learner AdamW step from (p, m, v) at step t; fail with a diagnosis if it is wrong.
    Returns the learner's (new_param, new_m, new_v)."""
    __tracebackhide__ = True
    got = _run_step(fn, p, g, m, v, t, kwargs, name="adamw_step", why=WHY_ADAMW_BY_HAND)
    expected = reference_adamw(p, g, m, v, t, **kwargs)
    if not all(close(a, e, **TOL) for a, e in zip(got, expected)):
        _diagnose_adamw(got, p, g, m, v, t, {**ADAMW_DEFAULTS, **kwargs})
    return got


def check_adamw_step(fn: Function, *, seed: int = 30, shape=(3, 4), ts=(1, 2, 10, 1000),
                     lr: float = 0.01, betas=(0.8, 0.99), eps: float = 1e-6,
                     weight_decay: float = 0.1) -> None:
    """One step from a fresh state with the default hyperparameters (weight_decay 0.01), then
    steps t in `ts` from random states with the given (non-default) ones."""
    __tracebackhide__ = True
    rng = seeded(seed)
    p, g = rng.standard_normal(shape), _gradients(rng, shape)
    zeros = np.zeros(shape)
    _adamw_case(fn, p, g, zeros, zeros, 1, {})
    kwargs = {"lr": lr, "beta1": betas[0], "beta2": betas[1], "eps": eps, "weight_decay": weight_decay}
    for t in ts:
        p, g = rng.standard_normal(shape), _gradients(rng, shape)
        m, v = _random_state(rng, shape, t)
        _adamw_case(fn, p, g, m, v, t, kwargs)
    passed(f"adamw_step matches the reference on arrays of shape {tuple(shape)}: t = 1 with the "
           f"default hyperparameters, t in {tuple(ts)} with lr={lr}, betas={tuple(betas)}, "
           f"eps={eps}, weight_decay={weight_decay}")


def check_adamw_loop(fn: Function, *, seed: int = 31, steps: int = 100, lr: float = 0.05,
                     weight_decay: float = 0.1, n_features: int = 4, n_samples: int = 30) -> None:
    """Train least-squares weights and bias with the learner's adamw_step, its own returned
    state fed back at every step; every step is compared with the reference from that state."""
    __tracebackhide__ = True
    loss, grads = _least_squares(seeded(seed), n_samples, n_features)
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    params = [np.zeros(n_features), np.zeros(1)]
    state = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    start = loss(*params)
    for t in range(1, steps + 1):
        for i, (p, g) in enumerate(zip(params, grads(*params))):
            params[i], *state[i] = _adamw_case(fn, p, g, *state[i], t, kwargs)
    passed(f"{steps} AdamW steps (weight_decay={weight_decay}) on a least-squares problem follow "
           f"the reference (loss {start:.3f} -> {loss(*params):.3f})")
