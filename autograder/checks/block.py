"""Checks for exercise 10_block: GPT-2's pre-norm transformer block as three nn.Modules.

The learner writes ``CausalSelfAttention``, ``MLP`` and ``Block`` with GPT-2's parameter
names. Each check gives the course's reference (:mod:`llmref.block`, itself tested against
``torch.nn.MultiheadAttention``, ``nn.LayerNorm`` and ``nn.GELU`` in
tests/test_llmref_block.py) seeded random weights, loads its ``state_dict`` into the
learner's module, runs that in float32 on seeded inputs and compares the output and the
gradients (of the input and of every parameter, under one seeded upstream gradient) with
the reference run in float64.

On a mismatch a check recomputes the output the way each known mistake would (the mask on
the wrong side of the diagonal, post-norm, ReLU, ...) and names the one the learner's output
matches. Two checks test properties that hold whatever the weights: causality (changing
the future changes no earlier output, and no gradient flows back from the future) and
dropout (off after ``.eval()``, on in training). Library modules and functions that compute
attention whole are refused, however they are imported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmref.block import MLP as ReferenceMLP
from llmref.block import Block as ReferenceBlock
from llmref.block import CausalSelfAttention as ReferenceAttention

from ._core import (as_float_array, forward_tensor, build_learner, call_learner, describe, expect_parameters, fail,
                    fail_from, find_bad_values, layout_differences, load_weights, passed,
                    refuse_shortcuts, saved_shapes, torch_seeded, worst_mismatch)
from .multihead import FORBIDDEN as ATTENTION_FUNCTIONS
from .multihead import attend_heads, head_variants

# The learner's module runs in float32, the reference in float64 on the same float32 weights
# and inputs, so the difference is the learner's own rounding. float32 keeps about seven
# digits (eps 1.2e-7); through two LayerNorms, three projections, the softmax and the GELU
# it stays below 1e-6 of the largest value compared (measured over 20 seeds: outputs of
# order 1 to 10; parameter gradients, summed over every position, of order 10 to 30).
# TOL = 1e-5 of that scale leaves a tenfold margin. The closest known mistake, GELU's tanh
# approximation, moves the output by more than 1e-4 of it (tests/test_10_block.py checks
# that margin); every other one by more than 1e-2.
TOL = 1e-5

# A correct mask gives every future position a weight of exactly 0 (exp(-inf) = 0), so no
# earlier output moves at all when the future changes, and the gradient from the future is
# exactly 0. 1e-6 only allows for a library summing in another order; a leak is far larger
# (without a mask the earlier outputs move by ~1e-1).
CAUSAL_TOL = 1e-6

NAMES = {"attention": "CausalSelfAttention", "mlp": "MLP", "block": "Block"}
KINDS = {name: kind for kind, name in NAMES.items()}

# Functions that compute attention whole (those exercise 06 refuses, and the fused kernel
# behind nn.TransformerEncoderLayer); calling one does the exercise for the learner.
SHORTCUTS = dict(ATTENTION_FUNCTIONS)
if hasattr(torch, "_transformer_encoder_layer_fwd"):
    SHORTCUTS[torch._transformer_encoder_layer_fwd] = "nn.TransformerEncoderLayer's fused kernel"
# Modules that would do the same as a submodule (or as the learner's base class).
LIBRARY_MODULES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                   nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer)
SHORTCUTS.update({cls: f"nn.{cls.__name__}" for cls in LIBRARY_MODULES})
WHY_BY_HAND = ("Build it from nn.Linear, nn.LayerNorm, nn.GELU, nn.Dropout and your own classes, "
               "and write the head split, the scores, the mask, the softmax and the merge with "
               "tensor operations: that wiring is what the exercise is about.")


# ----------------------------------------------------------------------------- test cases

@dataclass
class Case:
    """One seeded problem: the reference's weights, an input, an upstream gradient and the
    reference's answers (float64)."""
    kind: str                        # "attention", "mlp" or "block"
    n_embd: int
    n_head: int
    bias: bool
    state: dict                      # the reference's state_dict, float32
    x: torch.Tensor                  # (B, T, C) float32
    upstream: torch.Tensor           # (B, T, C) float32: the gradient fed to backward
    reference: nn.Module             # the reference in float64, for diagnoses
    expected: np.ndarray             # (B, T, C) float64
    expected_x_grad: np.ndarray      # (B, T, C)
    expected_grads: dict             # parameter name -> float64 gradient

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    def call(self, dropout: float = 0.0) -> str:
        """How the check builds the learner's module, for messages."""
        args = [str(self.n_embd)] + ([] if self.kind == "mlp" else [str(self.n_head)])
        return f"{self.name}({', '.join(args)}, dropout={dropout}, bias={self.bias})"


