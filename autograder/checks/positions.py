"""Checks for exercise 09_positions: token embeddings, their gradient, sinusoidal positions, RoPE.

Inputs are seeded float32 tensors, as a model would pass. Each check compares the learner's
result with the course's reference (:mod:`llmref.positions`, run in float64 on the same
inputs) and with an independent one computed here: ``F.embedding`` for the lookup, autograd
through ``F.embedding`` for its gradient, the table's formula written out column by column,
and RoPE as a multiplication of complex numbers (``torch.view_as_complex``). The reference
itself is tested against the same independent ones in tests/test_llmref_positions.py.

On a mismatch a check recomputes the result the way each common mistake would (sine and
cosine swapped, the exponent i instead of 2i, the GPT-NeoX pairing of halves, a rotation by
minus the angle, positions ignored, ...) and names the one the learner's result matches.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmref import positions as reference

from ._core import (as_float_array, call_learner, fail, find_bad_values, passed, refuse_shortcuts,
                    worst_mismatch)

# Lookups copy numbers, and a one-hot matrix product computes the same copies exactly
# (x * 1 plus zeros), so a right lookup agrees with the reference to the last bit; 1e-6 only
# forgives a learner who builds the one-hot product in a lower precision than float32.
LOOKUP_TOL = 1e-6
# A row of the gradient sums at most a few dozen float32 numbers of order 1: rounding costs
# ~1e-6 against the float64 reference. 1e-5 leaves a tenfold margin; every known mistake
# (a lost or extra contribution, a wrong row) moves a value by ~1.
GRAD_TOL = 1e-5
# An angle p * w computed in float32 is off by about p * 6e-8 (one rounding of p * w, one of
# w), and the sine and cosine of it by as much. At the positions the checks use (< 250) that
# is < 2e-5, times |x| of order 1 to 3 for RoPE; float32 implementations measured at most 5e-6
# on these checks' inputs. 1e-4 leaves a margin of at least five; the known mistakes move
# values by more than 1e-1.
ANGLE_TOL = 1e-4
# A score (R_m q) . (R_n k) sums d products of rotated values, each off by up to ANGLE_TOL
# times |x|: for the d <= 64 of the checks that allows ~1e-3 while every position-dependent
# bug changes scores of order 1 by order 1.
SCORE_TOL = 1e-3

# Library calls that would do the exercise for the learner. nn.Embedding's forward calls
# F.embedding, so a module is caught by the same entry.
FORBIDDEN_LOOKUP = {
    nn.Embedding: "nn.Embedding",
    F.embedding: "F.embedding",
    torch.embedding: "torch.embedding",
    F.embedding_bag: "F.embedding_bag",
}
FORBIDDEN_GRADIENT = {
    **FORBIDDEN_LOOKUP,
    torch.Tensor.backward: "Tensor.backward",
    torch.autograd.backward: "torch.autograd.backward",
    torch.autograd.grad: "torch.autograd.grad",
}


WHY_LOOKUP = ("Index the table with the ids yourself: seeing that an embedding layer is only a "
              "row lookup, and what it does with ids of any shape, is the exercise.")
WHY_GRADIENT = ("Build it yourself: start from zeros (num_embeddings, d) and add each position's "
                "gradient into the row of its id. Working out where the gradient of a lookup "
                "goes, repeated ids included, is the exercise.")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _name(fn, default: str) -> str:
    return getattr(fn, "__name__", default)


# ------------------------------------------------------------------------ the lookup

def check_embedding_forward(fn, *, seed: int = 0, vocab: int = 11, dim: int = 6,
                            ids_shapes=((7,), (2, 5), ())) -> None:
    """The lookup for ids of each shape in ids_shapes (() is a single id): values and shape
    against the reference and F.embedding; the table is left unchanged; no F.embedding."""
    __tracebackhide__ = True
    name = _name(fn, "embedding_forward")
    gen = _generator(seed)
    weight = torch.randn(vocab, dim, generator=gen)
    for shape in ids_shapes:
        ids = torch.randint(0, vocab, shape, generator=gen)
        if ids.numel() > 1:
            ids.view(-1)[0] = ids.view(-1)[-1]    # a repeated id, as in any real text
        given = weight.clone()
        with refuse_shortcuts(FORBIDDEN_LOOKUP, name, WHY_LOOKUP):
            result = call_learner(fn, given, ids.clone(), name=name)
        if not torch.equal(given, weight):
            fail(f"`{name}` changed the table it was given. A lookup only reads `weight`.")
        expected_shape = (*shape, dim)
        if (hasattr(result, "shape") and len(shape) != 1
                and tuple(result.shape) == (ids.numel(), dim)):
            fail(f"For ids of shape {tuple(shape)} the result has shape {tuple(result.shape)}: "
                 f"the ids were flattened. Keep their shape: the result is (*ids.shape, d) = "
                 f"{expected_shape}.")
        actual = as_float_array(result, f"The result for ids of shape {tuple(shape)}", expected_shape)
        expected = reference.embedding_forward(weight.double(), ids).numpy()
        independent = F.embedding(ids, weight).double().numpy()
        for truth in (expected, independent):
            if not np.allclose(actual, truth, rtol=0, atol=LOOKUP_TOL):
                fail(f"For ids of shape {tuple(shape)} the looked-up vectors differ from "
                     f"F.embedding's: {worst_mismatch(actual, truth)}. Position t should hold "
                     "row ids[t] of the table, unchanged.")
    shapes = ", ".join(str(tuple(s)) for s in ids_shapes)
    passed(f"embedding_forward matches F.embedding on a ({vocab}, {dim}) table for ids of shapes {shapes}")


def check_embedding_errors(fn, *, seed: int = 1, vocab: int = 8, dim: int = 3) -> None:
    """Ids outside [0, V) raise an IndexError (a ValueError is accepted too) naming the id:
    -1, which indexing would wrap to the last row, -V - 2, and V + 3."""
    __tracebackhide__ = True
    name = _name(fn, "embedding_forward")
    gen = _generator(seed)
    weight = torch.randn(vocab, dim, generator=gen)
    ids = torch.randint(0, vocab, (2, 4), generator=gen)
    call_learner(fn, weight.clone(), ids.clone(), name=name)  # valid ids first: a stub fails here
    for bad in (-1, -vocab - 2, vocab + 3):
        wrong = ids.clone()
        wrong[1, 2] = bad
        try:
            fn(weight.clone(), wrong)
        except NotImplementedError:
            fail(f"`{name}` still raises NotImplementedError. Replace the "
                 "`raise NotImplementedError()` line with your implementation.")
        except (IndexError, ValueError) as exc:
            if str(bad) not in str(exc):
                fail(f"For the id {bad} in a table of {vocab} rows, `{name}` raised "
                     f"{type(exc).__name__}({str(exc)!r}), whose message does not name the "
                     f"offending id. Put it in the message, with the valid range [0, {vocab}), "
                     "so that whoever reads the error can find the bad token.")
        except Exception as exc:
            fail(f"For the id {bad} in a table of {vocab} rows, `{name}` raised "
                 f"{type(exc).__name__}: {exc}. Check the ids yourself first and raise an "
                 "IndexError that names the id and the valid range.")
        else:
            if bad < 0 and bad >= -vocab:
                fail(f"`{name}` returned a result for the id {bad} instead of raising: "
                     f"weight[{bad}] is row {vocab + bad}, so a negative id silently wraps around "
                     f"to the end of the table and reads a real token's vector. Raise an "
                     f"IndexError naming any id outside [0, {vocab}), negative ones included.")
            fail(f"`{name}` returned a result for the id {bad}, outside [0, {vocab}), instead of "
                 "raising an IndexError that names it.")
    passed(f"ids -1, {-vocab - 2} and {vocab + 3} are refused with an error that names them")


# ------------------------------------------------------------------- its gradient

def check_embedding_backward(fn, *, seed: int = 0, vocab: int = 10, dim: int = 4,
                             ids_shape=(3, 6), unused: int = 2) -> None:
    """The gradient of the table for ids of ids_shape drawn from the first vocab - unused
    tokens (so the last `unused` rows are never seen, and ids repeat): against the reference
    and autograd through F.embedding; no autograd or F.embedding in the learner's code."""
    __tracebackhide__ = True
    name = _name(fn, "embedding_backward")
    gen = _generator(seed)
    ids = torch.randint(0, vocab - unused, ids_shape, generator=gen)
    flat = ids.reshape(-1)
    if flat.numel() > 1:
        flat[0] = flat[-1]                        # at least one repeated id, whatever the draw
    grad_output = torch.randn(*ids_shape, dim, generator=gen)

    expected = reference.embedding_backward(grad_output.double(), ids, vocab).numpy()
    table = torch.zeros(vocab, dim, dtype=torch.float64, requires_grad=True)
    F.embedding(ids, table).backward(grad_output.double())
    independent = table.grad.numpy()

    with refuse_shortcuts(FORBIDDEN_GRADIENT, name, WHY_GRADIENT):
        result = call_learner(fn, grad_output.clone(), ids.clone(), vocab, name=name)
    shape = tuple(getattr(result, "shape", ()))
    if len(shape) == 2 and shape[1] == dim and shape[0] != vocab:
        fail(f"The gradient has {shape[0]} rows, expected num_embeddings = {vocab}: one row per "
             f"token of the table, zeros for the tokens that do not occur (here the last {unused} "
             "never do, so ids.max() + 1 rows are too few).")
    actual = as_float_array(result, "The gradient of the table", (vocab, dim))
    bad = find_bad_values(actual)
    if bad:
        fail(f"The gradient contains {bad} values. Start from torch.zeros, not torch.empty.")
    if (np.allclose(actual, expected, rtol=GRAD_TOL, atol=GRAD_TOL)
            and np.allclose(actual, independent, rtol=GRAD_TOL, atol=GRAD_TOL)):
        repeats = int((torch.bincount(flat, minlength=vocab) > 1).sum())
        passed(f"embedding_backward matches autograd through F.embedding for ids {tuple(ids_shape)}, "
               f"{repeats} of them repeated and {unused} never seen")
        return
    _diagnose_gradient(actual, expected, flat, grad_output.double().reshape(-1, dim).numpy(), vocab)


