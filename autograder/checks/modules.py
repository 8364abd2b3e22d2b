"""Checks for exercise 05_modules: `Linear` and `LayerNorm` as torch.nn.Modules.

The learner's classes must be drop-in replacements for ``torch.nn.Linear`` and
``torch.nn.LayerNorm``: the same parameter names and shapes, so that a state dict copies
across in either direction, and the same forward values and gradients. Each check builds
the learner's module and PyTorch's, copies PyTorch's parameters into the learner's with
``load_state_dict``, runs both in float64 on seeded inputs, and compares the outputs and the
gradients of the input and of every parameter under the same random upstream gradient.
The references ``torch.nn.Linear`` / ``torch.nn.LayerNorm`` are PyTorch's own; the course's
reference (llmref.layers) is tested against them in tests/test_llmref_layers.py.

Before comparing numbers, a check looks for the usual mistakes (parameters kept as plain
tensors, a weight that is not transposed, the unbiased variance, eps outside the square
root, the wrong axis, a detached graph) and names the first it finds.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ._core import (as_float_array, forward_tensor, call_learner, close, expect_class, fail, find_bad_values,
                    first_match, passed, refuse_shortcuts, to_numpy, torch_seeded, worst_mismatch)

# Everything runs in float64. A correct implementation differs from PyTorch's only in the
# order of its sums (PyTorch fuses x @ W.T + b into one addmm and computes LayerNorm in one
# kernel), which moves results by ~1e-15 relative; 1e-9 leaves a wide margin for that, while
# every known mistake moves some value by more than 1e-2 on these inputs (the closest, the
# unbiased variance, by ~5e-2; tests/test_05_modules.py measures it).
RTOL = 1e-9
ATOL = 1e-9
# Naming a mistake compares the learner's output with what that mistake computes, also in
# float64, so RTOL would do; 1e-6 also names a mistake made along a slightly different path
# (a constant or a step in float32), and stays far below the > 1e-2 by which every named
# LayerNorm mistake differs from the right output on the checks' inputs.
DIAGNOSIS_TOL = 1e-6

Module = Any

# The library calls that would do each exercise for the learner (refused while their code
# runs; the checks' own references use them freely), and what to write instead.
SHORTCUTS = {
    "Linear": ({nn.Linear: "nn.Linear", nn.functional.linear: "F.linear",
                nn.Bilinear: "nn.Bilinear"},
               "Write the layer from its parts: a weight nn.Parameter of shape (out_features, "
               "in_features) and a bias, their uniform initialisation, and x @ weight.T + bias. "
               "Seeing that a layer is only this, and owning its parameters' names, shapes and "
               "initial values, is what every later exercise builds on."),
    "LayerNorm": ({nn.LayerNorm: "nn.LayerNorm", nn.functional.layer_norm: "F.layer_norm",
                   torch.layer_norm: "torch.layer_norm",
                   torch.native_layer_norm: "torch.native_layer_norm",
                   nn.GroupNorm: "nn.GroupNorm", nn.functional.group_norm: "F.group_norm"},
                  "Compute the mean and the biased variance over the normalised dimensions, "
                  "divide by sqrt(var + eps) and apply weight and bias yourself: where eps goes "
                  "and which variance is used are exactly what the exercise is about."),
}


# --------------------------------------------------------------------------- building

def _build(cls: Any, *args, name: str, **kwargs) -> nn.Module:
    """Instantiate the learner's class; it must give an nn.Module."""
    __tracebackhide__ = True
    expect_class(cls, name)
    shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    forbidden, why = SHORTCUTS[name]
    with refuse_shortcuts(forbidden, f"{name}({shown})", why, learner=cls):
        module = call_learner(cls, *args, name=f"{name}({shown})", **kwargs)
    if not isinstance(module, nn.Module):
        fail(f"`{name}` should subclass torch.nn.Module (`class {name}(nn.Module):`), so that "
             "PyTorch can find its parameters, move it with .to() and load a state dict.")
    return module


