"""The checks behind exercise 04_adam, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks."""
from __future__ import annotations

import numpy as np
import pytest

from autograder.checks import CheckFailure
from autograder.checks import optim as checks
from llmref.optim import Adam, adam_step, adamw_step


@pytest.mark.parametrize("check, reference", [(checks.check_adam_step, adam_step),
                                              (checks.check_adam_class, Adam),
                                              (checks.check_adam_loop, Adam),
                                              (checks.check_adamw_step, adamw_step),
                                              (checks.check_adamw_loop, adamw_step)],
                         ids=["check_adam_step", "check_adam_class", "check_adam_loop",
                              "check_adamw_step", "check_adamw_loop"])
def test_reference_passes_each_check(check, reference, capsys):
    check(reference)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_arguments_given_to_adam_step_are_copies():
    # A learner who updates m in place (m *= beta1) must not change the check's own arrays.
    def in_place(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad**2
        param -= lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
        return param, m, v

    checks.check_adam_step(in_place)


def _ref(*args, **kwargs):
    return adam_step(*args, **kwargs)


BAD_STEPS = {
    "returns only the parameter": (lambda *a, **k: _ref(*a, **k)[0], "should return a tuple"),
    "returns a pair": (lambda *a, **k: _ref(*a, **k)[:2], "of length 2"),
    "wrong shape": (lambda *a, **k: (_ref(*a, **k)[0].ravel(), *_ref(*a, **k)[1:]), "has shape"),
    "m without (1 - beta1)": (
        lambda p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8:
        (_ref(p, g, m, v, t, lr, beta1, beta2, eps)[0], beta1 * m + g,
         _ref(p, g, m, v, t, lr, beta1, beta2, eps)[2]), "scale it by (1 - beta1)"),
    "only m corrected": (
        lambda p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8:
        (checks._step_with(p, g, m, v, t, lr, beta1, beta2, eps, correct_v=False),
         *_ref(p, g, m, v, t, lr, beta1, beta2, eps)[1:]), "Only m is bias-corrected"),
    "old moments in the step": (
        lambda p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8:
        (checks._step_with(p, g, m, v, t, lr, beta1, beta2, eps, moments="old"),
         *_ref(p, g, m, v, t, lr, beta1, beta2, eps)[1:]), "uses the old m and v"),
    "hard-coded beta2": (
        lambda p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8:
        _ref(p, g, m, v, t, lr, beta1, 0.999, eps), "as if beta2=0.999"),
}


@pytest.mark.parametrize("case", BAD_STEPS, ids=str)
def test_bad_adam_step_gives_a_clear_failure(case):
    fn, phrase = BAD_STEPS[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_adam_step(fn)
    assert phrase in str(caught.value)


class NoStep:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = params


class InitRaises:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        raise NotImplementedError()


class StepMovesACopy(Adam):
    def __init__(self, params, **kwargs):
        super().__init__([p.copy() for p in params], **kwargs)


class TFixed(Adam):
    def step(self, grads):
        super().step(grads)
        self.t = 0  # the next step is t = 1 again


# The kinds of failure every exercise shares (the learner's code raises, is still the
# stub, is not callable, returns the wrong type or an object equal to everything) are
# tested for all exercises in tests/test_check_failures.py. The rows here are this
# exercise's own, or what that test does not assert: returning None or the wrong shape (it
# lets those pass where they may not apply); a stub __init__, where that test breaks only
# the methods.
BAD_CLASSES = {
    "no step method": (NoStep, "no step method"),
    "__init__ still the stub": (InitRaises, "NotImplementedError"),
    "updates a copy": (StepMovesACopy, "in place"),
    "t stays at 1": (TFixed, "t stays at 1"),
}


@pytest.mark.parametrize("case", BAD_CLASSES, ids=str)
@pytest.mark.parametrize("check", [checks.check_adam_class, checks.check_adam_loop],
                         ids=["check_adam_class", "check_adam_loop"])
def test_bad_adam_class_gives_a_clear_failure(check, case):
    cls, phrase = BAD_CLASSES[case]
    with pytest.raises(CheckFailure) as caught:
        check(cls)
    assert phrase in str(caught.value)


def test_shared_state_across_shapes_is_explained():
    class Shared(Adam):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            self.m = [np.zeros_like(params[0])] * len(params)
            self.v = [np.zeros_like(params[0])] * len(params)

    with pytest.raises(CheckFailure) as caught:
        checks.check_adam_class(Shared, shapes=((4, 3), (5,)))
    assert "its own, np.zeros_like(p)" in str(caught.value)


def test_tolerance_separates_right_from_wrong():
    # eps inside the square root is the subtlest mistake: with default eps it changes a step
    # by ~1e-8 relative for gradients of size 1, but the check's gradients reach 1e-6.
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(5), np.full(5, 1e-6)
    right = checks._step_with(p, g, 0 * p, 0 * p, 1, 1e-3, 0.9, 0.999, 1e-8)
    wrong = checks._step_with(p, g, 0 * p, 0 * p, 1, 1e-3, 0.9, 0.999, 1e-8, eps_inside=True)
    assert not np.allclose(right, wrong, rtol=checks.RTOL, atol=checks.ATOL)
    # ...while rounding-level differences (the torch form of the same formula) pass.
    torch_form = checks._step_with(p, g, 0 * p, 0 * p, 1, 1e-3, 0.9, 0.999, 1e-8 * np.sqrt(1 - 0.999),
                                   eps_on_raw_v=True)
    assert np.allclose(right, torch_form, rtol=checks.RTOL, atol=checks.ATOL)


# ---------------------------------------------------------------------------- adamw_step

def _adamw(kind):
    """A learner's adamw_step with one mistake about the decay (checks._adamw_param), right m and v."""
    def fn(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
        _, new_m, new_v = adamw_step(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay)
        return checks._adamw_param(kind, p, g, m, v, t, lr, beta1, beta2, eps, weight_decay), new_m, new_v
    return fn


def _adamw_hard_coded_decay(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
    return adamw_step(p, g, m, v, t, lr, beta1, beta2, eps)


def _adamw_over_wrong_adam(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
    # The decay is right; the Adam part has eps inside the square root.
    new_p = checks._step_with(p * (1 - lr * weight_decay), g, m, v, t, lr, beta1, beta2, eps, eps_inside=True)
    return (new_p, *adam_step(p, g, m, v, t, lr, beta1, beta2, eps)[1:])


BAD_ADAMW = {
    "returns moments first": (lambda *a, **k: adamw_step(*a, **k)[::-1], "in another order"),
    "decay inside the adaptive step": (_adamw("decay_inside_step"), "divided by sqrt(v_hat) + eps"),
    "no decay": (_adamw("no_decay"), "the weight decay is missing"),
    "decay grows the weights": (_adamw("decay_grows"), "wrong sign"),
    "decay not proportional": (_adamw("decay_not_proportional"), "proportional to the weight"),
    "hard-coded weight_decay": (_adamw_hard_coded_decay, "as if weight_decay=0.01"),
    "Adam's part wrong": (_adamw_over_wrong_adam, "eps is inside the square root"),
}


@pytest.mark.parametrize("case", BAD_ADAMW, ids=str)
@pytest.mark.parametrize("check", [checks.check_adamw_step, checks.check_adamw_loop],
                         ids=["check_adamw_step", "check_adamw_loop"])
def test_bad_adamw_step_gives_a_clear_failure(check, case):
    fn, phrase = BAD_ADAMW[case]
    with pytest.raises(CheckFailure) as caught:
        check(fn)
    assert phrase in str(caught.value)


def test_adam_step_in_place_of_adamw_step_is_named():
    # With the defaults it moves exactly as Adam: no decay; given a weight_decay, it raises.
    with pytest.raises(CheckFailure, match="the weight decay is missing"):
        checks.check_adamw_step(adam_step)
    with pytest.raises(CheckFailure, match="unexpected keyword argument 'weight_decay'"):
        checks.check_adamw_loop(adam_step)


def test_l2_regularisation_is_named_whether_or_not_the_moments_show_it():
    def l2_everywhere(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
        return adam_step(p, g + weight_decay * p, m, v, t, lr, beta1, beta2, eps)

    def l2_in_the_step_only(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2):
        return (l2_everywhere(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay)[0],
                *adam_step(p, g, m, v, t, lr, beta1, beta2, eps)[1:])

    for fn in (l2_everywhere, l2_in_the_step_only):
        with pytest.raises(CheckFailure, match="went into the gradient"):
            checks.check_adamw_step(fn)


def test_adamw_tolerance_rejects_the_subtlest_mistake_on_the_checks_inputs():
    # Decaying after the update instead of before differs by lr**2 * weight_decay times the
    # step: the smallest change any named AdamW mistake makes. On the inputs the checks use, it
    # must stand far outside RTOL, while a rounding-level change (one ulp) stays inside.
    seen = []

    def spy(*args, **kwargs):
        seen.append((args, kwargs))
        return adamw_step(*args, **kwargs)

    checks.check_adamw_step(spy)
    checks.check_adamw_loop(spy)
    worst = np.inf
    for (p, g, m, v, t), kwargs in seen:
        hyper = {**checks.ADAMW_DEFAULTS, **kwargs}
        args = (p, g, m, v, t, *(hyper[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay")))
        right = checks._adamw_param("right", *args)
        after = checks._adamw_param("decay_after_update", *args)
        assert np.allclose(right, np.nextafter(right, np.inf), rtol=checks.RTOL, atol=checks.ATOL)
        if hyper["weight_decay"] and np.any(right != 0):
            bound = checks.ATOL + checks.RTOL * np.abs(right)
            worst = min(worst, np.max(np.abs(after - right) / bound))
    assert worst > 100