def _reference(kind: str, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> nn.Module:
    with torch_seeded():  # building a module draws from the global RNG
        if kind == "attention":
            return ReferenceAttention(n_embd, n_head, dropout, bias)
        if kind == "mlp":
            return ReferenceMLP(n_embd, dropout, bias)
        return ReferenceBlock(n_embd, n_head, dropout, bias)


def _make_case(kind: str, seed: int, *, n_embd: int, n_head: int, bias: bool, batch: int,
               length: int) -> Case:
    gen = torch.Generator().manual_seed(seed)
    reference = _reference(kind, n_embd, n_head, bias=bias)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if p.dim() == 2:
                # std 1/sqrt(fan_in) keeps every layer's output of order 1 and the attention
                # scores of order 1: the softmax is neither uniform nor one-hot, so a
                # mistake shows.
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[1] ** -0.5)
            elif name.startswith("ln_") and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))  # gains: distinct per norm
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))  # non-zero biases: a dropped one shows
    state = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    x = torch.randn(batch, length, n_embd, generator=gen)
    upstream = torch.randn(batch, length, n_embd, generator=gen)

    reference = reference.double()
    x64 = x.double().requires_grad_(True)
    out = reference(x64)
    out.backward(upstream.double())
    grads = {n: p.grad.numpy().copy() for n, p in reference.named_parameters()}
    reference.zero_grad(set_to_none=True)
    reference.requires_grad_(False)
    return Case(kind, n_embd, n_head, bias, state, x, upstream, reference,
                out.detach().numpy(), x64.grad.numpy(), grads)


def _kind_of(cls: Any, allowed: tuple[str, ...]) -> str:
    __tracebackhide__ = True
    expected = " or ".join(f"`{NAMES[k]}`" for k in allowed)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        fail(f"Expected {expected}, a class that subclasses nn.Module, but got {describe(cls)}. "
             "Pass the class itself (not an instance), and re-run the cell that defines it.")
    kind = KINDS.get(cls.__name__)
    if kind not in allowed:
        fail(f"Expected the class {expected}, but got a class named `{cls.__name__}`.")
    return kind


# --------------------------------------------------------------- building and calling

def _expected_layout(case: Case) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in case.state.items())


def _check_layout(module: nn.Module, case: Case, built: str) -> None:
    """Parameters with the reference's names and shapes, registered, and nothing else saved."""
    __tracebackhide__ = True
    saved = saved_shapes(module, built)
    params = {k: tuple(p.shape) for k, p in module.named_parameters()}
    expected = {k: tuple(v.shape) for k, v in case.state.items()}
    C = case.n_embd
    if saved == expected and params == expected:
        return
    if saved == expected:
        expect_parameters(module, expected, "Use nn.Linear and nn.LayerNorm (or nn.Parameter), "
                          "not register_buffer, for weights.")
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    reshaped = [k for k in expected if k in saved and saved[k] != expected[k]]
    extra_params = [k for k in extra if k in params]
    if not missing and not reshaped and not extra_params:
        fail(f"`{built}` saves {', '.join(extra)} in its state_dict besides its parameters, so "
             "GPT-2's state_dict does not load into it. A causal mask kept on the module must "
             "be a buffer that is not saved: register_buffer(name, mask, persistent=False); or "
             "build the mask inside forward.")
    lines = [f"The parameters of `{built}` do not have GPT-2's names and shapes, so the "
             f"reference's state_dict cannot be loaded. Expected exactly: {_expected_layout(case)}.",
             *layout_differences(saved, expected)]
    if any(part in k for k in extra for part in ("q_proj", "k_proj", "v_proj", "query", "key", "value")):
        lines.append(f"Keep the query, key and value projections in one nn.Linear named c_attn, "
                     f"n_embd -> 3 * n_embd = {C} -> {3 * C}: its output holds the queries, then "
                     "the keys, then the values.")
    if any(k.endswith("c_fc.weight") for k in reshaped):
        lines.append(f"c_fc widens each position to 4 * n_embd = {4 * C} features and c_proj "
                     "brings them back to n_embd.")
    if any(k.endswith("c_attn.weight") for k in reshaped):
        lines.append(f"c_attn is nn.Linear(n_embd, 3 * n_embd): weight ({3 * C}, {C}).")
    if not case.bias and any(k.endswith("bias") for k in extra):
        lines.append("With bias=False there are no biases: pass bias=bias to every nn.Linear and "
                     "nn.LayerNorm (and on to the submodules).")
    if case.bias and any(k.endswith("bias") for k in missing) and not extra:
        lines.append("With bias=True every nn.Linear and nn.LayerNorm has a bias: pass bias=bias "
                     "on, do not hard-code bias=False.")
    fail(" ".join(lines))


