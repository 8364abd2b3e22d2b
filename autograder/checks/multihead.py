"""Checks for exercise 06_multihead: multi-head attention as an nn.Module.

Each check builds a ``torch.nn.MultiheadAttention(E, h, batch_first=True)`` with seeded
random weights (biases too, so a forgotten bias shows), loads its ``state_dict`` into the
learner's ``MultiHeadAttention`` class, runs it on seeded float32 inputs and compares the
output and the weights with :class:`llmref.multihead.MultiHeadAttention` on the same
weights, itself tested against ``torch.nn.MultiheadAttention`` in
tests/test_llmref_multihead.py.

On a mismatch a check recomputes the output the way each common mistake would (heads split
without a transpose, the wrong scale, masks read the wrong way round, ...) and names the
one the learner's output matches, so a failure says what to fix.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from llmref.multihead import MultiHeadAttention as Reference

from ._core import (as_float_array, build_learner, call_learner, describe, expect_class,
                    expect_parameters, expect_tuple, fail, find_bad_values, first_match,
                    layout_differences, load_weights, passed, refuse_shortcuts, saved_shapes,
                    torch_seeded, worst_mismatch)

# The learner's module runs in float32, the reference in float64 on the same (float32)
# weights and inputs, so the reference is exact to ~1e-15 and the difference is the
# learner's own rounding: float32 keeps ~7 digits (eps 1.2e-7), and a few dozen roundings
# through the projections, the softmax and the output projection on values of order 1 come
# to ~1e-6. 1e-5 leaves a tenfold margin; every known mistake moves values by > 1e-2.
RTOL = 1e-5
ATOL = 1e-5

NAME = "MultiHeadAttention"

# Library calls that would do the exercise for the learner.
FORBIDDEN = {
    nn.functional.scaled_dot_product_attention: "F.scaled_dot_product_attention",
    nn.functional.multi_head_attention_forward: "F.multi_head_attention_forward",
    torch._native_multi_head_attention: "torch._native_multi_head_attention",
    nn.MultiheadAttention: "nn.MultiheadAttention",
}
WHY_BY_HAND = ("Subclass nn.Module, create the parameters yourself, and write the head split, "
               "the scores, the masks, the softmax and the merge with tensor operations: "
               "reproducing nn.MultiheadAttention on its own weights is how you find out that "
               "you understood it exactly.")


# ----------------------------------------------------------------------------- test cases

@dataclass
class Case:
    """One seeded problem: weights, inputs, masks and the reference's answer."""
    embed_dim: int
    num_heads: int
    bias: bool
    state: dict                 # nn.MultiheadAttention's state_dict (float32)
    query: torch.Tensor         # (B, L, E) float32; key and value are the same tensor
    key: torch.Tensor           # in self-attention
    value: torch.Tensor
    key_padding_mask: torch.Tensor | None = None   # (B, S) bool, True = padding
    attn_mask: torch.Tensor | None = None          # (L, S) bool, True = blocked
    expected_output: np.ndarray | None = None      # (B, L, E) float64
    expected_weights: np.ndarray | None = None     # (B, L, S) float64

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, L, S, E)."""
        B, L, E = self.query.shape
        return B, L, self.key.shape[1], E

    @property
    def blocked(self) -> np.ndarray:
        """(B, L, S): True where the masks block query i from key j."""
        B, L, S, _ = self.shape
        blocked = np.zeros((B, L, S), dtype=bool)
        if self.attn_mask is not None:
            blocked |= self.attn_mask.numpy()[None]
        if self.key_padding_mask is not None:
            blocked |= self.key_padding_mask.numpy()[:, None, :]
        return blocked


def _make_case(seed: int, *, batch: int, q_len: int, k_len: int | None, embed_dim: int,
               num_heads: int, bias: bool = True, attn_mask: str | None = None,
               lengths=None) -> Case:
    """Seeded weights and inputs; k_len=None means self-attention (key = value = query).

    attn_mask: None, "causal" (self-attention only) or "random" (each row keeps key 0).
    lengths: the number of real keys in each sequence, for a key_padding_mask.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch_seeded():  # building a module draws from the global RNG: not the learner's
        torch_mha = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)
    with torch.no_grad():
        for name, p in torch_mha.named_parameters():
            # Weights with std 1/sqrt(E) keep scores of order 1: the softmax is neither
            # uniform nor one-hot, so a mistake shows. Biases are non-zero for the same reason.
            std = embed_dim ** -0.5 if p.dim() == 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    state = {k: v.detach().clone() for k, v in torch_mha.state_dict().items()}

    query = torch.randn(batch, q_len, embed_dim, generator=gen)
    if k_len is None:
        key = value = query
        k_len = q_len
    else:
        key = torch.randn(batch, k_len, embed_dim, generator=gen)
        value = torch.randn(batch, k_len, embed_dim, generator=gen)

    mask = None
    if attn_mask == "causal":
        mask = torch.triu(torch.ones(q_len, k_len, dtype=torch.bool), diagonal=1)
    elif attn_mask == "random":
        mask = torch.rand(q_len, k_len, generator=gen) < 0.4
        mask[:, 0] = False  # key 0 is never padding either: no query is left without a key
    padding = None
    if lengths is not None:
        assert len(lengths) == batch and max(lengths) == k_len and min(lengths) >= 1
        padding = torch.arange(k_len)[None, :] >= torch.tensor(lengths)[:, None]

    case = Case(embed_dim, num_heads, bias, state, query, key, value, padding, mask)
    with torch_seeded():
        reference = Reference(embed_dim, num_heads, bias=bias).double()
    reference.load_state_dict(state)
    with torch.no_grad():
        out, weights = reference(query.double(), key.double(), value.double(),
                                 key_padding_mask=padding, attn_mask=mask)
    case.expected_output, case.expected_weights = out.numpy(), weights.numpy()
    return case


