"""The checks behind exercise 09_positions, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks, and the
stated tolerances separate float32 rounding from the known mistakes."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks import positions as checks
from llmref import positions as reference
from mistakes import positions as mistakes

CALLS = {
    "embedding_forward": (checks.check_embedding_forward, reference.embedding_forward, {}),
    "embedding_forward, 3-D ids": (checks.check_embedding_forward, reference.embedding_forward,
                                   {"seed": 101, "vocab": 50, "dim": 3, "ids_shapes": ((2, 3, 4), (1,))}),
    "embedding_errors": (checks.check_embedding_errors, reference.embedding_forward, {}),
    "embedding_backward": (checks.check_embedding_backward, reference.embedding_backward, {}),
    "embedding_backward, few tokens": (checks.check_embedding_backward, reference.embedding_backward,
                                       {"seed": 202, "vocab": 4, "dim": 3, "ids_shape": (12,), "unused": 1}),
    "sinusoidal_table": (checks.check_sinusoidal_table, reference.sinusoidal_table, {}),
    "sinusoidal_table, base": (checks.check_sinusoidal_table, reference.sinusoidal_table,
                               {"length": 30, "dim": 8, "base": 300.0}),
    "rope": (checks.check_rope, reference.apply_rope, {}),
    "rope, 2-D float64": (checks.check_rope, reference.apply_rope,
                          {"seed": 5, "shape": (9, 4), "base": 50.0, "dtype": "float64"}),
    "rope_positions": (checks.check_rope_positions, reference.apply_rope, {}),
}


@pytest.mark.parametrize("case", CALLS, ids=str)
def test_reference_passes_each_check_quickly(case, capsys):
    check, fn, kwargs = CALLS[case]
    start = time.perf_counter()
    check(fn, **kwargs)
    # A few milliseconds on an idle machine; the margin is for a busy 2-core CI runner.
    assert time.perf_counter() - start < 1.0
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def _stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("case", CALLS, ids=str)
def test_the_stub_is_told_to_implement(case):
    check, _, kwargs = CALLS[case]
    with pytest.raises(CheckFailure, match="still raises NotImplementedError"):
        check(_stub, **kwargs)


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for check, fn, kwargs in CALLS.values():
        check(fn, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)


def _learner(source: str, name: str):
    """A learner's function from source text, as a notebook cell would define it."""
    namespace = {"torch": torch, "F": F, "nn": nn}
    exec(source, namespace)
    return namespace[name]


def _fails(check, fn, phrase, **kwargs):
    with pytest.raises(CheckFailure) as caught:
        check(fn, **kwargs)
    assert phrase in str(caught.value), str(caught.value)


# ------------------------------------------------------------------------------ lookup

def _module_lookup(weight, ids):
    table = nn.Embedding(*weight.shape)
    with torch.no_grad():
        table.weight.copy_(weight)
    return table(ids)


def _lookup_in_place(weight, ids):
    weight.mul_(1.0)
    weight[0] = 0.0
    return reference.embedding_forward(weight, ids)


LOOKUP_MISTAKES = {
    "not a function": ("embedding_forward", "Expected `embedding_forward` to be a function"),
    "returns None": (lambda weight, ids: None, "is None. Does your function end with a `return`"),
    "returns text": (lambda weight, ids: "vectors", "array of numbers"),
    "nn.Embedding": (_module_lookup, "uses nn.Embedding and F.embedding, which does the exercise for you"),
    "writes into the table": (_lookup_in_place, "changed the table"),
    "the next row": (lambda weight, ids: weight[(ids + 1) % weight.shape[0]], "differ from F.embedding's"),
    "one-hot product": (lambda weight, ids: F.one_hot(ids, weight.shape[0]).to(weight.dtype) @ weight, None),
}


@pytest.mark.parametrize("case", LOOKUP_MISTAKES, ids=str)
def test_lookup_failures_are_explained(case):
    fn, phrase = LOOKUP_MISTAKES[case]
    if phrase is None:  # a right answer by another road
        checks.check_embedding_forward(fn)
    else:
        _fails(checks.check_embedding_forward, fn, phrase)


