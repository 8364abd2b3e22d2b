"""The checks behind exercise 05_modules, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference and PyTorch's own layers, bad input fails in
words, not tracebacks, and the stated tolerance separates right from wrong."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks import modules as checks
from autograder.checks._core import torch_seeded
from llmref.layers import LayerNorm, Linear

LINEAR_CHECKS = [checks.check_linear_parameters, checks.check_linear_init, checks.check_linear_forward]
NORM_CHECKS = [checks.check_layernorm_parameters, checks.check_layernorm_forward, checks.check_layernorm_eps]


@pytest.mark.parametrize("check", LINEAR_CHECKS, ids=lambda c: c.__name__)
def test_linear_checks_accept_the_reference(check, capsys):
    check(Linear)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


@pytest.mark.parametrize("check", NORM_CHECKS, ids=lambda c: c.__name__)
def test_layernorm_checks_accept_the_reference(check, capsys):
    check(LayerNorm)
    assert "\N{CHECK MARK}" in capsys.readouterr().out


class SubclassedLinear(nn.Linear):
    pass


class WrappedLinear(nn.Module):  # right numbers, computed by a hidden nn.Linear
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        inner = nn.Linear(in_features, out_features, bias=bias)
        self.weight, self.bias = inner.weight, inner.bias

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


class SubclassedLayerNorm(nn.LayerNorm):
    pass


class FunctionalLayerNorm(LayerNorm):  # the course's parameters, PyTorch's kernel
    def forward(self, x):
        return nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


# PyTorch's own layers give the right numbers, so they would pass every comparison: they
# are refused as the shortcut they are, in every check, with the forbidden call named.
@pytest.mark.parametrize("check", LINEAR_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("cls, named", [(nn.Linear, "nn.Linear"), (SubclassedLinear, "nn.Linear"),
                                        (WrappedLinear, "nn.Linear")],
                         ids=["nn.Linear", "subclass", "wrapped"])
def test_linear_checks_refuse_pytorchs_layer(check, cls, named):
    with pytest.raises(CheckFailure, match=f"uses {named}.*which does the exercise for you"):
        check(cls)


@pytest.mark.parametrize("check", NORM_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("cls, named", [(nn.LayerNorm, "nn.LayerNorm"),
                                        (SubclassedLayerNorm, "nn.LayerNorm")],
                         ids=["nn.LayerNorm", "subclass"])
def test_layernorm_checks_refuse_pytorchs_layer(check, cls, named):
    with pytest.raises(CheckFailure, match=f"uses {named}.*which does the exercise for you"):
        check(cls)


def test_functional_shortcuts_are_refused_in_forward():
    with pytest.raises(CheckFailure, match="uses F.layer_norm"):
        checks.check_layernorm_forward(FunctionalLayerNorm)


def test_init_check_accepts_pytorchs_statistics_for_many_seeds(capsys, monkeypatch):
    # The statistical init check must not reject torch.nn.Linear's own draws by bad luck:
    # its statistics are tested with the shortcut refusal switched off.
    monkeypatch.setattr(checks, "SHORTCUTS", {k: ({}, "") for k in checks.SHORTCUTS})
    for seed in range(8):  # 200 seeds pass too; 8 keep the test fast
        for sizes in ((128, 512), (1000, 600), (3, 1024)):
            checks.check_linear_init(nn.Linear, seed=seed, in_features=sizes[0], out_features=sizes[1])


def test_checks_leave_the_learners_random_state_alone(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_linear_init(Linear)
    checks.check_layernorm_forward(LayerNorm)
    assert torch.equal(torch.rand(3), expected)


# --- bad input: a clear CheckFailure, never a traceback from our code

class NotAModule:
    def __init__(self, *args, **kwargs):
        pass


def _linear_with_forward(body):
    class Broken(Linear):
        def forward(self, x):
            return body(self, x)
    Broken.__name__ = "Linear"
    return Broken


def _norm_with_forward(body):
    class Broken(LayerNorm):
        def forward(self, x):
            return body(self, x)
    return Broken


class FrozenLinear(Linear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight.requires_grad_(False)


class StubLinear(nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        raise NotImplementedError()


# The kinds of failure every exercise shares (the learner's code raises, is still the
# stub, is not callable, returns the wrong type or an object equal to everything) are
# tested for all exercises in tests/test_check_failures.py. The rows here are this
# exercise's own, or what that test does not assert: returning None or the wrong shape (it
# lets those pass where they may not apply); a stub __init__, where that test breaks only
# the methods.
BAD_LINEARS = {
    "not a class": (lambda *a, **k: Linear(*a, **k), "to be a class"),
    "not a Module": (NotAModule, "should subclass torch.nn.Module"),
    "release stub": (StubLinear, "still raises NotImplementedError"),
    "frozen weight": (FrozenLinear, "requires_grad=False"),
    "forward returns None": (_linear_with_forward(lambda self, x: None), "returned None"),
    "forward returns NumPy": (_linear_with_forward(lambda self, x: (x @ self.weight.T + self.bias).detach().numpy()),
                              "should return one torch.Tensor"),
    "wrong output shape": (_linear_with_forward(lambda self, x: x[..., :1]), "has shape"),
    "output detached": (_linear_with_forward(lambda self, x: (x @ self.weight.T + self.bias).detach()),
                        "not connected to the autograd graph"),
    "NaN output": (_linear_with_forward(lambda self, x: x @ self.weight.T * float("nan")), "NaN"),
    "input detached": (_linear_with_forward(lambda self, x: x.detach() @ self.weight.T + self.bias),
                       "No gradient reached the input x"),
}


@pytest.mark.parametrize("case", BAD_LINEARS, ids=str)
def test_bad_linear_gives_a_clear_failure(case):
    cls, phrase = BAD_LINEARS[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_linear_parameters(cls)
        checks.check_linear_forward(cls)
    assert phrase in str(caught.value)


BAD_NORMS = {
    "division by a zero variance": (_norm_with_forward(
        lambda self, x: (x - x.mean(-1, keepdim=True)) / 0.0 * self.weight + self.bias), "inf"),
    "not normalised": (_norm_with_forward(lambda self, x: x * self.weight + self.bias),
                       "does not have mean 0 over the last dimension"),
    "some other wrong formula": (_norm_with_forward(
        lambda self, x: (x - x.mean(-1, keepdim=True)) / (2 * x.std(-1, keepdim=True) + 1) * self.weight + self.bias),
        "differs from torch.nn.LayerNorm's"),
}


@pytest.mark.parametrize("case", BAD_NORMS, ids=str)
def test_bad_layernorm_gives_a_clear_failure(case):
    cls, phrase = BAD_NORMS[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_layernorm_forward(cls)
    assert phrase in str(caught.value)


def test_tolerance_separates_the_closest_mistake():
    # The unbiased variance is the mistake closest to the right answer on the default check's
    # inputs; it must differ from it by far more than the tolerance.
    with torch_seeded(2):
        x = checks._random_layernorm_input((2, 3), (8,))
    right = checks._normalise(x, (-1,), 1e-5)
    for wrong in (checks._normalise(x, (-1,), 1e-5, correction=1),
                  checks._normalise(x, (-1,), 1e-5, eps_outside=True),
                  checks._normalise(x, (-1,), 0.0)):
        assert float((wrong - right).abs().max()) > 1e6 * checks.ATOL


def test_values_of_a_float32_module_still_compare_in_float64():
    # The checks convert the learner's module with .double() before loading PyTorch's
    # parameters; a module left in float32 would lose precision silently.
    module = Linear(3, 2)
    checks._copy_from(nn.Linear(3, 2, dtype=torch.float64), module, "Linear(3, 2)")
    assert module.weight.dtype == torch.float64
    assert np.isfinite(module.weight.detach().numpy()).all()