# --------------------------------------------------------------- building and calling

def _expected_keys(case: Case) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in case.state.items())


def _build(cls: Any, case: Case, *, trainable: bool = False) -> nn.Module:
    """Instantiate the learner's class and load nn.MultiheadAttention's weights into it.

    trainable: also require every state_dict entry to be an nn.Parameter (the shapes
    check does; the others only need the weights to load)."""
    __tracebackhide__ = True
    expect_class(cls, NAME, base=nn.Module)
    name = cls.__name__
    kwargs = {} if case.bias else {"bias": False}
    module = build_learner(cls, case.embed_dim, case.num_heads, name=name, forbidden=FORBIDDEN,
                           why=WHY_BY_HAND, **kwargs)
    E, h = case.embed_dim, case.num_heads
    expected = {k: tuple(v.shape) for k, v in case.state.items()}
    actual = saved_shapes(module, f"{name}(...)")
    if actual != expected:
        call = f"{name}({E}, {h}" + ("" if case.bias else ", bias=False") + ")"
        lines = [f"The parameters of {call} do not mirror nn.MultiheadAttention's, so its "
                 f"state_dict cannot be loaded. Expected exactly: {_expected_keys(case)}.",
                 *layout_differences(actual, expected)]
        extra = [k for k in actual if k not in expected]
        reshaped = [k for k in expected if k in actual and actual[k] != expected[k]]
        if any(k not in ("in_proj_bias", "out_proj.bias") for k in extra):
            lines.append("Keep the query, key and value projections in one parameter "
                         f"in_proj_weight of shape (3E, E) = ({3 * E}, {E}), query rows first, and "
                         "name the output layer out_proj (an nn.Linear).")
        if not case.bias and {"in_proj_bias", "out_proj.bias"} & set(extra):
            lines.append("With bias=False there are no biases: "
                         "self.register_parameter(\"in_proj_bias\", None) and "
                         "nn.Linear(embed_dim, embed_dim, bias=bias).")
        if "in_proj_weight" in reshaped and actual["in_proj_weight"] == (E, 3 * E):
            lines.append("in_proj_weight is stored transposed: like nn.Linear's weight it is "
                         "(out_features, in_features) = (3E, E).")
        fail(" ".join(lines))

    if trainable:
        expect_parameters(module, expected, "Wrap the tensor in nn.Parameter(...) when you assign "
                          "it in __init__ (register_buffer is for tensors that are not trained).")
    load_weights(module, case.state, name, whose="nn.MultiheadAttention's state_dict",
                 hint=f"Expected keys: {_expected_keys(case)}.")
    return module


