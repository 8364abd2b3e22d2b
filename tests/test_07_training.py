"""The checks behind exercise 07_training, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference and loops that differ from it only in harmless
ways, bad input fails in words, and the stated target has the margin the notebook claims."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks import training as checks
from llmref.training import evaluate, make_model, make_spirals, train

TRAIN_CHECKS = [checks.check_train_returns_losses, checks.check_train_steps,
                checks.check_train_reaches_target]


@pytest.mark.parametrize("check", TRAIN_CHECKS, ids=lambda c: c.__name__)
def test_reference_train_passes_each_check(check, capsys):
    check(train)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_reference_evaluate_passes(capsys):
    checks.check_evaluate(evaluate)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_target_has_the_stated_margin():
    # The notebook promises: 200 steps at lr 1e-2 reach >= 95 %, and the reference reaches
    # 97.8 % or more on seeds 0-19. Re-measure on the seeds the graded cells use and a few more.
    torch.set_num_threads(1)
    X, y = make_spirals(200, seed=0)
    X_test, y_test = make_spirals(500, seed=1)
    accuracies = []
    for seed in (0, 7, 1, 2, 3):
        model = make_model(seed)
        train(model, X, y, checks.STEPS, checks.LR)
        accuracies.append(evaluate(model, X_test, y_test))
    assert min(accuracies) >= 0.978 > checks.TARGET + 0.02, accuracies


def test_an_untrained_model_is_far_from_the_target():
    X_test, y_test = make_spirals(500, seed=1)
    assert evaluate(make_model(0), X_test, y_test) < 0.75


# --- loops that differ from the reference only in harmless ways must pass

def _loop(step):
    def learner(model, X, y, steps, lr, progress=False):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        losses = []
        for _ in range(steps):
            losses.append(step(model, optimizer, X, y))
        return losses
    return learner


def _zero_grad_at_the_end(model, optimizer, X, y):
    loss = nn.CrossEntropyLoss()(model(X), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


def _model_zero_grad_keeping_zeros(model, optimizer, X, y):
    model.zero_grad(set_to_none=False)
    loss = F.nll_loss(F.log_softmax(model(X), dim=-1), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _zero_grad_after_forward(model, optimizer, X, y):
    logits = model(X)
    optimizer.zero_grad()
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    return loss.item()


EQUIVALENT_LOOPS = {"zero_grad at the end, nn.CrossEntropyLoss, float(loss.detach())": _loop(_zero_grad_at_the_end),
                    "model.zero_grad(set_to_none=False), log_softmax + nll": _loop(_model_zero_grad_keeping_zeros),
                    "zero_grad between forward and backward": _loop(_zero_grad_after_forward)}


@pytest.mark.parametrize("case", EQUIVALENT_LOOPS, ids=str)
def test_equivalent_loops_pass(case, capsys):
    checks.check_train_returns_losses(EQUIVALENT_LOOPS[case])
    checks.check_train_steps(EQUIVALENT_LOOPS[case])


def test_an_equivalent_evaluate_passes(capsys):
    def learner(model, X, y):
        model.eval()
        with torch.inference_mode():
            right = (model(X).argmax(dim=1) == y).sum().item()
        return right / len(y)

    checks.check_evaluate(learner)


# --- bad input: a clear CheckFailure, never a traceback from our code

def _returning(value):
    return lambda model, X, y, steps, lr, progress=False: value(steps) if callable(value) else value


def _trains_a_copy(model, X, y, steps, lr, progress=False):
    return train(copy.deepcopy(model), X, y, steps, lr)


BAD_TRAINS = {
    "not callable": ([1, 2], "to be a function"),
    "returns None": (_returning(None), "returned None"),
    "raises": (lambda *a, **k: {}["missing"], "raised KeyError"),
    "release stub": (lambda *a, **k: (_ for _ in ()).throw(NotImplementedError()), "still raises NotImplementedError"),
    "returns a tensor": (_returning(lambda n: torch.zeros(n)), "return a Python list"),
    "returns a tuple": (_returning(lambda n: (0.5,) * n), "list of floats"),
    "one loss too few": (_returning(lambda n: [0.5] * (n - 1)), "take exactly `steps`"),
    "NumPy float32 losses": (_returning(lambda n: [np.float32(0.5)] * n), "append loss.item()"),
    "NaN losses": (_returning(lambda n: [float("nan")] * n), "NaN or inf"),
    "trains a copy": (_trains_a_copy, "never ran the model it was given"),
}


@pytest.mark.parametrize("case", BAD_TRAINS, ids=str)
def test_bad_train_gives_a_clear_failure(case):
    fn, phrase = BAD_TRAINS[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_train_returns_losses(fn)
        checks.check_train_steps(fn)
    assert phrase in str(caught.value)


BAD_EVALUATES = {
    "not callable": (None, "to be a function"),
    "returns None": (lambda model, X, y: (evaluate(model, X, y), None)[1], "returned None"),
    "raises": (lambda model, X, y: model(X[:, :1]), "raised RuntimeError"),
    "returns a string": (lambda model, X, y: str(evaluate(model, X, y)), "should return a Python float"),
    "returns a bool": (lambda model, X, y: evaluate(model, X, y) > 0.5, "should return a Python float"),
    "returns the error rate": (lambda model, X, y: 1 - evaluate(model, X, y), "largest logit"),
}


@pytest.mark.parametrize("case", BAD_EVALUATES, ids=str)
def test_bad_evaluate_gives_a_clear_failure(case):
    fn, phrase = BAD_EVALUATES[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_evaluate(fn)
    assert phrase in str(caught.value)


def test_checks_leave_threads_random_state_and_data_alone(capsys):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_train_steps(train)
    checks.check_evaluate(evaluate)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads

    def vandal(model, X, y, steps, lr, progress=False):
        X.mul_(0)  # a learner who modifies the data in place must not spoil later checks
        return train(model, X, y, steps, lr)

    with pytest.raises(CheckFailure):
        checks.check_train_steps(vandal)
    checks.check_train_steps(train)


def test_failure_display_hides_our_frames_and_keeps_the_learners():
    def learner(model, X, y, steps, lr, progress=False):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        return [F.cross_entropy(model(X), y.float()).item() for _ in range(steps)]  # the bug

    with pytest.raises(CheckFailure) as caught:
        checks.check_train_returns_losses(learner)
    shown = "\n".join(caught.value._render_traceback_())
    assert "y.float()" in shown and "Error" in shown
    assert "_core.py" not in shown and "autograder" not in shown