def test_an_unexpected_exception_for_a_bad_id_is_named():
    def raises_runtime_error(weight, ids):
        if (ids < 0).any():
            raise RuntimeError("negative")
        return weight[ids]
    _fails(checks.check_embedding_errors, raises_runtime_error, "raised RuntimeError: negative")


def test_a_value_error_naming_the_id_is_accepted():
    def value_error(weight, ids):
        bad = (ids < 0) | (ids >= weight.shape[0])
        if bad.any():
            raise ValueError(f"bad id {ids[bad][0].item()}")
        return weight[ids]
    checks.check_embedding_errors(value_error)


# ---------------------------------------------------------------------------- gradient

def _by_grad(grad_output, ids, num_embeddings):
    table = torch.zeros(num_embeddings, grad_output.shape[-1], requires_grad=True)
    (grad,) = torch.autograd.grad(table[ids], table, grad_output)
    return grad


def _mean_of_repeats(grad_output, ids, num_embeddings):
    total = reference.embedding_backward(grad_output, ids, num_embeddings)
    counts = torch.bincount(ids.reshape(-1), minlength=num_embeddings).clamp(min=1)
    return total / counts[:, None]


def _noise_in_unseen_rows(grad_output, ids, num_embeddings):
    grad = reference.embedding_backward(grad_output, ids, num_embeddings)
    grad[-1] = 0.5
    return grad


GRADIENT_MISTAKES = {
    "autograd.grad": (_by_grad, "uses torch.autograd.grad, which does the exercise for you"),
    "torch.empty": (lambda g, ids, V: torch.empty(V, g.shape[-1]).fill_(float("nan")), "NaN"),
    "mean of repeats": (_mean_of_repeats, "holds the mean of the gradients"),
    "unseen rows not zero": (_noise_in_unseen_rows, "belong to ids that do not occur"),
    "transposed": (lambda g, ids, V: reference.embedding_backward(g, ids, V).T,
                   "has shape (4, 10), expected (10, 4)"),
    "scaled": (lambda g, ids, V: 2 * reference.embedding_backward(g, ids, V), "differs from autograd's"),
    "one-hot product": (lambda g, ids, V: F.one_hot(ids.reshape(-1), V).to(g.dtype).T @ g.reshape(-1, g.shape[-1]),
                        None),
}


@pytest.mark.parametrize("case", GRADIENT_MISTAKES, ids=str)
def test_gradient_failures_are_explained(case):
    fn, phrase = GRADIENT_MISTAKES[case]
    if phrase is None:
        checks.check_embedding_backward(fn)
    else:
        _fails(checks.check_embedding_backward, fn, phrase)


# --------------------------------------------------------------------- sinusoidal table

