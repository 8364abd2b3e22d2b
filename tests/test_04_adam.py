"""The checks behind exercise 04_adam, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks."""
from __future__ import annotations

import numpy as np
import pytest

from autograder.checks import CheckFailure
from autograder.checks import optim as checks
from llmref.optim import Adam, adam_step


@pytest.mark.parametrize("check, reference", [(checks.check_adam_step, adam_step),
                                              (checks.check_adam_class, Adam),
                                              (checks.check_adam_loop, Adam)],
                         ids=["check_adam_step", "check_adam_class", "check_adam_loop"])
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


class AlwaysEqual:
    def __eq__(self, other):
        return True


def _ref(*args, **kwargs):
    return adam_step(*args, **kwargs)


BAD_STEPS = {
    "returns None": (lambda *a, **k: None, "returned None"),
    "raises": (lambda *a, **k: [][0], "raised IndexError"),
    "not callable": (None, "to be a function"),
    "still the stub": (lambda *a, **k: (_ for _ in ()).throw(NotImplementedError()),
                       "NotImplementedError"),
    "returns only the parameter": (lambda *a, **k: _ref(*a, **k)[0], "should return a tuple"),
    "returns a pair": (lambda *a, **k: _ref(*a, **k)[:2], "of length 2"),
    "wrong shape": (lambda *a, **k: (_ref(*a, **k)[0].ravel(), *_ref(*a, **k)[1:]), "has shape"),
    "not numbers": (lambda *a, **k: ("param", "m", "v"), "NumPy array of numbers"),
    "objects equal to everything": (lambda *a, **k: (AlwaysEqual(),) * 3, "NumPy array of numbers"),
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


class StepRaises(Adam):
    def step(self, grads):
        raise RuntimeError("boom")


class StepMovesACopy(Adam):
    def __init__(self, params, **kwargs):
        super().__init__([p.copy() for p in params], **kwargs)


class TFixed(Adam):
    def step(self, grads):
        super().step(grads)
        self.t = 0  # the next step is t = 1 again


BAD_CLASSES = {
    "not callable": (42, "to be a class"),
    "no step method": (NoStep, "no step method"),
    "__init__ still the stub": (InitRaises, "NotImplementedError"),
    "step raises": (StepRaises, "raised RuntimeError: boom"),
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


def test_failure_display_hides_our_frames_and_keeps_the_learners():
    class Learners(Adam):
        def step(self, grads):
            for p, g in zip(self.params, grads):
                p -= self.lr * g / self.missing_attribute  # the learner's bug

    with pytest.raises(CheckFailure) as caught:
        checks.check_adam_class(Learners)
    shown = "\n".join(caught.value._render_traceback_())
    assert "self.missing_attribute" in shown and "AttributeError" in shown
    assert "_core.py" not in shown and "autograder" not in shown