def _build(cls: Any, case: Case, *, dropout: float = 0.0) -> nn.Module:
    """Instantiate the learner's class and load the reference's weights into it."""
    __tracebackhide__ = True
    built = case.call(dropout)
    args = (case.n_embd,) if case.kind == "mlp" else (case.n_embd, case.n_head)
    module = build_learner(cls, *args, name=built, forbidden=SHORTCUTS, why=WHY_BY_HAND,
                           dropout=dropout, bias=case.bias)
    if not isinstance(module, nn.Module):
        fail(f"`{built}` should give an nn.Module, but gave {describe(module)}.")
    _check_layout(module, case, built)
    load_weights(module, case.state, built, whose="the reference's state_dict",
                 hint=f"Expected: {_expected_layout(case)}.")
    return module


def _run(module: nn.Module, x: torch.Tensor, name: str, *, grad: bool = False):
    """Call the learner's module on x, watching for library shortcuts. Returns (the tensor
    returned, its values as a checked float64 array)."""
    __tracebackhide__ = True
    return forward_tensor(module, x, name, SHORTCUTS, WHY_BY_HAND, x.shape, grad=grad,
                          hint="Its shape is (B, T, C), like the input's.")


def _scale(expected: np.ndarray) -> float:
    """What TOL is relative to: the largest value compared, and at least 1."""
    finite = np.abs(expected[np.isfinite(expected)])
    return max(1.0, float(finite.max(initial=0.0)))


def _close(actual: np.ndarray, expected: np.ndarray, *, equal_nan: bool = False) -> bool:
    return bool(np.allclose(actual, expected, rtol=0.0, atol=TOL * _scale(expected),
                            equal_nan=equal_nan))


# ------------------------------------------------------------------------- diagnoses

def _attend(case: Case, x: torch.Tensor, prefix: str = "", *, order=(0, 1, 2), divide_by=None,
            split="transpose", merge="transpose", mask="future", fill=float("-inf"),
            softmax_dim=-1, project=True) -> torch.Tensor:
    """Causal self-attention in float64 on the case's weights, done right or the way one
    known mistake does it. mask: which (query t, key s) pairs are blocked: "future" s > t
    (right), "none", "past" s < t, "diagonal" s >= t, or "after" (s > t, zeroed after the
    softmax)."""
    p = {k[len(prefix):]: v.double() for k, v in case.state.items() if k.startswith(prefix)}
    x = x.double()
    T, C = x.shape[1:]
    parts = F.linear(x, p["c_attn.weight"], p.get("c_attn.bias")).split(C, dim=2)
    q, k, v = (parts[i] for i in order)
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    blocked = {"future": s > t, "after": s > t, "none": torch.zeros(T, T, dtype=torch.bool),
               "past": s < t, "diagonal": s >= t}[mask]
    y, _ = attend_heads(q, k, v, blocked, case.n_head, divide_by=divide_by, split=split,
                        merge=merge, fill=fill, softmax_dim=softmax_dim,
                        after_softmax=mask == "after")
    if project:
        y = F.linear(y, p["c_proj.weight"], p.get("c_proj.bias"))
    return y


FUTURE = ("there is no causal mask, so every position also attends to the positions after it: "
          "it sees the future. Before the softmax, fill the scores of key positions s > t (above "
          "the diagonal of each (T, T) score matrix) with -inf")
SPLIT = ("the heads are split by reshape alone, mixing positions: (B, T, C).view(B, h, T, hs) has "
         "the right shape, but each 'head' then holds features of several positions. View as "
         "(B, T, h, hs) and then transpose(1, 2)")
MERGE = ("the heads are merged by reshape alone, mixing positions: (B, h, T, hs).reshape(B, T, C) "
         "interleaves rows of different positions. transpose(1, 2) first, then reshape(B, T, C)")