def _table_with_two_angles(length, dim, base=10000.0):
    table = reference.sinusoidal_table(length, dim, base)
    table[:, 1::2] = torch.cos(0.5 * torch.arange(length)[:, None] * torch.ones(dim // 2))
    return table


def _row_zero_turned(length, dim, base=10000.0):
    table = reference.sinusoidal_table(length, dim, base)
    table[0] = torch.tensor([1.0, 0.0] * (dim // 2))  # still unit pairs, but not angle 0
    return table


TABLE_MISTAKES = {
    "doubled": (lambda length, dim, base=10000.0: 2 * reference.sinusoidal_table(length, dim, base),
                "lie in [-1, 1]"),
    "two angles per pair": (_table_with_two_angles, "not the sine and cosine of one angle"),
    "row zero": (_row_zero_turned, "should be (0, 1, 0, 1, ...): position 0 has angle 0"),
    "transposed": (lambda length, dim, base=10000.0: reference.sinusoidal_table(length, dim, base).T,
                   "has shape (16, 40), expected (40, 16)"),
    "NumPy": (lambda length, dim, base=10000.0: reference.sinusoidal_table(length, dim, base).numpy(), None),
    "base has no default": (lambda length, dim, base: reference.sinusoidal_table(length, dim, base),
                            "missing 1 required positional argument: 'base'"),
}


@pytest.mark.parametrize("case", TABLE_MISTAKES, ids=str)
def test_table_failures_are_explained(case):
    fn, phrase = TABLE_MISTAKES[case]
    if phrase is None:
        checks.check_sinusoidal_table(fn)
    else:
        _fails(checks.check_sinusoidal_table, fn, phrase)


# -------------------------------------------------------------------------------- RoPE

def _in_float64(x, positions=None, base=10000.0):
    return reference.apply_rope(x.double(), positions, base)


def _stretched(x, positions=None, base=10000.0):
    return 1.5 * reference.apply_rope(x, positions, base)


def _cached_to_26_positions(x, positions=None, base=10000.0):
    # A cos/sin cache built for 26 positions, read past its end by clamping.
    positions = torch.arange(x.shape[-2]) if positions is None else positions
    return reference.apply_rope(x, positions.clamp(max=25), base)


ROPE_MISTAKES = {
    "float64 for float32": (_in_float64, "returned torch.float64 for an x of dtype torch.float32"),
    "lengths change": (_stretched, "the lengths of the vectors change"),
    "returns None": (lambda x, positions=None, base=10000.0: None, "is None"),
    "no positions argument": (lambda x, base=10000.0: reference.apply_rope(x, base=base),
                              "got an unexpected keyword argument 'positions'"),
}


@pytest.mark.parametrize("case", ROPE_MISTAKES, ids=str)
def test_rope_failures_are_explained(case):
    fn, phrase = ROPE_MISTAKES[case]
    check = checks.check_rope_positions if case == "no positions argument" else checks.check_rope
    _fails(check, fn, phrase)


def test_a_cache_too_short_breaks_the_relative_property():
    # Right at positions 20..25, wrong after the shift to 29..34: only the property sees it.
    _fails(checks.check_rope_positions, _cached_to_26_positions, "changes the scores")


def test_complex_numbers_are_a_right_answer():
    def by_complex(x, positions=None, base=10000.0):
        T, d = x.shape[-2:]
        positions = torch.arange(T) if positions is None else positions
        w = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        turn = torch.polar(torch.ones(T, d // 2, dtype=torch.float64), positions[:, None] * w)
        z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
        return torch.view_as_real(z * turn).reshape(x.shape).to(x.dtype)
    checks.check_rope(by_complex)
    checks.check_rope_positions(by_complex)


# ------------------------------------------------------------------------- tolerances

def _from_mistakes(source_name: str, function: str):
    return _learner(getattr(mistakes, source_name), function)


def test_float32_implementations_pass_with_room_to_spare():
    # The right versions in tests/mistakes compute the angles in float32, as many learners
    # will: at the largest positions the checks use they stay a fifth of ANGLE_TOL away.
    rope = _from_mistakes("ROPE", "apply_rope")
    x = torch.randn(2, 3, 5, 16, generator=torch.Generator().manual_seed(0))
    positions = 150 + 37 + torch.arange(5)
    error = (rope(x, positions).double() - reference.apply_rope(x.double(), positions)).abs().max()
    assert error < checks.ANGLE_TOL / 5

    def table32(length, dim, base=10000.0):
        p = torch.arange(length, dtype=torch.float32)[:, None]
        w = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        table = torch.empty(length, dim)
        table[:, 0::2], table[:, 1::2] = torch.sin(p * w), torch.cos(p * w)
        return table
    error = (table32(128, 64).double() - reference.sinusoidal_table(128, 64).double()).abs().max()
    assert error < checks.ANGLE_TOL / 5
    checks.check_sinusoidal_table(table32, length=128, dim=64)


@pytest.mark.parametrize("kwargs", [{"layout": "halves"}, {"sign": -1.0}, {"exponent": "i"},
                                    {"exponent": "2i/half"}, {"swap": True}], ids=str)
def test_every_rope_mistake_is_far_outside_the_tolerance(kwargs):
    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(6)
    wrong = checks._rope_variant(x, positions, 10000.0, **kwargs)
    right = reference.apply_rope(x.double(), positions).numpy()
    assert np.abs(wrong - right).max() > 100 * checks.ANGLE_TOL


@pytest.mark.parametrize("kwargs", [{"swap": True}, {"layout": "halves"}, {"exponent": "i"},
                                    {"exponent": "2i/half"}, {"start": 1}], ids=str)
def test_every_table_mistake_is_far_outside_the_tolerance(kwargs):
    wrong = checks._table_variant(40, 16, 10000.0, **kwargs)
    assert np.abs(wrong - reference.sinusoidal_table(40, 16).double().numpy()).max() > 100 * checks.ANGLE_TOL