def _diagnose_gradient(actual, expected, flat, rows, vocab) -> None:
    __tracebackhide__ = True
    ids = flat.numpy()
    counts = np.bincount(ids, minlength=vocab)
    for v in np.flatnonzero(counts > 1):
        contributions = rows[ids == v]
        if any(np.allclose(actual[v], c, rtol=GRAD_TOL, atol=GRAD_TOL) for c in contributions):
            fail(f"Row {v} of your gradient holds the gradient of just one of the {counts[v]} "
                 f"positions whose id is {v}; it should hold their sum. With repeated ids, "
                 "`grad[ids] = g` keeps one contribution per row, and so does `grad[ids] += g` "
                 "(every grad[ids] is read before anything is written). Use an operation that "
                 "accumulates: grad.index_add_(0, ids, g), or index_put_(..., accumulate=True).")
        if np.allclose(actual[v], contributions.mean(axis=0), rtol=GRAD_TOL, atol=GRAD_TOL):
            fail(f"Row {v} holds the mean of the gradients of the {counts[v]} positions whose id "
                 f"is {v}: sum them instead. Each occurrence adds its own term to the loss.")
    unseen = np.flatnonzero(counts == 0)
    if unseen.size and np.abs(actual[unseen]).max() > GRAD_TOL:
        fail(f"Rows {unseen.tolist()} belong to ids that do not occur, so their gradient must be 0, "
             "but yours is not. Start from torch.zeros(num_embeddings, d).")
    fail("The gradient of the table differs from autograd's through F.embedding: "
         + worst_mismatch(actual, expected) + ". Row v should be the sum of grad_output over "
         "every position whose id is v.")