def _attention_variants(case: Case) -> Iterator[tuple[dict, str]]:
    """(keyword arguments of _attend, what the learner did) for every known mistake."""
    C, h = case.n_embd, case.n_head
    hs = C // h
    yield {"mask": "none"}, FUTURE
    yield {"mask": "past"}, (
        "the mask is on the wrong side of the diagonal: each position attends to itself and the "
        "positions after it, not to those before it. Query t (a row of the scores) may attend to "
        "keys s <= t; block s > t, the entries above the diagonal: triu(diagonal=1)")
    for fill in (float("-inf"), -1e9, -1e4):
        yield {"mask": "diagonal", "fill": fill}, (
            "the mask also blocks the diagonal: a position may not attend to itself, so position "
            "0 has nothing left to attend to. Block only s > t: triu with diagonal=1, not 0")
    yield {"mask": "after"}, (
        "the mask is applied after the softmax: the future gets weight 0, but the past no longer "
        "shares all the weight (rows sum to less than 1). Fill the blocked scores with -inf "
        "before the softmax")
    scales = [
        (1.0, f"the scores are not scaled: divide q @ k^T by sqrt(head size) = sqrt(n_embd // "
              f"n_head) = sqrt({hs}) before the softmax"),
        (math.sqrt(C), f"the scores are divided by sqrt(n_embd) = sqrt({C}). Each head's dot "
                       f"product sums head size = {hs} products: divide by sqrt({hs}), not "
                       f"sqrt(n_embd)"),
        (float(C), f"the scores are divided by n_embd = {C}: divide by sqrt(head size) = sqrt({hs})"),
        (float(hs), f"the scores are divided by the head size {hs}: divide by its square root"),
    ]
    names = ("queries", "keys", "values")

    def wrong_order(order: tuple[int, ...]) -> str:
        used = ", ".join(f"features {i * C}:{(i + 1) * C} as the {names[j]}" for j, i in enumerate(order))
        return (f"the output of c_attn is split in the wrong order ({used}). It holds the queries, "
                f"the keys and the values in that order: 0:{C}, {C}:{2 * C}, {2 * C}:{3 * C}")

    yield from head_variants(h, math.sqrt(hs), scales, SPLIT, MERGE, wrong_order)
    yield {"project": False}, ("the output projection c_proj is missing: pass the merged heads, "
                               "(B, T, C), through self.c_proj")
    yield {"softmax_dim": -2}, ("the softmax runs over the queries: take it over the keys, the "
                                "last axis (dim=-1) of the (B, h, T, T) scores")


def _mlp_variant(case: Case, x: torch.Tensor, prefix: str = "", *, act: str = "gelu") -> torch.Tensor:
    p = {k[len(prefix):]: v.double() for k, v in case.state.items() if k.startswith(prefix)}
    h = F.linear(x.double(), p["c_fc.weight"], p.get("c_fc.bias"))
    h = {"gelu": F.gelu, "tanh": lambda t: F.gelu(t, approximate="tanh"), "relu": F.relu,
         "silu": F.silu, "none": lambda t: t}[act](h)
    return F.linear(h, p["c_proj.weight"], p.get("c_proj.bias"))


MLP_VARIANTS = [
    ({"act": "relu"}, "the activation is ReLU, not GELU. GPT-2's MLP uses GELU: nn.GELU(), whose "
                      "default is the exact GELU"),
    ({"act": "tanh"}, "GELU's tanh approximation is used (approximate='tanh'). Use the exact GELU, "
                      "nn.GELU() with its default approximate='none', as the reference does"),
    ({"act": "silu"}, "the activation is SiLU (x * sigmoid(x)), not GELU: use nn.GELU()"),
    ({"act": "none"}, "there is no activation between c_fc and c_proj, so the MLP is one linear "
                      "map: put nn.GELU() between them"),
]


def _wired(case: Case, x: torch.Tensor, wiring: str = "pre") -> torch.Tensor:
    """The block in float64 with the reference's parts, wired right ("pre") or wrongly."""
    r = case.reference
    x = x.double()
    attn, mlp, ln_1, ln_2 = r.attn, r.mlp, r.ln_1, r.ln_2
    if wiring == "pre":
        x = x + attn(ln_1(x))
        return x + mlp(ln_2(x))
    if wiring == "post":
        x = ln_1(x + attn(x))
        return ln_2(x + mlp(x))
    if wiring == "no_attn_residual":
        x = attn(ln_1(x))
        return x + mlp(ln_2(x))
    if wiring == "no_mlp_residual":
        x = x + attn(ln_1(x))
        return mlp(ln_2(x))
    if wiring == "no_residuals":
        return mlp(ln_2(attn(ln_1(x))))
    if wiring == "normed_stream":
        x = ln_1(x)
        x = x + attn(x)
        x = ln_2(x)
        return x + mlp(x)
    if wiring == "one_norm":
        x = x + attn(ln_1(x))
        return x + mlp(ln_1(x))
    if wiring == "swapped_norms":
        x = x + attn(ln_2(x))
        return x + mlp(ln_1(x))
    if wiring == "mlp_first":
        x = x + mlp(ln_2(x))
        return x + attn(ln_1(x))
    if wiring == "mlp_first_norms_in_order":
        x = x + mlp(ln_1(x))
        return x + attn(ln_2(x))
    if wiring == "parallel":
        return x + attn(ln_1(x)) + mlp(ln_2(x))
    raise ValueError(wiring)