def _forward(module: nn.Module, case: Case, *, need_weights: bool | None = None, grad: bool = False):
    """Call the learner's module on the case.

    Returns (output as a checked float64 array, the weights as returned, the raw output)."""
    __tracebackhide__ = True
    name = f"{type(module).__name__}.forward"
    kwargs = {}
    if case.key_padding_mask is not None:
        kwargs["key_padding_mask"] = case.key_padding_mask.clone()
    if case.attn_mask is not None:
        kwargs["attn_mask"] = case.attn_mask.clone()
    if need_weights is not None:
        kwargs["need_weights"] = need_weights
    query = case.query.clone()
    self_attention = case.key is case.query
    key = query if self_attention else case.key.clone()
    value = query if self_attention else case.value.clone()
    with torch.set_grad_enabled(grad), refuse_shortcuts(FORBIDDEN, name, WHY_BY_HAND):
        result = call_learner(module, query, key, value, name=name, **kwargs)
    raw_output, weights = expect_tuple(result, name, ("output", "weights"),
                                       like=" like nn.MultiheadAttention")
    B, L, S, E = case.shape
    output = as_float_array(raw_output, f"The output of `{name}` (first returned value)", (B, L, E))
    return output, weights, raw_output


# ------------------------------------------------------------------------- diagnosis
# attend_heads and head_variants also serve 10_block's CausalSelfAttention, whose heads are
# computed, and gotten wrong, the same way: one copy keeps the two diagnoses in step.