def _check_parameters(module: nn.Module, expected: dict[str, tuple[int, ...]], built: str) -> None:
    """The module's parameters have exactly the expected names and shapes, and are registered."""
    __tracebackhide__ = True
    params = dict(module.named_parameters())
    for key, shape in expected.items():
        if key not in params:
            value = getattr(module, key, None)
            if isinstance(value, torch.Tensor):
                fail(f"`self.{key}` of `{built}` is a plain tensor, not an nn.Parameter, so it is "
                     "not in .parameters(): an optimiser would never update it and load_state_dict "
                     f"would not see it. Wrap it: `self.{key} = nn.Parameter(...)`.")
            fail(f"`{built}` has no parameter named `{key}`; its parameters are "
                 f"{sorted(params) or 'none'}. Name them {sorted(expected)} as torch.nn does, so "
                 "that a state dict copies across.")
        actual = tuple(params[key].shape)
        if actual != tuple(shape):
            hint = ""
            if len(shape) == 2 and actual == tuple(shape)[::-1]:
                hint = (" It is transposed: torch.nn.Linear stores one row per output unit, "
                        "weight (out_features, in_features), and computes x @ weight.T.")
            fail(f"`{key}` of `{built}` has shape {actual}, expected {tuple(shape)}.{hint}")
        if not params[key].requires_grad:
            fail(f"`{key}` of `{built}` has requires_grad=False, so it would never be trained. "
                 "Create it as `nn.Parameter(tensor)` (requires_grad is True by default).")
    extra = sorted(set(params) - set(expected))
    if "bias" in extra and "bias" not in expected:
        fail(f"`{built}` has a parameter `bias` although it was built with bias=False. When "
             "bias is False, keep no bias at all: `self.register_parameter('bias', None)` and "
             "skip the addition in forward.")
    if extra:
        fail(f"`{built}` has parameters {extra} besides {sorted(expected)}. torch.nn's layer has "
             "only those; extra ones break a state-dict copy.")
    keys = sorted(module.state_dict())
    if keys != sorted(expected):
        fail(f"The state dict of `{built}` has keys {keys}, expected {sorted(expected)}. Register "
             "nothing else (no buffers) so a state dict from torch.nn loads into it.")