WIRING_VARIANTS = [
    ("post", "the block is post-norm: the LayerNorms come after the residual additions, "
             "x = ln(x + f(x)), as in the 2017 Transformer. GPT-2's block is pre-norm: each "
             "sublayer reads a normalised copy and the stream is only added to, "
             "x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x))"),
    ("no_attn_residual", "there is no residual connection around the attention: add its output "
                         "to the stream (x = x + ...) instead of replacing x with it"),
    ("no_mlp_residual", "there is no residual connection around the MLP: add its output to the "
                        "stream (x = x + ...) instead of returning it alone"),
    ("no_residuals", "there are no residual connections: each sublayer's output must be added "
                     "to its input, x = x + ..."),
    ("normed_stream", "the residual stream itself is normalised: x = ln_1(x) replaces the stream "
                      "by its normalised copy before the addition. Keep x as it is and pass only "
                      "the sublayer a normalised copy: x = x + attn(ln_1(x))"),
    ("one_norm", "ln_1 is used before the MLP too: the MLP reads ln_2(x); each sublayer has its "
                 "own LayerNorm"),
    ("swapped_norms", "ln_1 and ln_2 are swapped: ln_1 comes before the attention, ln_2 before "
                      "the MLP"),
    ("mlp_first", "the MLP runs before the attention: attention first, then the MLP"),
    ("mlp_first_norms_in_order", "the MLP runs before the attention: attention first (after "
                                 "ln_1), then the MLP (after ln_2)"),
    ("parallel", "the attention and the MLP both read the block's input, side by side: the MLP "
                 "must read the stream after the attention's output has been added to it"),
]


def _randomness(module: nn.Module, x: torch.Tensor, name: str, first: np.ndarray) -> str | None:
    """A message if the module's output changes from call to call although dropout is 0."""
    __tracebackhide__ = True
    with torch_seeded(12345):
        _, again = _run(module, x.detach(), name)
    if np.array_equal(first, again, equal_nan=True):
        return None
    return (f"Your output changes from call to call, although `{name}` was built with "
            "dropout=0.0: something random runs in forward. Use the `dropout` argument for every "
            "nn.Dropout (nn.Dropout(dropout)), not a fixed rate.")


def _check_output(module: nn.Module, case: Case, x: torch.Tensor, output: np.ndarray,
                  diagnose: Callable[[np.ndarray], str | None], name: str, context: str = "") -> None:
    """Compare the learner's output with the reference; on a mismatch, name the likeliest cause."""
    __tracebackhide__ = True
    bad = find_bad_values(output)
    if bad is None and _close(output, case.expected):
        return
    mistake = diagnose(output)
    if mistake:
        fail(f"Your output matches {name} where {mistake.rstrip('.')}.")
    random = _randomness(module, x, name, output)
    if random:
        fail(random)
    if bad:
        fail(f"The output of `{name}` contains {bad} values. A row of scores that is -inf "
             "everywhere gives NaN in the softmax: every position must be allowed to attend to "
             "itself. Also look for a division by zero.")
    fail(f"The output of `{name}` differs from the reference's on the same weights{context}: "
         + worst_mismatch(output, case.expected) + ".")