# ------------------------------------------------------------------- the sinusoidal table

def _independent_table(length: int, dim: int, base: float) -> np.ndarray:
    """The paper's formula, one column at a time: PE(p, 2i) = sin(p / base^(2i/dim)),
    PE(p, 2i+1) = cos(p / base^(2i/dim))."""
    p = np.arange(length, dtype=np.float64)
    table = np.empty((length, dim))
    for column in range(dim):
        two_i = column - column % 2
        wave = np.sin if column % 2 == 0 else np.cos
        table[:, column] = wave(p / base ** (two_i / dim))
    return table


def _table_variant(length: int, dim: int, base: float, *, exponent: str = "2i", swap: bool = False,
                   layout: str = "interleaved", start: int = 0) -> np.ndarray:
    """The table, right or the way one known mistake makes it."""
    i = np.arange(dim // 2, dtype=np.float64)
    power = {"2i": 2 * i / dim, "i": i / dim, "2i/half": 2 * i / (dim // 2)}[exponent]
    angle = np.arange(start, start + length, dtype=np.float64)[:, None] * base ** -power
    even, odd = (np.cos(angle), np.sin(angle)) if swap else (np.sin(angle), np.cos(angle))
    if layout == "halves":
        return np.concatenate([even, odd], axis=1)
    table = np.empty((length, dim))
    table[:, 0::2], table[:, 1::2] = even, odd
    return table


def _exponent_mistake(kind: str, dim: str) -> str:
    """What a wrong frequency exponent looks like, with the vector size called `dim`."""
    if kind == "i":
        return (f"the frequencies are base ** (-i / {dim}), with the pair's index i: the exponent "
                f"is 2i / {dim}, where 2i is the even column of pair i (0, 2, 4, ...), so use "
                f"torch.arange(0, {dim}, 2) / {dim}")
    return (f"the exponent is divided by {dim} / 2 instead of {dim}, so the frequencies fall twice "
            f"as fast: use 2i / {dim}, with 2i = 0, 2, 4, ... and {dim} the full vector size")


def _table_mistakes(length, dim, base):
    yield {"swap": True}, ("sine and cosine are swapped: the even columns (0, 2, ...) hold "
                           "sin(p * w_i), the odd ones cos(p * w_i), so row 0 is (0, 1, 0, 1, ...)")
    yield {"layout": "halves"}, ("all the sines come first and all the cosines after them: the "
                                 "table interleaves them, sin in the even columns (table[:, 0::2]) "
                                 "and cos in the odd ones (table[:, 1::2])")
    yield {"exponent": "i"}, _exponent_mistake("i", "dim")
    yield {"exponent": "2i/half"}, _exponent_mistake("2i/half", "dim")
    yield {"start": 1}, "the positions start at 1: they start at 0, so row 0 is (0, 1, 0, 1, ...)"
    if base != 10000.0:
        yield {"base": 10000.0}, (f"`base` is ignored: the table was built with 10000 although "
                                  f"base={base:g} was passed. Use the argument")


def check_sinusoidal_table(fn, *, length: int = 40, dim: int = 16, base: float | None = None) -> None:
    """sinusoidal_table(length, dim[, base=...]) against the reference and the formula written
    out column by column; the default base (10000) when base is None, so the default is tested."""
    __tracebackhide__ = True
    name = _name(fn, "sinusoidal_table")
    kwargs = {} if base is None else {"base": base}
    base = 10000.0 if base is None else float(base)
    result = call_learner(fn, length, dim, name=name, **kwargs)
    call = f"{name}({length}, {dim}" + (f", base={base:g})" if kwargs else ")")
    actual = as_float_array(result, f"The result of {call}", (length, dim))
    bad = find_bad_values(actual)
    if bad:
        fail(f"{call} contains {bad} values. Every entry is a sine or a cosine.")
    expected = reference.sinusoidal_table(length, dim, base=base).double().numpy()
    independent = _independent_table(length, dim, base)
    if (np.allclose(actual, expected, rtol=0, atol=ANGLE_TOL)
            and np.allclose(actual, independent, rtol=0, atol=ANGLE_TOL)):
        passed(f"{call} matches the formula: sin in even columns, cos in odd ones")
        return
    for kwargs_, what in _table_mistakes(length, dim, base):
        options = {"base": base, **kwargs_}
        wrong = _table_variant(length, dim, options.pop("base"), **options)
        if np.allclose(actual, wrong, rtol=0, atol=ANGLE_TOL):
            fail(f"{call} matches the table where {what}.")
    if np.abs(actual).max() > 1 + ANGLE_TOL:
        fail(f"{call} has values up to {np.abs(actual).max():.4g}, but sines and cosines lie in [-1, 1].")
    norms = np.hypot(actual[:, 0::2], actual[:, 1::2])
    if not np.allclose(norms, 1.0, atol=ANGLE_TOL):
        fail(f"In {call}, columns 2i and 2i + 1 are not the sine and cosine of one angle: "
             "sin² + cos² should be 1 for every pair, but "
             f"ranges from {norms.min():.4g} to {norms.max():.4g}. Compute one angle p * w_i per "
             "pair and take both its sine and its cosine.")
    if not np.allclose(actual[0], expected[0], atol=ANGLE_TOL):
        fail(f"Row 0 of {call} should be (0, 1, 0, 1, ...): position 0 has angle 0 in every pair, "
             f"and sin(0) = 0, cos(0) = 1. It starts {np.round(actual[0, :4], 4).tolist()}.")
    fail(f"{call} differs from the formula: {worst_mismatch(actual, expected)}. Column 2i of row p "
         "holds sin(p * base ** (-2i / dim)), column 2i + 1 its cosine.")


# ---------------------------------------------------------------------------------- RoPE

def _complex_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> np.ndarray:
    """The independent reference: pair i as the complex number x[2i] + i x[2i+1], multiplied by
    exp(i p w_i). view_as_complex reads neighbouring numbers as (real, imaginary)."""
    x = x.double()
    d = x.shape[-1]
    w = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = torch.polar(torch.ones(len(positions), d // 2, dtype=torch.float64),
                       positions.double()[:, None] * w)                     # exp(i p w_i)
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * turn).reshape(x.shape).numpy()


def _rope_variant(x: torch.Tensor, positions: torch.Tensor, base: float, *, layout="interleaved",
                  sign=1.0, exponent="2i", swap=False) -> np.ndarray:
    """RoPE in float64, right or the way one known mistake does it."""
    x = x.double()
    d = x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    power = {"2i": 2 * i / d, "i": i / d, "2i/half": 2 * i / (d // 2)}[exponent]
    angle = sign * positions.double()[:, None] * base ** -power
    cos, sin = (angle.sin(), angle.cos()) if swap else (angle.cos(), angle.sin())
    if layout == "halves":
        a, b = x[..., : d // 2], x[..., d // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1).numpy()
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).numpy()


HALVES = ("pairs are formed from the two halves, (x[..., i], x[..., i + d/2]): that is the "
          "GPT-NeoX/Llama convention (rotate_half). This exercise follows RoFormer and rotates "
          "neighbours, (x[..., 2i], x[..., 2i+1]): take x[..., 0::2] and x[..., 1::2]")


def _rope_mistakes(positions, base, default_positions: bool):
    yield {"layout": "halves"}, HALVES
    yield {"sign": -1.0}, ("every pair turns by minus the angle (clockwise): "
                           "(a, b) -> (a cos + b sin, -a sin + b cos). Turn by +p * w_i: "
                           "(a, b) -> (a cos - b sin, a sin + b cos)")
    yield {"exponent": "i"}, _exponent_mistake("i", "d")
    yield {"exponent": "2i/half"}, _exponent_mistake("2i/half", "d")
    yield {"swap": True}, ("cos and sin are swapped in the rotation: at angle 0 the rotation must "
                           "leave the pair unchanged, (a, b) -> (a cos - b sin, a sin + b cos)")
    if base != 10000.0:
        yield {"base": 10000.0}, (f"`base` is ignored: the angles use 10000 although base={base:g} "
                                  "was passed")
    if not default_positions:
        yield {"positions": torch.arange(len(positions))}, (
            "`positions` is ignored: the rows were rotated as positions 0, 1, ..., T - 1. Use the "
            "positions given (torch.arange(T) only when positions is None)")


def _run_rope(fn, x: torch.Tensor, positions: torch.Tensor | None, base: float | None):
    """Call the learner's apply_rope on a copy of x; check shape, dtype, that x is unchanged
    and that the values are finite. Returns the result as a float64 array."""
    __tracebackhide__ = True
    name = _name(fn, "apply_rope")
    kwargs = {}
    if positions is not None:
        kwargs["positions"] = positions.clone()
    if base is not None:
        kwargs["base"] = base
    given = x.clone()
    result = call_learner(fn, given, name=name, **kwargs)
    if not torch.equal(given, x):
        fail(f"`{name}` changed the x it was given. The caller still needs its x (the same "
             "queries may be used again): build a new tensor instead of assigning into x.")
    if isinstance(result, torch.Tensor) and result.dtype != x.dtype and tuple(result.shape) == tuple(x.shape):
        fail(f"`{name}` returned {result.dtype} for an x of dtype {x.dtype}. Return x's dtype: "
             "convert the cosines and sines (or the result) with .to(x.dtype).")
    actual = as_float_array(result, f"The result of {name} on x of shape {tuple(x.shape)}", tuple(x.shape))
    bad = find_bad_values(actual)
    if bad:
        fail(f"The result of `{name}` contains {bad} values.")
    return actual


def _check_rope_values(actual, x, positions, base, default_positions: bool, what: str) -> None:
    __tracebackhide__ = True
    expected = reference.apply_rope(x.double(), positions, base=base).numpy()
    independent = _complex_rope(x, positions, base)
    if (np.allclose(actual, expected, rtol=0, atol=ANGLE_TOL)
            and np.allclose(actual, independent, rtol=0, atol=ANGLE_TOL)):
        return
    for kwargs, description in _rope_mistakes(positions, base, default_positions):
        options = {"positions": positions, "base": base, **kwargs}
        wrong = _rope_variant(x, options.pop("positions"), options.pop("base"), **options)
        if np.allclose(actual, wrong, rtol=0, atol=ANGLE_TOL):
            fail(f"{what}: your result matches RoPE where {description}.")
    x64 = x.double().numpy()
    norms, expected_norms = np.linalg.norm(actual, axis=-1), np.linalg.norm(x64, axis=-1)
    if not np.allclose(norms, expected_norms, rtol=ANGLE_TOL, atol=ANGLE_TOL):
        fail(f"{what}: the lengths of the vectors change (a rotation keeps them): "
             f"{worst_mismatch(norms, expected_norms)}. Each pair (a, b) must become "
             "(a cos - b sin, a sin + b cos) with the cosine and sine of one angle.")
    at_zero = (positions == 0).numpy()
    if at_zero.any() and not np.allclose(actual[..., at_zero, :], x64[..., at_zero, :], atol=ANGLE_TOL):
        fail(f"{what}: at position 0 every angle is 0, so the rows there must come back "
             "unchanged, and yours do not.")
    fail(f"{what}: your result differs from RoPE's: {worst_mismatch(actual, expected)}. Pair i, "
         "(x[..., 2i], x[..., 2i+1]), at position p turns by the angle p * base ** (-2i / d).")


def check_rope(fn, *, seed: int = 0, shape=(2, 3, 6, 8), base: float | None = None,
               dtype: str = "float32") -> None:
    """apply_rope(x[, base=...]) with the default positions 0 .. T-1: shape and dtype kept,
    x untouched, values against the reference and the complex-number reference; the
    default base when base is None."""
    __tracebackhide__ = True
    x = torch.randn(*shape, generator=_generator(seed)).to(getattr(torch, dtype))
    T = shape[-2]
    actual = _run_rope(fn, x, None, base)
    base_ = 10000.0 if base is None else float(base)
    what = f"For x of shape {tuple(shape)}" + ("" if base is None else f" and base={base_:g}")
    _check_rope_values(actual, x, torch.arange(T), base_, True, what)
    passed(f"apply_rope on {dtype} x of shape {tuple(shape)}" + ("" if base is None else f", base={base_:g}")
           + " matches the rotation and its complex-number form")


def check_rope_positions(fn, *, seed: int = 10, shape=(2, 6, 8), offset: int = 20, shift: int = 9,
                         base: float | None = None) -> None:
    """apply_rope with positions=offset + arange(T): values against the references, and the
    relative property: rotating queries and keys by positions p and by p + shift gives the same
    scores (R_m q) . (R_n k)."""
    __tracebackhide__ = True
    gen = _generator(seed)
    q = torch.randn(*shape, generator=gen)
    k = torch.randn(*shape, generator=gen)
    T = shape[-2]
    base_ = 10000.0 if base is None else float(base)
    positions = offset + torch.arange(T)
    what = f"With positions {offset} .. {offset + T - 1}"
    actual_q = _run_rope(fn, q, positions, base)
    _check_rope_values(actual_q, q, positions, base_, False, what)

    actual_k = _run_rope(fn, k, positions, base)
    moved_q = _run_rope(fn, q, positions + shift, base)
    moved_k = _run_rope(fn, k, positions + shift, base)
    scores = actual_q @ np.swapaxes(actual_k, -1, -2)                      # (..., T, T)
    moved = moved_q @ np.swapaxes(moved_k, -1, -2)
    if not np.allclose(scores, moved, rtol=SCORE_TOL, atol=SCORE_TOL):
        fail(f"Moving every query and key {shift} positions later changes the scores "
             f"(R_m q) . (R_n k): {worst_mismatch(moved, scores)}. They should depend only on "
             "the offset n - m: rotate every pair by the same rule at every position.")
    passed(f"apply_rope at positions {offset} .. {offset + T - 1} matches the references; scores "
           f"are unchanged when every position moves by {shift}")