def attend_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocked: torch.Tensor,
                 n_head: int, *, divide_by: float | None = None, split: str = "transpose",
                 merge: str = "transpose", fill: float = float("-inf"), softmax_dim: int = -1,
                 after_softmax: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over `n_head` heads of projected queries q (B, L, E) and keys and values k, v
    (B, S, E), done right or the way one known mistake does it.

    `blocked` (bool, broadcasting to (B, n_head, L, S)) is True where a query may not see a
    key. The keywords name the mistakes: `divide_by` the scores' divisor (sqrt(head size) when
    None); `split`/`merge` "reshape" splits or merges the heads without the transpose;
    `fill` the value blocked scores get; `softmax_dim` the softmax's axis; `after_softmax`
    zeroes the blocked weights after the softmax instead of filling the scores before it.
    Returns (merged output (B, L, E), per-head weights (B, n_head, L, S)), not projected.
    """
    B, L, E = q.shape
    d = E // n_head

    def heads(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if split == "reshape":
            return x.reshape(B, n_head, n, d)
        return x.reshape(B, n, n_head, d).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d) if divide_by is None else divide_by)
    if after_softmax:
        weights = torch.softmax(scores, dim=softmax_dim).masked_fill(blocked, 0.0)
    else:
        weights = torch.softmax(scores.masked_fill(blocked, fill), dim=softmax_dim)
    out = weights @ v
    out = out.reshape(B, L, E) if merge == "reshape" else out.transpose(1, 2).reshape(B, L, E)
    return out, weights


def head_variants(n_head: int, right: float, scales: Sequence[tuple[float, str]], split: str,
                  merge: str, wrong_order: Callable[[tuple[int, ...]], str]
                  ) -> Iterator[tuple[dict[str, Any], str]]:
    """The known mistakes of the heads themselves, as (keywords of attend_heads or of the
    joint projection's `order`, what the learner did), in the order they are tried.

    Each of `scales` (divisor, message) whose divisor equals neither `right` nor one tried
    before (it would only repeat that diagnosis); then, with more than one head, the heads
    split and merged, split, or merged by reshape alone (messages `split`, `merge`); then the
    five wrong orders of query, key and value in the joint projection, each described by
    ``wrong_order(order)``.
    """
    seen = [right]
    for divisor, what in scales:
        if not any(math.isclose(divisor, s) for s in seen):
            seen.append(divisor)
            yield {"divide_by": divisor}, what
    if n_head > 1:
        yield {"split": "reshape", "merge": "reshape"}, split
        yield {"split": "reshape"}, split
        yield {"merge": "reshape"}, merge
    for order in itertools.permutations(range(3)):
        if order != (0, 1, 2):
            yield {"order": order}, wrong_order(order)


def _attend(case: Case, *, order=(0, 1, 2), divide_by: float | None = None, split="transpose",
            merge="transpose", invert=(), kpm_on_queries=False, fill=float("-inf"),
            in_bias=True, project=True, softmax_dim=-1, after_softmax=False):
    """Multi-head attention in float64, done right or the way one known mistake does it.

    Returns (output (B, L, E), per-head weights (B, h, L, S)) as NumPy arrays.
    """
    p = {k: v.double() for k, v in case.state.items()}
    query, key, value = case.query.double(), case.key.double(), case.value.double()
    B, L, S, E = case.shape
    h = case.num_heads
    d = E // h
    W = p["in_proj_weight"].chunk(3)
    b = p["in_proj_bias"].chunk(3) if "in_proj_bias" in p and in_bias else (None,) * 3
    q = nn.functional.linear(query, W[order[0]], b[order[0]])
    k = nn.functional.linear(key, W[order[1]], b[order[1]])
    v = nn.functional.linear(value, W[order[2]], b[order[2]])
    blocked = torch.zeros(B, 1, L, S, dtype=torch.bool)
    if case.attn_mask is not None:
        blocked = blocked | (~case.attn_mask if "attn_mask" in invert else case.attn_mask)
    if case.key_padding_mask is not None:
        padding = ~case.key_padding_mask if "key_padding_mask" in invert else case.key_padding_mask
        blocked = blocked | (padding[:, None, :, None] if kpm_on_queries else padding[:, None, None, :])
    out, weights = attend_heads(q, k, v, blocked, h, divide_by=divide_by, split=split, merge=merge,
                                fill=fill, softmax_dim=softmax_dim, after_softmax=after_softmax)
    if project:
        out = nn.functional.linear(out, p["out_proj.weight"], p.get("out_proj.bias"))
    return out.numpy(), weights.numpy()


SPLIT = ("the heads are split by reshape alone, mixing positions: (B, L, E).view(B, h, L, d) "
         "has the right shape, but each 'head' then holds features of several positions. "
         "View as (B, L, h, d) and then transpose(1, 2) to get (B, h, L, d).")
MERGE = ("the heads are merged by reshape alone, mixing positions: (B, h, L, d).reshape(B, L, E) "
         "interleaves the rows of different positions. Merge the heads with transpose(1, 2) first, "
         "then reshape(B, L, E).")
POLARITY = ("the masks are read the wrong way round. In nn.MultiheadAttention True means blocked (not "
            "allowed), the opposite of the boolean attn_mask of F.scaled_dot_product_attention "
            "and of exercise 02: fill the scores with -inf where the mask is True.")
KPM_AXIS = ("the key_padding_mask blocks queries (rows of the score matrix) instead of keys "
            "(columns). It holds one flag per key, shape (B, S): index it as "
            "key_padding_mask[:, None, None, :], shape (B, 1, 1, S), so it blocks whole key "
            "columns for every head and every query.")


def _variants(case: Case):
    """(keyword arguments of _attend, what the learner did) for every known mistake."""
    B, L, S, E = case.shape
    h = case.num_heads
    d = E // h
    scales = [
        (1.0, f"the scores are not scaled: divide q @ k^T by sqrt(head_dim) = sqrt({d}) "
              "before the softmax"),
        (math.sqrt(E), f"the scores are divided by sqrt(embed_dim) = sqrt({E}). Each head's dot "
                       f"product sums head_dim = {d} products, so divide by sqrt(head_dim), "
                       "not sqrt(embed_dim)"),
        (float(E), f"the scores are divided by embed_dim = {E}: divide by sqrt(head_dim) = "
                   f"sqrt({d}), not by embed_dim"),
        (float(d), f"the scores are divided by head_dim = {d}: divide by its square root, "
                   f"sqrt({d})"),
    ]
    names = ("query", "key", "value")

    def wrong_order(order: tuple[int, ...]) -> str:
        used = ", ".join(f"rows {i * E}:{(i + 1) * E} as the {names[j]}" for j, i in enumerate(order))
        return (f"in_proj_weight is sliced in the wrong order ({used}). Its rows hold the "
                f"query, key, value projections in that order: 0:{E} query, {E}:{2 * E} key, "
                f"{2 * E}:{3 * E} value (self.in_proj_weight.chunk(3)); in_proj_bias likewise")

    yield from head_variants(h, math.sqrt(d), scales, SPLIT, MERGE, wrong_order)
    masks = [m for m, t in (("attn_mask", case.attn_mask), ("key_padding_mask", case.key_padding_mask))
             if t is not None]
    for fill in (float("-inf"), -1e30):  # -inf, or a large finite number such as -1e9
        for inverted in (tuple(masks), *((m,) for m in masks if len(masks) > 1)):
            if inverted:
                yield {"invert": inverted, "fill": fill}, POLARITY
        if case.key_padding_mask is not None and L == S:
            yield {"kpm_on_queries": True, "fill": fill}, KPM_AXIS
    if masks:
        yield {"after_softmax": True}, (
            "the masks are applied after the softmax: blocked keys get weight 0, but the allowed "
            "keys no longer share all the weight (rows sum to less than 1). Fill the blocked "
            "scores with -inf before the softmax")
    if case.bias:
        yield {"in_bias": False}, ("in_proj_bias is not added: q, k and v each need their slice "
                                   "of in_proj_bias (in_proj_bias.chunk(3))")
    yield {"project": False}, ("the output projection is missing: pass the merged heads, "
                               "(B, L, E), through self.out_proj before returning them")
    yield {"softmax_dim": -2}, ("the softmax runs over the queries: take it over the keys, "
                                "the last axis (dim=-1) of the (B, h, L, S) scores")


def _matching_mistake(case: Case, actual: np.ndarray, what: str) -> str | None:
    """The description of the first known mistake that reproduces `actual` (output or weights)."""
    def computed(kwargs):
        out, weights = _attend(case, **kwargs)
        return out if what == "output" else weights.mean(axis=1)

    return first_match(actual, ((lambda kw=kwargs: computed(kw), description)
                                for kwargs, description in _variants(case)), rtol=RTOL, atol=ATOL)


def _mask_hint(case: Case) -> str:
    return ("With masks, NaN comes from a query whose scores are all -inf, every key blocked; "
            "every query in this test can see at least one key. Check that True means blocked "
            "(nn.MultiheadAttention's convention, the opposite of exercise 02) and that "
            "key_padding_mask (B, S) blocks key columns: key_padding_mask[:, None, None, :].")


def _check_output(case: Case, output: np.ndarray, weights: Any = None) -> None:
    """Compare the learner's output with the reference; on a mismatch, name the likeliest cause."""
    __tracebackhide__ = True
    bad = find_bad_values(output)
    if bad is None and np.allclose(output, case.expected_output, rtol=RTOL, atol=ATOL):
        return
    mistake = _matching_mistake(case, output, "output")
    if mistake:
        fail(f"Your output matches multi-head attention where {mistake.rstrip('.')}.")
    if bad:
        hint = (_mask_hint(case) if case.attn_mask is not None or case.key_padding_mask is not None
                else "Look for a division by zero or a softmax over -inf scores.")
        fail(f"The output contains {bad} values. {hint}")
    averaged = _weights_array(case, weights)
    if averaged is not None and (case.attn_mask is not None or case.key_padding_mask is not None):
        _check_masked_weights(case, averaged)
    if averaged is not None and np.allclose(averaged, case.expected_weights, rtol=RTOL, atol=ATOL):
        fail("The attention weights are right but the output is not: "
             + worst_mismatch(output, case.expected_output) + ". Check weights @ v, the merge "
             "(transpose(1, 2), then reshape(B, L, E)) and self.out_proj.")
    fail("The output differs from nn.MultiheadAttention's on the same weights: "
         + worst_mismatch(output, case.expected_output) + ". Follow the shape table step by step "
         "and compare with nn.MultiheadAttention in the 'Try it' cell.")


def _weights_array(case: Case, weights: Any) -> np.ndarray | None:
    """The learner's weights as a (B, L, S) float array, or None if they are not that."""
    B, L, S, _ = case.shape
    if weights is None or tuple(getattr(weights, "shape", ())) != (B, L, S):
        return None
    try:
        return as_float_array(weights, "weights", (B, L, S))
    except AssertionError:
        return None


def _check_masked_weights(case: Case, weights: np.ndarray) -> None:
    """Weight on blocked keys: the masks were read the wrong way round or ignored."""
    __tracebackhide__ = True
    if find_bad_values(weights):
        return
    blocked = case.blocked
    leaked = float(np.abs(weights[blocked]).max(initial=0.0))
    if leaked <= ATOL:
        return
    mixed = blocked.any(-1) & (~blocked).any(-1)  # rows with both blocked and allowed keys
    allowed_mass = np.where(blocked, 0.0, weights).sum(-1)
    if mixed.any() and np.all(allowed_mass[mixed] <= ATOL):
        fail(f"All the weight goes to keys the masks block: {POLARITY}")
    fail(f"Weight {leaked:.3g} reaches a key that a mask blocks (True = blocked). Set the blocked "
         "scores to -inf before the softmax, with masked_fill(mask, float('-inf')), so their "
         "weight is exactly 0.")


# ----------------------------------------------------------------------------- checks

def check_shapes_and_params(cls, *, seed: int = 0, embed_dim: int = 24, num_heads: int = 4,
                            bias: bool = True, batch: int = 2, q_len: int = 3, k_len: int = 5) -> None:
    """Parameter names and shapes load nn.MultiheadAttention's state_dict; output is (B, L, E);
    every parameter receives a gradient."""
    __tracebackhide__ = True
    case = _make_case(seed, batch=batch, q_len=q_len, k_len=k_len, embed_dim=embed_dim,
                      num_heads=num_heads, bias=bias)
    module = _build(cls, case, trainable=True)
    _, _, raw_output = _forward(module, case, grad=True)
    if not isinstance(raw_output, torch.Tensor) or raw_output.grad_fn is None:
        fail("The output is not connected to the parameters: no gradient could flow back "
             "through it. Compute it with torch operations on the parameters (no .detach(), "
             ".item(), NumPy or torch.tensor(...) along the way).")
    raw_output.sum().backward()
    no_grad = [n for n, p in module.named_parameters() if p.grad is None]
    if no_grad:
        hints = [f"{', '.join(no_grad)} received no gradient: forward never uses "
                 f"{'it' if len(no_grad) == 1 else 'them'}."]
        if any(n.startswith("out_proj") for n in no_grad):
            hints.append("Pass the merged heads through self.out_proj.")
        if "in_proj_bias" in no_grad:
            hints.append("Add in_proj_bias's slices to q, k and v.")
        fail(" ".join(hints))
    passed(f"{type(module).__name__}({embed_dim}, {num_heads}"
           + ("" if bias else ", bias=False") + f") loads nn.MultiheadAttention's weights: "
           f"{_expected_keys(case)}; output {tuple(case.expected_output.shape)}")


def check_unmasked(cls, *, seed: int = 1, embed_dim: int = 24, num_heads: int = 4, batch: int = 2,
                   q_len: int = 5, k_len: int | None = None, bias: bool = True) -> None:
    """The output without masks; self-attention when k_len is None, else cross-attention."""
    __tracebackhide__ = True
    case = _make_case(seed, batch=batch, q_len=q_len, k_len=k_len, embed_dim=embed_dim,
                      num_heads=num_heads, bias=bias)
    output, weights, _ = _forward(_build(cls, case), case)
    _check_output(case, output, weights)
    kind = "self-attention" if k_len is None else f"cross-attention (L={q_len}, S={k_len})"
    heads = f"{num_heads} head{'s' if num_heads > 1 else ''}"
    passed(f"{kind} with {heads} of size {embed_dim // num_heads} matches nn.MultiheadAttention")


def _check_masked(cls, case: Case, what: str) -> None:
    __tracebackhide__ = True
    output, weights, _ = _forward(_build(cls, case), case)
    _check_output(case, output, weights)
    passed(f"{what} matches nn.MultiheadAttention")


def check_causal_mask(cls, *, seed: int = 2, embed_dim: int = 24, num_heads: int = 4,
                      batch: int = 2, length: int = 6) -> None:
    """Self-attention with a causal attn_mask (L, L), True above the diagonal."""
    __tracebackhide__ = True
    case = _make_case(seed, batch=batch, q_len=length, k_len=None, embed_dim=embed_dim,
                      num_heads=num_heads, attn_mask="causal")
    _check_masked(cls, case, f"a causal attn_mask ({length}, {length})")


def check_padding_mask(cls, *, seed: int = 3, embed_dim: int = 24, num_heads: int = 4,
                       lengths=(6, 4, 1), q_len: int | None = None) -> None:
    """A key_padding_mask (B, S): sequence b has lengths[b] real keys. Self-attention when
    q_len is None (S = L = max(lengths)), else cross-attention with q_len queries."""
    __tracebackhide__ = True
    case = _make_case(seed, batch=len(lengths), q_len=q_len or max(lengths),
                      k_len=None if q_len is None else max(lengths), embed_dim=embed_dim,
                      num_heads=num_heads, lengths=lengths)
    _check_masked(cls, case, f"a key_padding_mask for key lengths {tuple(lengths)}")


def check_both_masks(cls, *, seed: int = 4, embed_dim: int = 24, num_heads: int = 4,
                     lengths=(5, 3), q_len: int | None = None) -> None:
    """attn_mask and key_padding_mask together: causal in self-attention (q_len None), a
    random attn_mask in cross-attention."""
    __tracebackhide__ = True
    case = _make_case(seed, batch=len(lengths), q_len=q_len or max(lengths),
                      k_len=None if q_len is None else max(lengths), embed_dim=embed_dim,
                      num_heads=num_heads, lengths=lengths,
                      attn_mask="causal" if q_len is None else "random")
    _check_masked(cls, case, f"an attn_mask with a key_padding_mask for lengths {tuple(lengths)}")


def check_weights(cls, *, seed: int = 5, embed_dim: int = 24, num_heads: int = 4, q_len: int = 3,
                  k_len: int = 5, lengths=(5, 2)) -> None:
    """The returned weights: averaged over the heads, (B, L, S), right under masks; and
    (output, None) when need_weights=False. Cross-attention with a random attn_mask, plus a
    key_padding_mask unless lengths is None."""
    __tracebackhide__ = True
    batch = 2 if lengths is None else len(lengths)
    case = _make_case(seed, batch=batch, q_len=q_len, k_len=None if k_len == q_len else k_len,
                      embed_dim=embed_dim, num_heads=num_heads, attn_mask="random", lengths=lengths)
    module = _build(cls, case)
    output, weights, _ = _forward(module, case)
    B, L, S, E = case.shape
    h = case.num_heads
    if weights is None:
        fail("forward returned None for the weights, but need_weights is True by default: "
             "return the attention weights averaged over the heads, weights.mean(dim=1), (B, L, S).")
    shape = tuple(getattr(weights, "shape", ()))
    if shape == (B, h, L, S):
        fail(f"The weights have shape {shape}, one (L, S) matrix per head. nn.MultiheadAttention "
             "returns the average over the heads (average_attn_weights=True by default): "
             "weights.mean(dim=1) gives (B, L, S).")
    weights = as_float_array(weights, f"The attention weights of `{type(module).__name__}.forward` "
                             "(second returned value)", (B, L, S))
    bad = find_bad_values(weights)
    if bad:
        mistake = _matching_mistake(case, weights, "weights")
        if mistake:
            fail(f"Your weights match multi-head attention where {mistake.rstrip('.')}.")
        fail(f"The weights contain {bad} values. {_mask_hint(case)}")
    if not np.allclose(weights, case.expected_weights, rtol=RTOL, atol=ATOL):
        sums = weights.sum(-1)
        if h > 1 and np.allclose(sums, h, rtol=RTOL, atol=ATOL):
            fail(f"Each row of the weights sums to {h}, the number of heads: they look summed over "
                 "the heads. Take the mean instead, weights.mean(dim=1), so each row sums to 1.")
        mistake = _matching_mistake(case, weights, "weights")
        if mistake:
            fail(f"Your weights match multi-head attention where {mistake.rstrip('.')}.")
        _check_masked_weights(case, weights)
        for head in range(h if h > 1 else 0):
            one = _attend(case)[1][:, head]
            if np.allclose(weights, one, rtol=RTOL, atol=ATOL):
                fail(f"The weights are those of head {head} alone: return the mean over all "
                     f"{h} heads, weights.mean(dim=1).")
        if not np.allclose(sums, 1.0, atol=ATOL):
            fail(f"Rows of the weights should sum to 1 (a softmax over the keys, averaged over "
                 f"the heads); they sum to between {sums.min():.4g} and {sums.max():.4g}.")
        fail("The weights differ from nn.MultiheadAttention's: "
             + worst_mismatch(weights, case.expected_weights) + ".")

    quiet, quiet_weights, _ = _forward(module, case, need_weights=False)
    if quiet_weights is not None:
        fail("With need_weights=False, forward should return (output, None) as "
             f"nn.MultiheadAttention does, but the weights are {describe(quiet_weights)}. "
             "Return None for the weights when need_weights is False.")
    # Compared with the learner's own output: whether that is right is the other checks' job.
    if not np.allclose(quiet, output, rtol=RTOL, atol=ATOL, equal_nan=True):
        fail("With need_weights=False the output changes: " + worst_mismatch(quiet, output)
             + " (compared with need_weights=True). need_weights only decides whether the "
             "weights are returned.")
    passed(f"weights averaged over {h} heads, shape {(B, L, S)}, match nn.MultiheadAttention; "
           "need_weights=False gives None")