def _check_gradients(module: nn.Module, case: Case, x: torch.Tensor, raw: torch.Tensor,
                     name: str) -> None:
    """Backpropagate the case's upstream gradient; compare the gradients of x and every parameter."""
    __tracebackhide__ = True
    if raw.grad_fn is None:
        fail(f"The output of `{name}` is not connected to the autograd graph, so no gradient "
             "reaches the input or the parameters. Did you compute it under torch.no_grad(), or "
             "go through .data, .detach(), .item() or NumPy?")
    try:
        raw.backward(case.upstream)
    except Exception as exc:
        fail_from(exc, f"Backpropagating through the output of `{name}` failed: "
                   f"{type(exc).__name__}: {exc}")
    params = dict(module.named_parameters())
    unused = [n for n in case.expected_grads if params[n].grad is None]
    if unused:
        fail(f"{', '.join(unused)} received no gradient: forward never uses "
             f"{'it' if len(unused) == 1 else 'them'} (or cuts {'it' if len(unused) == 1 else 'them'} "
             "out of the graph with .detach() or .data).")
    got = {"the input x": x.grad, **{f"`{n}`": params[n].grad for n in case.expected_grads}}
    want = {"the input x": case.expected_x_grad,
            **{f"`{n}`": g for n, g in case.expected_grads.items()}}
    for what, grad in got.items():
        if grad is None:
            fail(f"No gradient reached {what}: `{name}` cuts it out of the graph. Use the tensors "
                 "themselves, not .data, .detach() or a copy made with torch.tensor().")
        actual = as_float_array(grad, f"The gradient of {what}", want[what].shape)
        if find_bad_values(actual) or not _close(actual, want[what]):
            fail(f"The output of `{name}` is right but the gradient of {what} is not: "
                 f"{worst_mismatch(actual, want[what])}. Part of the computation does not reach "
                 "autograd: look for .detach(), .data, in-place changes of tensors autograd needs, "
                 "or torch.no_grad() inside forward.")


def _forward_backward(module: nn.Module, case: Case, name: str,
                      diagnose: Callable[[np.ndarray], str | None], context: str = "") -> None:
    __tracebackhide__ = True
    x = case.x.clone().requires_grad_(True)
    with torch_seeded(0):
        raw, output = _run(module, x, name, grad=True)
    _check_output(module, case, x, output, diagnose, name, context)
    _check_gradients(module, case, x, raw, name)


def _first_match(output: np.ndarray, candidates: Iterator[tuple[Callable[[], torch.Tensor], str]]) -> str | None:
    for compute, description in candidates:
        with torch.no_grad():
            wrong = compute().numpy()
        if _close(output, wrong, equal_nan=True):
            return description
    return None


def _diagnose_attention(case: Case, prefix: str = ""):
    def diagnose(output: np.ndarray) -> str | None:
        return _first_match(output, ((lambda kw=kw: _attend(case, case.x, prefix, **kw), what)
                                     for kw, what in _attention_variants(case)))
    return diagnose


def _diagnose_mlp(case: Case, prefix: str = ""):
    def diagnose(output: np.ndarray) -> str | None:
        return _first_match(output, ((lambda kw=kw: _mlp_variant(case, case.x, prefix, **kw), what)
                                     for kw, what in MLP_VARIANTS))
    return diagnose


def _diagnose_wiring(case: Case):
    def diagnose(output: np.ndarray) -> str | None:
        return _first_match(output, ((lambda w=w: _wired(case, case.x, w), what)
                                     for w, what in WIRING_VARIANTS))
    return diagnose


# ----------------------------------------------------------------------------- checks

def _layout_line(case: Case) -> str:
    return ", ".join(case.state)


def check_attention(cls, *, seed: int = 0, n_embd: int = 32, n_head: int = 4, batch: int = 2,
                    length: int = 7, bias: bool = True) -> None:
    """CausalSelfAttention: GPT-2's parameter names; output and every gradient equal the
    reference's on its weights."""
    __tracebackhide__ = True
    _kind_of(cls, ("attention",))
    case = _make_case("attention", seed, n_embd=n_embd, n_head=n_head, bias=bias, batch=batch,
                      length=length)
    module = _build(cls, case)
    _forward_backward(module, case, case.name, _diagnose_attention(case))
    passed(f"{case.call()} matches the reference forward and backward on {tuple(case.x.shape)} "
           f"inputs ({n_head} head{'s' if n_head > 1 else ''} of size {n_embd // n_head}; "
           f"parameters {_layout_line(case)})")


def check_mlp(cls, *, seed: int = 1, n_embd: int = 32, batch: int = 2, length: int = 5,
              bias: bool = True) -> None:
    """MLP: c_fc (C -> 4C), exact GELU, c_proj (4C -> C); forward and backward."""
    __tracebackhide__ = True
    _kind_of(cls, ("mlp",))
    case = _make_case("mlp", seed, n_embd=n_embd, n_head=1, bias=bias, batch=batch, length=length)
    module = _build(cls, case)
    _forward_backward(module, case, case.name, _diagnose_mlp(case))
    passed(f"{case.call()} matches the reference forward and backward ({n_embd} -> {4 * n_embd} "
           f"-> GELU -> {n_embd})")