def _copy_from(reference: nn.Module, module: nn.Module, built: str) -> None:
    """Load the reference's parameters into the learner's module, in float64."""
    __tracebackhide__ = True
    try:
        module.double()
        module.load_state_dict(reference.state_dict())
    except Exception as exc:
        fail(f"Copying the parameters of PyTorch's layer into `{built}` with load_state_dict "
             f"failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- running

def _forward(module: nn.Module, x: torch.Tensor, name: str,
             expected_shape) -> tuple[torch.Tensor, np.ndarray]:
    """Call the learner's module on x; the result must be a tensor of the expected shape.
    Returns the tensor (for backward) and its values."""
    __tracebackhide__ = True
    forbidden, why = SHORTCUTS[name]
    return forward_tensor(module, x, name, forbidden, why, expected_shape,
                          hint="Keep the computation in torch so gradients can flow.")


def _side_by_side(reference: nn.Module, module: nn.Module, x: torch.Tensor,
                  upstream: torch.Tensor, name: str):
    """Run PyTorch's module and the learner's on separate copies of x, backpropagating
    `upstream` through PyTorch's. Returns (x_mine, x_ref, output, got, want)."""
    __tracebackhide__ = True
    x_mine = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    expected = reference(x_ref)
    expected.backward(upstream)
    output, got = _forward(module, x_mine, name, expected.shape)
    return x_mine, x_ref, output, got, to_numpy(expected)


def _backward(output: torch.Tensor, upstream: torch.Tensor, name: str) -> None:
    """Backpropagate a fixed upstream gradient through the learner's output."""
    __tracebackhide__ = True
    if not output.requires_grad:
        fail(f"The output of `{name}.forward` is not connected to the autograd graph, so no "
             "gradient reaches the input or the parameters. Did you compute it under "
             "torch.no_grad(), or go through .data, .detach(), .item() or NumPy?")
    try:
        output.backward(upstream)
    except Exception as exc:
        fail(f"Backpropagating through the output of `{name}.forward` failed: "
             f"{type(exc).__name__}: {exc}")


def _compare_gradient(actual: torch.Tensor | None, expected: torch.Tensor, what: str,
                      name: str) -> None:
    __tracebackhide__ = True
    if actual is None:
        fail(f"No gradient reached {what}: `{name}.forward` cuts it out of the graph. Use the "
             "tensors themselves, not `.data`, `.detach()` or a copy made with torch.tensor().")
    got = as_float_array(actual, f"The gradient of {what}", tuple(expected.shape))
    want = to_numpy(expected)
    bad = find_bad_values(got)
    if bad:
        fail(f"The gradient of {what} contains {bad} values.")
    if not close(got, want, rtol=RTOL, atol=ATOL):
        fail(f"The gradient of {what} differs from PyTorch's: {worst_mismatch(got, want)}. The "
             "forward values are right, so part of the computation does not reach autograd: "
             "look for .detach(), .data, .item() or torch.no_grad() inside forward.")


# --------------------------------------------------------------------------- Linear

def _torch_linear(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    """PyTorch's layer with random float64 parameters (bias drawn at full size, not 1/sqrt(n))."""
    layer = nn.Linear(in_features, out_features, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.normal_()
        if bias:
            layer.bias.normal_()
    return layer


def _linear_expected(in_features, out_features, bias) -> dict[str, tuple[int, ...]]:
    shapes = {"weight": (out_features, in_features)}
    if bias:
        shapes["bias"] = (out_features,)
    return shapes


def check_linear_parameters(Linear: Module, *, in_features: int = 5, out_features: int = 3) -> None:
    """Parameter names and shapes as torch.nn.Linear's, registered, with and without bias;
    a state dict copies across in both directions."""
    __tracebackhide__ = True
    with torch_seeded(0):
        for bias in (True, False):
            built = f"Linear({in_features}, {out_features}, bias={bias})"
            module = _build(Linear, in_features, out_features, name="Linear", bias=bias)
            expected = _linear_expected(in_features, out_features, bias)
            _check_parameters(module, expected, built)
            try:  # the reverse direction: the learner's parameters load into PyTorch's layer
                nn.Linear(in_features, out_features, bias=bias).load_state_dict(module.state_dict())
            except Exception as exc:
                fail(f"The state dict of `{built}` does not load into torch.nn.Linear: {exc}")
    passed(f"Linear has parameters {sorted(_linear_expected(in_features, out_features, True))} "
           "with torch.nn.Linear's shapes, and only `weight` when bias=False")


def _uniform_problem(values: torch.Tensor, in_features: int, out_features: int, what: str) -> str | None:
    """Why `values` do not look like draws from uniform(-1/sqrt(in), 1/sqrt(in)), or None."""
    v = values.detach().double().flatten()
    bound = 1 / math.sqrt(in_features)
    largest, spread, mean = float(v.abs().max()), float(v.std()), float(v.mean())
    if float(v.max() - v.min()) == 0.0:
        if largest == 0.0 and what == "bias":
            return ("The bias starts at zero. torch.nn.Linear draws it from the same "
                    f"uniform(-1/sqrt(in_features), 1/sqrt(in_features)) = ±{bound:.4g} as the "
                    "weight; do the same.")
        return (f"Every entry of the {what} starts at {float(v[0]):.4g}. Identical weights make every "
                "output unit compute the same thing and receive the same gradient, so they never "
                f"become different. Draw them at random from uniform(-{bound:.4g}, {bound:.4g}).")
    # Named wrong scales, tested on the largest entry: with thousands of uniform draws it is
    # within 0.1 % of the bound, and a standard normal's lies beyond 3.
    named = ((1.0, "a bound of 1 (or torch.randn): scale the draws by 1/sqrt(in_features)"),
             (1 / math.sqrt(out_features), "1/sqrt(out_features): the bound uses the fan-in, "
                                           "1/sqrt(in_features), because each output sums "
                                           "in_features terms"),
             (1 / in_features, "1/in_features: take the square root, 1/sqrt(in_features)"))
    if largest > bound * (1 + 1e-9):
        for wrong, hint in named:
            if abs(largest - wrong) < 0.02 * wrong:
                return f"The {what} reaches ±{largest:.4g}, which looks like {hint}."
        if largest > 2.5 * bound and abs(spread - 1.0) < 0.1:
            return (f"The {what} looks like torch.randn (standard deviation {spread:.3g}); "
                    f"torch.nn.Linear draws from uniform(-{bound:.4g}, {bound:.4g}).")
        return (f"The {what} reaches ±{largest:.4g}, beyond 1/sqrt(in_features) = {bound:.4g}. "
                f"Draw it from uniform(-{bound:.4g}, {bound:.4g}): "
                "torch.empty(shape).uniform_(-bound, bound).")
    if mean > 0.25 * bound and float(v.min()) >= 0:
        return (f"Every entry of the {what} is positive (mean {mean:.3g}): torch.rand draws from "
                f"[0, 1). Draw from the symmetric range [-{bound:.4g}, {bound:.4g}].")
    if largest < 0.9 * bound:
        for wrong, hint in named:
            if abs(largest - wrong) < 0.02 * wrong:
                return f"The {what} reaches only ±{largest:.4g}, which looks like {hint}."
        return (f"The {what} reaches only ±{largest:.4g}: torch.nn.Linear uses the whole range "
                f"±1/sqrt(in_features) = ±{bound:.4g}.")
    # A uniform on [-b, b] has standard deviation b/sqrt(3); for the 512+ draws used here the
    # sample value is within 10 % of that with probability > 1 - 1e-6.
    if abs(spread - bound / math.sqrt(3)) > 0.1 * bound / math.sqrt(3) or abs(mean) > 0.15 * bound:
        return (f"The {what} lies within ±{bound:.4g} but is not spread like a uniform draw "
                f"(mean {mean:.3g}, standard deviation {spread:.3g}, expected 0 and "
                f"{bound / math.sqrt(3):.3g}). Use tensor.uniform_(-bound, bound).")
    return None


def check_linear_init(Linear: Module, *, seed: int = 0, in_features: int = 128,
                      out_features: int = 512) -> None:
    """Weight and bias start uniform in ±1/sqrt(in_features), drawn from torch's generator."""
    __tracebackhide__ = True
    built = f"Linear({in_features}, {out_features})"
    with torch_seeded(seed):
        module = _build(Linear, in_features, out_features, name="Linear")
    _check_parameters(module, _linear_expected(in_features, out_features, True), built)
    for what in ("weight", "bias"):
        problem = _uniform_problem(getattr(module, what), in_features, out_features, what)
        if problem:
            fail(f"`{built}`: {problem}")
    with torch_seeded(seed):
        again = _build(Linear, in_features, out_features, name="Linear")
    if not torch.equal(again.weight.detach(), module.weight.detach()):
        fail("Two Linear layers built after the same torch.manual_seed differ: draw the initial "
             "values with torch (tensor.uniform_ or torch.rand), whose generator torch.manual_seed "
             "controls, not with NumPy or Python's random.")
    passed(f"Linear starts uniform in ±1/sqrt(in_features) = ±{1 / math.sqrt(in_features):.4g}, "
           "like torch.nn.Linear")


def _linear_diagnosis(x, weight, bias, got) -> None:
    """Name the likeliest mistake when the learner's output differs from PyTorch's."""
    __tracebackhide__ = True
    offset = 0 if bias is None else bias
    candidates = []
    if weight.shape[0] == weight.shape[1]:
        candidates.append((lambda: to_numpy(x @ weight + offset),
                           "The output equals x @ weight + bias: the weight is not transposed. "
                           "weight has shape (out_features, in_features), one row per output "
                           "unit, so compute x @ self.weight.T."))
    if bias is not None:
        candidates.append((lambda: to_numpy(x @ weight.T),
                           "The output equals x @ weight.T without the bias: add self.bias (it "
                           "broadcasts over the leading dimensions)."))
    message = first_match(got, candidates, rtol=RTOL, atol=ATOL)
    if message:
        fail(message)


def check_linear_forward(Linear: Module, *, seed: int = 1, batch_shape=(2, 3),
                         in_features: int = 4, out_features: int = 6, bias: bool = True) -> None:
    """Forward values and gradients (input, weight, bias) equal torch.nn.Linear's in float64,
    with several leading dimensions; a square layer first, to catch an untransposed weight."""
    __tracebackhide__ = True
    shapes = [(in_features, in_features), (in_features, out_features)]
    with torch_seeded(seed):
        for n_in, n_out in dict.fromkeys(shapes):
            built = f"Linear({n_in}, {n_out}, bias={bias})"
            reference = _torch_linear(n_in, n_out, bias)
            module = _build(Linear, n_in, n_out, name="Linear", bias=bias)
            _check_parameters(module, _linear_expected(n_in, n_out, bias), built)
            _copy_from(reference, module, built)

            x = torch.randn(*batch_shape, n_in, dtype=torch.float64)
            upstream = torch.randn(*batch_shape, n_out, dtype=torch.float64)
            x_mine, x_ref, output, got, want = _side_by_side(reference, module, x, upstream, "Linear")
            bad = find_bad_values(got)
            if bad:
                fail(f"The output of `{built}` contains {bad} values.")
            if not close(got, want, rtol=RTOL, atol=ATOL):
                _linear_diagnosis(x, reference.weight, reference.bias, got)
                fail(f"The output of `{built}` differs from torch.nn.Linear's: "
                     f"{worst_mismatch(got, want)}. It should be x @ weight.T + bias.")
            _backward(output, upstream, "Linear")
            _compare_gradient(x_mine.grad, x_ref.grad, "the input x", "Linear")
            for key in _linear_expected(n_in, n_out, bias):
                _compare_gradient(getattr(module, key).grad, getattr(reference, key).grad,
                                  f"`{key}`", "Linear")
    passed(f"Linear(bias={bias}) matches torch.nn.Linear, values and gradients, on inputs of "
           f"shape {(*batch_shape, in_features)}")


# --------------------------------------------------------------------------- LayerNorm

def _shape_tuple(normalized_shape) -> tuple[int, ...]:
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


def check_layernorm_parameters(LayerNorm: Module, *, shapes=(6, (3, 4))) -> None:
    """`weight` starts at ones and `bias` at zeros, shaped like normalized_shape (an int or a
    tuple), registered as parameters."""
    __tracebackhide__ = True
    with torch_seeded(0):
        for normalized_shape in shapes:
            shape = _shape_tuple(normalized_shape)
            built = f"LayerNorm({normalized_shape!r})"
            module = _build(LayerNorm, normalized_shape, name="LayerNorm")
            _check_parameters(module, {"weight": shape, "bias": shape}, built)
            weight, bias = module.weight.detach(), module.bias.detach()
            if not (torch.all(weight == 1) and torch.all(bias == 0)):
                fail(f"`{built}` should start with weight all ones and bias all zeros, so that a "
                     "fresh layer only normalises; got weight values in "
                     f"[{float(weight.min()):.3g}, {float(weight.max()):.3g}] and bias values in "
                     f"[{float(bias.min()):.3g}, {float(bias.max()):.3g}].")
            try:
                nn.LayerNorm(normalized_shape).load_state_dict(module.state_dict())
            except Exception as exc:
                fail(f"The state dict of `{built}` does not load into torch.nn.LayerNorm: {exc}")
    passed("LayerNorm has `weight` (ones) and `bias` (zeros) shaped like normalized_shape")


def _normalise(x, dims, eps, *, correction=0, eps_outside=False):
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, correction=correction)
    std = var.sqrt() + eps if eps_outside else (var + eps).sqrt()
    return (x - mean) / std


def _layernorm_diagnosis(x, shape, eps, weight, bias, got) -> None:
    """Name the likeliest mistake when the learner's output differs from PyTorch's."""
    __tracebackhide__ = True
    dims = tuple(range(-len(shape), 0))
    affine = lambda z: to_numpy(z * weight + bias)  # noqa: E731
    variants = [
        (affine(_normalise(x, dims, eps, correction=1)),
         "The variance looks unbiased (divided by n - 1): torch.var and x.var() do that by "
         "default. LayerNorm divides by n: use x.var(dim, keepdim=True, unbiased=False) or "
         "((x - mean) ** 2).mean(dim, keepdim=True)."),
        (affine(_normalise(x, dims, eps, eps_outside=True)),
         "eps is added outside the square root. Divide by torch.sqrt(var + eps), not by "
         "torch.sqrt(var) + eps (the difference shows on rows of small variance)."),
        (affine(_normalise(x, dims, 0.0)),
         "eps is not used: divide by torch.sqrt(var + self.eps)."),
        (to_numpy(_normalise(x, dims, eps)),
         "The output is normalised, but weight and bias are not applied: return "
         "x_hat * self.weight + self.bias."),
    ]
    if eps != 1e-5:
        variants.append((affine(_normalise(x, dims, 1e-5)),
                         f"This layer was built with eps={eps}, but your output uses 1e-5: "
                         "use self.eps, not a fixed number."))
    if len(dims) > 1:
        variants.append((affine(_normalise(x, (-1,), eps)),
                         f"normalized_shape has {len(dims)} dimensions, but only the last one is "
                         f"normalised. Take the mean and variance over the last {len(dims)} "
                         f"dimensions together: dim={dims}."))
    message = first_match(got, variants, rtol=DIAGNOSIS_TOL, atol=DIAGNOSIS_TOL)
    if message:
        fail(message)
    # Undo the affine map (weight is kept away from 0) and look at the statistics.
    z = (torch.from_numpy(got) - bias.detach()) / weight.detach()
    plural = len(dims) > 1
    if z.mean(dim=dims).abs().max() > 1e-6:
        other = [d for d in range(z.ndim - len(dims)) if z.mean(dim=d).abs().max() <= 1e-6]
        where = f" Yours is normalised over dimension {other[0]} instead." if other else ""
        fail("After undoing weight and bias, your output does not have mean 0 over the last "
             f"dimension{'s' if plural else ''}.{where} Normalise each vector on its own: take "
             f"the mean and variance over dim={dims if plural else -1} with keepdim=True, "
             "never over the batch.")


def _random_layernorm_input(batch_shape, shape) -> torch.Tensor:
    """Rows of very different scales and offsets, including some of variance below eps."""
    x = torch.randn(*batch_shape, *shape, dtype=torch.float64)
    row = (*batch_shape, *([1] * len(shape)))
    scale = 10.0 ** torch.empty(row, dtype=torch.float64).uniform_(-3.5, 1)
    offset = torch.randn(row, dtype=torch.float64) * 3
    return x * scale + offset


def _layernorm_case(LayerNorm: Module, seed: int, batch_shape, normalized_shape,
                    eps: float) -> tuple[str, tuple[int, ...]]:
    """Compare one LayerNorm with PyTorch's, values and gradients; return what was built."""
    __tracebackhide__ = True
    shape = _shape_tuple(normalized_shape)
    built = f"LayerNorm({normalized_shape!r}, eps={eps})"
    with torch_seeded(seed):
        reference = nn.LayerNorm(normalized_shape, eps=eps, dtype=torch.float64)
        with torch.no_grad():  # a non-trivial affine map, kept away from 0 so it can be undone
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.normal_()
        module = _build(LayerNorm, normalized_shape, name="LayerNorm", eps=eps)
        _check_parameters(module, {"weight": shape, "bias": shape}, built)
        _copy_from(reference, module, built)
        x = _random_layernorm_input(batch_shape, shape)
        upstream = torch.randn(x.shape, dtype=torch.float64)
    x_mine, x_ref, output, got, want = _side_by_side(reference, module, x, upstream, "LayerNorm")
    bad = find_bad_values(got)
    if bad:
        fail(f"The output of `{built}` contains {bad} values. Is eps added to the variance "
             "before the square root?")
    if not close(got, want, rtol=RTOL, atol=ATOL):
        _layernorm_diagnosis(x, shape, eps, reference.weight, reference.bias, got)
        fail(f"The output of `{built}` differs from torch.nn.LayerNorm's: "
             f"{worst_mismatch(got, want)}. It should be (x - mean) / sqrt(var + eps) * weight "
             "+ bias, with the biased variance, over the last dimension(s).")
    _backward(output, upstream, "LayerNorm")
    if x_mine.grad is not None and not close(x_mine.grad, x_ref.grad, rtol=RTOL, atol=ATOL):
        mismatch = worst_mismatch(to_numpy(x_mine.grad), to_numpy(x_ref.grad))
        fail("The output is right, but the gradient of the input x differs from torch.nn."
             f"LayerNorm's: {mismatch}. The mean "
             "and the variance depend on x too, and the gradient must flow through them: do not "
             ".detach() them, or take them through .item(), .data or NumPy.")
    _compare_gradient(x_mine.grad, x_ref.grad, "the input x", "LayerNorm")
    for key in ("weight", "bias"):
        _compare_gradient(getattr(module, key).grad, getattr(reference, key).grad, f"`{key}`",
                          "LayerNorm")
    return built, tuple(x.shape)


def check_layernorm_forward(LayerNorm: Module, *, seed: int = 2, batch_shape=(2, 3),
                            normalized_shape=8, eps: float = 1e-5) -> None:
    """Forward values and gradients (input, weight, bias) equal torch.nn.LayerNorm's in
    float64, on rows of very different scales with several leading dimensions."""
    __tracebackhide__ = True
    built, x_shape = _layernorm_case(LayerNorm, seed, batch_shape, normalized_shape, eps)
    passed(f"{built} matches torch.nn.LayerNorm, values and gradients, on inputs of shape {x_shape}")


def check_layernorm_eps(LayerNorm: Module, *, seed: int = 3, eps: float = 1e-2,
                        normalized_shape=16) -> None:
    """eps is the constructor's, added to the variance inside the square root. The inputs'
    row variances range from ~1e-7 to ~100, so rows near and below eps show any misplacement."""
    __tracebackhide__ = True
    _layernorm_case(LayerNorm, seed, (4, 2), normalized_shape, eps)
    passed(f"eps={eps} is added to the variance inside the square root")