def _parts_of(module: nn.Module, case: Case) -> tuple[nn.Module, nn.Module]:
    """The reference's attention and MLP in float32 with the case's weights, to swap in."""
    attn = _reference("attention", case.n_embd, case.n_head, bias=case.bias)
    mlp = _reference("mlp", case.n_embd, case.n_head, bias=case.bias)
    for part, prefix in ((attn, "attn."), (mlp, "mlp.")):
        part.load_state_dict({k[len(prefix):]: v for k, v in case.state.items() if k.startswith(prefix)})
    return attn, mlp


def _which_part_is_wrong(module: nn.Module, case: Case) -> str | None:
    """Run the learner's own attn and mlp inside the Block on the case's input; name one that
    differs from the reference."""
    checks = [("attn", "CausalSelfAttention", "attn.", _attend),
              ("mlp", "MLP", "mlp.", _mlp_variant)]
    for attr, cls_name, prefix, right in checks:
        part = getattr(module, attr, None)
        if not isinstance(part, nn.Module):
            continue
        try:
            with torch.no_grad(), torch_seeded(0):
                out = part(case.x)
            got = out.detach().double().numpy()
        except Exception:
            return cls_name
        with torch.no_grad():
            want = right(case, case.x, prefix).numpy()
        if got.shape != want.shape or not _close(got, want):
            return cls_name
    return None


def check_block(cls, *, seed: int = 2, n_embd: int = 32, n_head: int = 4, batch: int = 2,
                length: int = 7, bias: bool = True) -> None:
    """Block: first wired with the reference's attention and MLP swapped in (the wiring alone:
    pre-norm, residuals), then with its own parts; forward and backward both times."""
    __tracebackhide__ = True
    _kind_of(cls, ("block",))
    case = _make_case("block", seed, n_embd=n_embd, n_head=n_head, bias=bias, batch=batch,
                      length=length)
    module = _build(cls, case)
    module.attn, module.mlp = _parts_of(module, case)
    _forward_backward(module, case, case.name, _diagnose_wiring(case),
                      " (with the course's CausalSelfAttention and MLP swapped in, so the wiring "
                      "of forward is at fault: x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x)))")

    module = _build(cls, case)
    x = case.x.clone().requires_grad_(True)
    with torch_seeded(0):
        raw, output = _run(module, x, case.name, grad=True)
    if find_bad_values(output) or not _close(output, case.expected):
        part = _which_part_is_wrong(module, case)
        if part:
            fail(f"Your Block is wired right: with the course's CausalSelfAttention and MLP swapped "
                 f"in, it matches the reference. With its own parts it does not, because your "
                 f"{part} differs from the reference's: make {part} pass its test first.")
        _check_output(module, case, x, output, lambda _: None, case.name)
    _check_gradients(module, case, x, raw, case.name)
    passed(f"{case.call()} is pre-norm with both residual connections, and with your own "
           f"attention and MLP matches the reference forward and backward on {tuple(case.x.shape)} "
           "inputs")


def check_causal(cls, *, seed: int = 3, n_embd: int = 32, n_head: int = 4, batch: int = 2,
                 length: int = 6, bias: bool = True) -> None:
    """CausalSelfAttention or Block: changing the tokens after position t never changes the
    outputs at positions <= t; d out[t] / d x[s] is 0 for every s > t; and the last
    position does depend on the first."""
    __tracebackhide__ = True
    kind = _kind_of(cls, ("attention", "block"))
    case = _make_case(kind, seed, n_embd=n_embd, n_head=n_head, bias=bias, batch=batch,
                      length=length)
    name = case.name
    module = _build(cls, case)
    module.eval()  # dropout is 0 anyway; eval() makes certain nothing random runs
    gen = torch.Generator().manual_seed(seed + 1000)
    x = case.x
    T = length
    _, base = _run(module, x, name)
    if find_bad_values(base):
        fail(f"The output of `{name}` contains {find_bad_values(base)} values: every position "
             "must be allowed to attend to itself, so no row of scores is -inf everywhere.")

    # 1. Changing the future changes nothing before it.
    for t in range(T - 1):
        changed_x = x.clone()
        changed_x[:, t + 1:] = torch.randn(changed_x[:, t + 1:].shape, generator=gen)
        _, changed = _run(module, changed_x, name)
        moved = np.abs(changed[:, :t + 1] - base[:, :t + 1])
        if not moved.max() <= CAUSAL_TOL:
            first = int(np.argmax(moved.max(axis=(0, 2)) > CAUSAL_TOL))
            fail(f"`{name}` sees the future: changing the tokens at positions {t + 1} to {T - 1} "
                 f"changed the output at position {first} by up to {moved.max():.3g}. Position t "
                 "may only attend to positions s <= t: before the softmax, fill the scores of "
                 "keys s > t (above the diagonal) with -inf.")

    # 2. No gradient flows back from the future.
    xg = x.clone().requires_grad_(True)
    raw, _ = _run(module, xg, name, grad=True)
    if raw.grad_fn is None:
        fail(f"The output of `{name}` is not connected to the autograd graph: no gradient reaches "
             "the input. Did you go through .detach(), .data or NumPy?")
    weights = torch.randn(raw.shape, generator=gen)
    for t in range(T - 1):
        (grad,) = torch.autograd.grad((raw[:, t] * weights[:, t]).sum(), xg, retain_graph=True,
                                      allow_unused=True)
        leak = 0.0 if grad is None else float(grad[:, t + 1:].abs().max())
        if not leak <= CAUSAL_TOL:
            fail(f"The gradient of the output at position {t} with respect to the input at a later "
                 f"position is {leak:.3g}, not 0: information flows from the future into `{name}`. "
                 "Fill the scores of keys s > t with -inf before the softmax.")

    # 3. ... while the past stays visible.
    if T > 1:
        changed_x = x.clone()
        changed_x[:, 0] = torch.randn(changed_x[:, 0].shape, generator=gen)
        _, changed = _run(module, changed_x, name)
        if np.abs(changed[:, -1] - base[:, -1]).max() <= CAUSAL_TOL:
            fail(f"Changing the first token does not change `{name}`'s output at the last "
                 f"position {T - 1}: the past is hidden too. Position t attends to every s <= t; "
                 "block only s > t, the entries above the diagonal.")
    passed(f"{name} is causal: with T = {T}, changing tokens after t never moves an output at "
           "positions <= t, d out[t] / d x[s] = 0 for every s > t, and the last position sees "
           "the first")


def check_dropout(cls, *, seed: int = 4, n_embd: int = 32, n_head: int = 4, p: float = 0.3,
                  batch: int = 2, length: int = 6, bias: bool = True) -> None:
    """Built with dropout=p: after .eval() the output is deterministic and the same as the
    module's built with dropout=0.0 (on the same weights); in training mode two calls differ.

    The comparison is with the learner's own module without dropout, not with the reference,
    so that this check tests dropout alone: whether the output is right is the other checks'
    job, and a wrong mask or wiring loses its points there, not here as well.
    """
    __tracebackhide__ = True
    kind = _kind_of(cls, ("attention", "mlp", "block"))
    case = _make_case(kind, seed, n_embd=n_embd, n_head=n_head, bias=bias, batch=batch,
                      length=length)
    name = case.name
    built = case.call(p)
    plain = _build(cls, case).eval()
    with torch_seeded(1):
        _, without = _run(plain, case.x, name)
    module = _build(cls, case, dropout=p)

    module.eval()
    with torch_seeded(1):
        _, first = _run(module, case.x, name)
    with torch_seeded(2):
        _, second = _run(module, case.x, name)
    if not np.array_equal(first, second, equal_nan=True):
        fail(f"After .eval(), `{built}` gives a different output at each call: dropout is still "
             "applied in evaluation. Use nn.Dropout modules, which .eval() switches off (or pass "
             "training=self.training to F.dropout, whose default is training=True).")
    if not _close(first, without, equal_nan=True):
        fail(f"After .eval(), `{built}` differs from `{case.call(0.0)}` on the same weights: "
             f"{worst_mismatch(first, without)}. In evaluation dropout must change nothing: no "
             "mask and no rescaling (nn.Dropout scales by 1 / (1 - p) in training, and does "
             "nothing after .eval()).")

    module.train()
    with torch_seeded(1):
        _, first = _run(module, case.x, name)
    with torch_seeded(2):
        _, second = _run(module, case.x, name)
    if np.array_equal(first, second, equal_nan=True):
        fail(f"In training mode `{built}` gives the same output at every call: dropout is never "
             "applied. Create nn.Dropout(dropout) with the `dropout` argument (passing it on to "
             "the submodules) and apply it in forward.")
    passed(f"{built}: no dropout after .eval() (the output is that of dropout=0.0), dropout in "
           "training (two calls differ)")
