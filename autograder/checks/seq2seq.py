"""Checks for exercise 14_seq2seq: cross-attention, teacher forcing, greedy decoding, and a
trained encoder-decoder.

Cross-attention is compared, in float64, with the course's reference
(:class:`llmref.seq2seq.CrossAttention`) and with an independent one:
``torch.nn.MultiheadAttention`` with the same weights (its ``in_proj_weight`` cut into the
three projections), outputs, per-head weights and gradients. The loss and greedy decoding
run on the reference model, so that they are judged on their own, and greedy decoding also
on a scripted model whose every next token is known. The last check builds the learner's
model, compares each of their pieces with the reference on it (and stops before training
if one differs), trains it with the notebook's loop and measures exact match on held-out
dates with the reference's decoder.

On a mismatch a check recomputes the answer the way each common mistake would (keys from
the decoder, the mask the wrong way round, a causal mask, no scale, no shift, ...) and
names the one the learner's answer matches.
"""
from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmref import seq2seq as ref

from ._core import (CheckFailure, as_float_array, build_learner, call_learner, describe, fail,
                    fail_from, find_bad_values, layout_differences, passed, refuse_shortcuts,
                    saved_shapes, torch_isolated, torch_seeded, worst_mismatch)

# Cross-attention runs in float64 on both sides: two correct implementations then differ by
# ~1e-15 (rounding in another order); 1e-8 is far above that and far below what any known
# mistake changes (> 1e-2 on these inputs, whose scores are of order 1).
TOL64 = 1e-8
# The trained model's pre-check compares the learner's float32 model with the reference on
# the same float32 weights: float32 keeps ~7 digits, a few hundred roundings on values of
# order 1 come to ~1e-6; 1e-4 leaves a wide margin and is still far below any mistake.
TOL32 = 1e-4
# The bar of the last test. The reference reaches 99.6 to 99.8 % with seeds 0, 1, 3, 4, 6; a
# learner's correct pieces round differently and so train along another path, like another
# seed would: 95 % leaves room for that and none for a model that has not learned the task.
THRESHOLD = 0.95
HELD_OUT = 500           # held-out dates the trained model is measured on

FORBIDDEN = {
    F.scaled_dot_product_attention: "F.scaled_dot_product_attention",
    F.multi_head_attention_forward: "F.multi_head_attention_forward",
    torch._native_multi_head_attention: "torch._native_multi_head_attention",
    **{cls: f"nn.{cls.__name__}" for cls in (nn.MultiheadAttention, nn.TransformerDecoderLayer,
                                             nn.TransformerDecoder, nn.Transformer)},
}
WHY_BY_HAND = ("Build it from four nn.Linear layers and write the projections, the head split, "
               "the scores, the mask and the softmax yourself: queries from one sequence and keys "
               "from another is the one new idea of the exercise.")
NAME = "CrossAttention"
PARAMS = ("q_proj", "k_proj", "v_proj", "out_proj")


# ------------------------------------------------------------------ cross-attention cases

def _torch_mha(seed: int, n_embd: int, n_head: int, bias: bool) -> nn.MultiheadAttention:
    """nn.MultiheadAttention in float64 with seeded weights of order 1/sqrt(C) and non-zero
    biases, so that the softmax is neither uniform nor one-hot and a forgotten bias shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch_seeded():
        mha = nn.MultiheadAttention(n_embd, n_head, bias=bias, batch_first=True).double()
    with torch.no_grad():
        for p in mha.parameters():
            std = n_embd ** -0.5 if p.dim() == 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)
    return mha


def _our_state(mha: nn.MultiheadAttention) -> dict[str, torch.Tensor]:
    """The MultiheadAttention's weights under CrossAttention's names."""
    state = {}
    for name, w in zip(PARAMS[:3], mha.in_proj_weight.detach().chunk(3)):
        state[f"{name}.weight"] = w.clone()
    if mha.in_proj_bias is not None:
        for name, b in zip(PARAMS[:3], mha.in_proj_bias.detach().chunk(3)):
            state[f"{name}.bias"] = b.clone()
    state["out_proj.weight"] = mha.out_proj.weight.detach().clone()
    if mha.out_proj.bias is not None:
        state["out_proj.bias"] = mha.out_proj.bias.detach().clone()
    return state


def _inputs(seed: int, batch: int, q_len: int, k_len: int, n_embd: int, lengths):
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, q_len, n_embd, generator=gen, dtype=torch.float64)
    memory = torch.randn(batch, k_len, n_embd, generator=gen, dtype=torch.float64)
    mask = None
    if lengths is not None:
        if len(lengths) != batch or max(lengths) != k_len or min(lengths) < 1:
            raise ValueError(f"lengths {lengths} must give every one of the {batch} sequences "
                             f"1 to {k_len} real positions, one of them all {k_len}")
        mask = torch.arange(k_len)[None, :] >= torch.tensor(lengths)[:, None]
    return x, memory, mask


def _build(cls: Any, n_embd: int, n_head: int, bias: bool, state: dict) -> nn.Module:
    """The learner's CrossAttention with the given weights loaded, in float64."""
    __tracebackhide__ = True
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        fail(f"Expected `{NAME}` to be a class that subclasses nn.Module, but got {describe(cls)}. "
             "Pass the class itself (not an instance), and re-run the cell that defines it.")
    kwargs = {} if bias else {"bias": False}
    module = build_learner(cls, n_embd, n_head, name=NAME, forbidden=FORBIDDEN, why=WHY_BY_HAND,
                           **kwargs)
    actual = saved_shapes(module, f"{NAME}(...)")
    expected = {k: tuple(v.shape) for k, v in state.items()}
    if actual != expected:
        call = f"{NAME}({n_embd}, {n_head}" + ("" if bias else ", bias=False") + ")"
        lines = [f"The parameters of {call} are not the expected ones, so the checks cannot copy "
                 "weights into it. Expected exactly: "
                 + ", ".join(f"{k} {v}" for k, v in expected.items()) + ".",
                 *layout_differences(actual, expected)]
        lines.append(f"Create four nn.Linear({n_embd}, {n_embd}, bias=bias) layers named "
                     "q_proj, k_proj, v_proj and out_proj.")
        fail(" ".join(lines))
    module = module.double()  # first: loading float64 weights into float32 ones would round them
    module.load_state_dict(state)
    return module


def _call(module: nn.Module, x, memory, mask, *, return_weights: bool, q_len: int, k_len: int):
    """Call the learner's forward; a crash gets a hint about where keys come from."""
    __tracebackhide__ = True
    name = f"{NAME}.forward"
    kwargs = {"return_weights": True} if return_weights else {}
    try:
        with refuse_shortcuts(FORBIDDEN, name, WHY_BY_HAND):
            result = call_learner(module, x, memory, mask, name=name, **kwargs)
    except AssertionError as failure:  # a CheckFailure from call_learner
        if failure.__cause__ is None:      # not a crash (NotImplementedError, not callable)
            raise
        fail_from(failure.__cause__, f"{failure}\nHere x has T = {q_len} positions and memory "
                  f"S = {k_len}: queries are projected from `x`, keys and values from `memory`, so "
                  f"each head's scores are (T, S) = ({q_len}, {k_len}).")
    return result


def _variants(state: dict, n_head: int, x, memory, mask) -> dict[str, torch.Tensor]:
    """The output as each known mistake computes it (float64, from the weights)."""
    B, T, C = x.shape
    S = memory.shape[1]
    d = C // n_head

    def lin(name, inp):
        return F.linear(inp, state[f"{name}.weight"], state.get(f"{name}.bias"))

    def heads(t, n):
        return t.view(B, n, n_head, d).transpose(1, 2)

    q = heads(lin("q_proj", x), T)
    k, v = heads(lin("k_proj", memory), S), heads(lin("v_proj", memory), S)
    raw = q @ k.transpose(-2, -1)
    causal = torch.ones(T, S, dtype=torch.bool).triu(1)

    def out(scores, block=None, dim=-1):
        if block is not None:
            scores = scores.masked_fill(block, float("-inf"))
        weights = torch.softmax(scores, dim=dim)
        return lin("out_proj", (weights @ v).transpose(1, 2).reshape(B, T, C))

    pad = None if mask is None else mask[:, None, None, :]
    found = {
        "not scaled: divide the scores by sqrt(d), d = C // n_head the size of one head":
            out(raw, pad),
        "scaled by sqrt(C) instead of sqrt(d): one head's dot product sums d = C // n_head "
        "products, so divide by sqrt(d)": out(raw / math.sqrt(C), pad),
        "has a causal mask: cross-attention has none, every output position may see the whole "
        "input": out(raw / math.sqrt(d), causal if pad is None else (causal | pad)),
        "takes the softmax over the wrong axis: each query's weights are a distribution over "
        "the S memory positions, softmax(dim=-1)": out(raw / math.sqrt(d), pad, dim=-2),
    }
    if mask is not None:
        found["ignores the padding mask: masked_fill the scores with -inf where the mask is "
              "True, before the softmax"] = out(raw / math.sqrt(d))
    return found


def _diagnose(got: np.ndarray, variants: dict[str, torch.Tensor]) -> str:
    for text, value in variants.items():
        value = value.detach().numpy()
        if np.allclose(got, value, rtol=TOL64, atol=TOL64, equal_nan=True):
            return f"Your output matches cross-attention that {text}."
    return ("It matches none of the usual mistakes: compare your forward pass step by step "
            "with the table in the instructions (projections, head split, scores, mask, softmax, "
            "merge, out_proj).")


def _compare(cross_attention, *, seed: int, n_embd: int, n_head: int, batch: int, q_len: int,
             k_len: int, bias: bool, lengths, what: str) -> None:
    """Output, per-head weights and gradients against nn.MultiheadAttention and the reference."""
    __tracebackhide__ = True
    mha = _torch_mha(seed, n_embd, n_head, bias)
    state = _our_state(mha)
    module = _build(cross_attention, n_embd, n_head, bias, state)
    x, memory, mask = _inputs(seed, batch, q_len, k_len, n_embd, lengths)
    x_mine, memory_mine = x.clone().requires_grad_(), memory.clone().requires_grad_()
    result = _call(module, x_mine, memory_mine, None if mask is None else mask.clone(),
                   return_weights=True, q_len=q_len, k_len=k_len)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"With return_weights=True, `{NAME}.forward` should return (output, weights), "
             f"but it returned {describe(result)}.")
    out, weights = result

    x_theirs, memory_theirs = x.clone().requires_grad_(), memory.clone().requires_grad_()
    their_out, their_weights = mha(x_theirs, memory_theirs, memory_theirs, key_padding_mask=mask,
                                   need_weights=True, average_attn_weights=False)
    with torch_seeded():
        reference = ref.CrossAttention(n_embd, n_head, bias=bias).double()
    reference.load_state_dict(state)
    ref_out, ref_weights = reference(x, memory, mask, return_weights=True)
    # The two references agree to ~1e-15; that is tested in tests/test_llmref_seq2seq.py.
    expected = ref_out.detach().numpy()

    got = as_float_array(out, f"The output of {NAME}", (batch, q_len, n_embd))
    bad = find_bad_values(got)
    if bad:
        hint = ("A row of scores that is -inf everywhere gives NaN after the softmax: does your "
                "mask block the real positions and keep the padding, the wrong way round? True "
                "means padding, blocked." if mask is not None else
                "Is something divided by zero, or a mask applied although none was given?")
        fail(f"{what}: the output has {bad} values. {hint}")
    if not np.allclose(got, expected, rtol=TOL64, atol=TOL64):
        diagnosis = _diagnose(got, _variants(state, n_head, x, memory, mask))
        if mask is not None and np.allclose(
                got, _inverted(state, n_head, x, memory, mask), rtol=TOL64, atol=TOL64, equal_nan=True):
            diagnosis = ("Your output matches attention with the padding mask the wrong way round: "
                         "True means padding, so block the scores where the mask is True.")
        fail(f"{what}: the output differs from nn.MultiheadAttention's with the same weights, "
             f"{worst_mismatch(got, expected)}. {diagnosis}")

    shape = (batch, n_head, q_len, k_len)
    if hasattr(weights, "shape") and tuple(weights.shape) == (batch, q_len, k_len):
        fail(f"The weights have shape {tuple(weights.shape)}: return every head's, "
             f"(B, n_head, T, S) = {shape}, not their average.")
    got_w = as_float_array(weights, f"The weights returned by {NAME}", shape)
    their_w = their_weights.detach().numpy()
    if not np.allclose(got_w, their_w, rtol=TOL64, atol=TOL64):
        fail(f"{what}: the output is right but the returned weights differ from "
             f"nn.MultiheadAttention's (average_attn_weights=False), {worst_mismatch(got_w, their_w)}. "
             "Return the softmax of the scores, per head, before it multiplies the values.")
    if mask is not None and np.abs(got_w * mask.numpy()[:, None, None, :]).max() > 0:
        fail(f"{what}: some weight on a padded memory position is not 0.")

    # Backward: the same random weighting of the outputs through both modules.
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 2),
                           dtype=torch.float64)
    if not getattr(out, "requires_grad", False):
        fail(f"The output of {NAME} does not depend on the inputs through autograd (no "
             "grad_fn): do not call .detach(), .numpy() or torch.no_grad() inside forward.")
    (out * grad_out).sum().backward()
    (their_out * grad_out).sum().backward()
    pairs = [("the gradient of x", x_mine.grad, x_theirs.grad),
             ("the gradient of memory", memory_mine.grad, memory_theirs.grad)]
    their_params = {k: v for k, v in _our_grads(mha).items()}
    mine = dict(module.named_parameters())
    pairs += [(f"the gradient of {k}", mine[k].grad, their_params[k]) for k in their_params]
    for label, a, b in pairs:
        if a is None:
            fail(f"{what}: {label} is None: the output does not depend on it. Are keys and values "
                 "projected from `memory` with k_proj and v_proj, queries from `x` with q_proj?")
        a_np = as_float_array(a, label, tuple(b.shape))
        if not np.allclose(a_np, b.numpy(), rtol=TOL64, atol=TOL64):
            fail(f"{what}: the output is right, but {label} differs from nn.MultiheadAttention's, "
                 f"{worst_mismatch(a_np, b.numpy())}. Is something computed outside autograd "
                 "(.detach(), .data, in-place changes of a tensor autograd still needs)?")


def _inverted(state, n_head, x, memory, mask) -> np.ndarray:
    """Attention with the padding mask read the wrong way round (NaN where a row is all blocked)."""
    with torch_seeded():
        module = ref.CrossAttention(x.shape[-1], n_head, bias="q_proj.bias" in state).double()
    module.load_state_dict(state)
    with torch.no_grad():
        return module(x, memory, ~mask).numpy()


def _our_grads(mha: nn.MultiheadAttention) -> dict[str, torch.Tensor]:
    """nn.MultiheadAttention's parameter gradients under CrossAttention's names."""
    grads = {}
    for name, g in zip(PARAMS[:3], mha.in_proj_weight.grad.chunk(3)):
        grads[f"{name}.weight"] = g
    if mha.in_proj_bias is not None:
        for name, g in zip(PARAMS[:3], mha.in_proj_bias.grad.chunk(3)):
            grads[f"{name}.bias"] = g
    grads["out_proj.weight"] = mha.out_proj.weight.grad
    if mha.out_proj.bias is not None:
        grads["out_proj.bias"] = mha.out_proj.bias.grad
    return grads


def check_shapes(CrossAttention, *, seed: int = 0, n_embd: int = 16, n_head: int = 4, batch: int = 2,
                 q_len: int = 3, k_len: int = 5, bias: bool = True) -> None:
    """Parameters q_proj, k_proj, v_proj, out_proj; output (B, T, C); weights (B, n_head, T, S)."""
    __tracebackhide__ = True
    state = _our_state(_torch_mha(seed, n_embd, n_head, bias))
    module = _build(CrossAttention, n_embd, n_head, bias, state)
    x, memory, _ = _inputs(seed, batch, q_len, k_len, n_embd, None)
    with torch.no_grad():
        out = _call(module, x, memory, None, return_weights=False, q_len=q_len, k_len=k_len)
        if isinstance(out, (tuple, list)):
            fail(f"Without return_weights=True, `{NAME}.forward` should return the output tensor "
                 f"alone, but it returned a {type(out).__name__}: return (output, weights) only "
                 "when return_weights is True.")
        as_float_array(out, f"The output of {NAME}", (batch, q_len, n_embd))
        result = _call(module, x, memory, None, return_weights=True, q_len=q_len, k_len=k_len)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"With return_weights=True, `{NAME}.forward` should return (output, weights), but "
             f"it returned {describe(result)}.")
    weights = result[1]
    if hasattr(weights, "shape") and tuple(weights.shape) == (batch, q_len, k_len):
        fail(f"The weights have shape {tuple(weights.shape)}: return every head's, (B, n_head, T, S) "
             f"= {(batch, n_head, q_len, k_len)}, not their average.")
    as_float_array(weights, f"The weights returned by {NAME}", (batch, n_head, q_len, k_len))
    passed(f"{NAME}({n_embd}, {n_head}) has q_proj, k_proj, v_proj, out_proj; T={q_len} queries "
           f"attend to S={k_len} memory positions: output {(batch, q_len, n_embd)}, weights "
           f"{(batch, n_head, q_len, k_len)}")


def check_cross_attention(CrossAttention, *, seed: int = 0, n_embd: int = 16, n_head: int = 4,
                          batch: int = 2, q_len: int = 4, k_len: int = 6, bias: bool = True) -> None:
    """No mask: output, per-head weights and gradients against nn.MultiheadAttention."""
    __tracebackhide__ = True
    _compare(CrossAttention, seed=seed, n_embd=n_embd, n_head=n_head, batch=batch, q_len=q_len,
             k_len=k_len, bias=bias, lengths=None, what=f"Without a mask (T={q_len}, S={k_len})")
    passed(f"cross-attention without a mask (T={q_len}, S={k_len}, {n_head} heads) matches "
           "nn.MultiheadAttention: output, weights and gradients")


def check_padding(CrossAttention, *, seed: int = 0, lengths=(6, 3), q_len: int = 4, n_embd: int = 16,
                  n_head: int = 4, bias: bool = True) -> None:
    """With a padding mask: nothing attends to padding; against nn.MultiheadAttention."""
    __tracebackhide__ = True
    _compare(CrossAttention, seed=seed, n_embd=n_embd, n_head=n_head, batch=len(lengths),
             q_len=q_len, k_len=max(lengths), bias=bias, lengths=tuple(lengths),
             what=f"With a padding mask (real lengths {tuple(lengths)})")
    passed(f"cross-attention with a padding mask (real lengths {tuple(lengths)}) matches "
           "nn.MultiheadAttention; no weight on padding")


# ----------------------------------------------------------------------- the small models

def _small_config(vocab: int = 13) -> ref.Seq2SeqConfig:
    return ref.Seq2SeqConfig(vocab_size=vocab, max_src_len=12, max_tgt_len=12, n_layer_enc=1,
                             n_layer_dec=1, n_head=2, n_embd=16)


def _random_model(seed: int, cls=None, vocab: int = 13) -> nn.Module:
    """A reference Seq2Seq in float64 with weights large enough that its logits differ by
    whole units between tokens: a wrong shift or a wrong position then changes the answer."""
    cls = cls or ref.Seq2Seq
    gen = torch.Generator().manual_seed(seed)
    with torch_seeded():
        model = cls(_small_config(vocab)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * (0.5 if p.dim() > 1 else 0.2))
    return model.eval()


class _Spy(ref.Seq2Seq):
    """The reference model, recording every decoder input it is given."""

    def __init__(self, config):
        super().__init__(config)
        self.seen: list[torch.Tensor] = []

    def decode(self, tgt_in, memory, src_padding_mask):
        self.seen.append(tgt_in.detach().clone())
        return super().decode(tgt_in, memory, src_padding_mask)


def _tokens(gen, shape, vocab, specials) -> torch.Tensor:
    """Random ids that are none of the special ones."""
    allowed = torch.tensor([i for i in range(vocab) if i not in specials])
    return allowed[torch.randint(len(allowed), shape, generator=gen)]


def _source(gen, batch, vocab, specials, pad_id):
    lengths = torch.randint(3, 9, (batch,), generator=gen)
    lengths[0] = 8                                    # one input uses the full width
    src = _tokens(gen, (batch, 8), vocab, specials)
    mask = torch.arange(8)[None, :] >= lengths[:, None]
    return src.masked_fill(mask, pad_id), mask


def check_loss(seq2seq_loss, *, seed: int = 0, lengths=(5, 2, 7), bos_id: int = ref.BOS_ID,
               pad_id: int = ref.PAD_ID, eos_id: int = ref.EOS_ID) -> None:
    """Teacher forcing: decoder input BOS + targets[:, :-1]; mean cross-entropy over non-padding."""
    __tracebackhide__ = True
    vocab = 13
    specials = {bos_id, pad_id, eos_id}
    gen = torch.Generator().manual_seed(seed)
    batch, T = len(lengths), max(lengths)
    src, src_mask = _source(gen, batch, vocab, specials, pad_id)
    targets = _tokens(gen, (batch, T), vocab, specials)
    for b, n in enumerate(lengths):                   # n real tokens, the last one EOS, then padding
        targets[b, n - 1] = eos_id
        targets[b, n:] = pad_id
    model = _random_model(seed, _Spy, vocab)
    expected_in = torch.cat([torch.full_like(targets[:, :1], bos_id), targets[:, :-1]], dim=1)
    expected = ref.seq2seq_loss(model, src, src_mask, targets, bos_id=bos_id, pad_id=pad_id).item()
    model.seen.clear()

    loss = call_learner(seq2seq_loss, model, src.clone(), src_mask.clone(), targets.clone(),
                        bos_id=bos_id, pad_id=pad_id, name="seq2seq_loss")
    if not isinstance(loss, torch.Tensor):
        fail(f"seq2seq_loss returned {describe(loss)}: return the loss tensor (training calls "
             ".backward() on it), not loss.item() or a NumPy value.")
    if loss.numel() != 1:
        fail(f"seq2seq_loss returned a tensor of shape {tuple(loss.shape)}: return one number, the "
             "mean over the non-padding positions (F.cross_entropy's default reduction).")
    if not model.seen:
        fail("seq2seq_loss never ran the decoder: call model(src, src_padding_mask, tgt_in) "
             "(or model.decode) with the shifted targets.")
    fed = model.seen[-1]
    if fed.shape != expected_in.shape or not torch.equal(fed, expected_in):
        if fed.shape == targets.shape and torch.equal(fed, targets):
            why = ("the targets themselves, not shifted: position t then reads the very token it "
                   "must predict, and the model learns to copy")
        elif fed.shape == expected_in.shape and torch.equal(fed[:, 1:], targets[:, 1:]):
            why = ("BOS followed by targets[:, 1:]: that drops the first target token; the "
                   "last one (targets[:, :-1]) is the one never fed")
        elif fed.shape == expected_in.shape and not torch.equal(fed[:, 0], expected_in[:, 0]):
            why = f"something that does not start with BOS (id {bos_id})"
        else:
            why = f"a tensor of shape {tuple(fed.shape)} that is not BOS + targets[:, :-1]"
        fail(f"The decoder was given {why}. Teacher forcing feeds the targets shifted right: "
             "tgt_in = [BOS] + targets[:, :-1].")
    got = float(loss.detach())
    if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9):
        with torch.no_grad():
            logits = ref.Seq2Seq.forward(model, src, src_mask, expected_in)
            flat = logits.reshape(-1, vocab)
            variants = {
                "counts the padded positions: pass ignore_index=pad_id to F.cross_entropy":
                    F.cross_entropy(flat, targets.reshape(-1)).item(),
                "sums instead of averaging over the non-padding positions":
                    F.cross_entropy(flat, targets.reshape(-1), ignore_index=pad_id, reduction="sum").item(),
                "compares the logits with the decoder input instead of the targets":
                    F.cross_entropy(flat, expected_in.reshape(-1), ignore_index=pad_id).item(),
            }
        model.seen.clear()
        diagnosis = next((f"Your loss {text}." for text, value in variants.items()
                          if math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-9)),
                         "Check the flattening: logits (B*T, V) against targets (B*T,).")
        fail(f"The decoder input is right, but the loss is {got:.6g}, expected {expected:.6g}. "
             f"{diagnosis}")
    if loss.grad_fn is None:
        fail("The loss has the right value but no grad_fn: training could not backpropagate "
             "through it. Do not detach it or compute it under torch.no_grad().")
    passed(f"seq2seq_loss feeds BOS + targets[:, :-1] and averages over the "
           f"{sum(lengths)} non-padding targets: {got:.4f}")


# ------------------------------------------------------------------------ greedy decoding

class _Scripted(nn.Module):
    """A stand-in model that writes a fixed script per sequence, if it is fed correctly.

    decode() returns, at every position t of a row, logits whose argmax is script[b][t]
    when that row reads BOS followed by script[b][:t], and the id WRONG otherwise. So a
    decoder loop that feeds anything but BOS and its own previous tokens writes WRONG.
    """

    def __init__(self, scripts: list[list[int]], vocab: int, bos_id: int, wrong: int):
        super().__init__()
        self.scripts, self.vocab, self.bos_id, self.wrong = scripts, vocab, bos_id, wrong
        self.encoded = 0

    def encode(self, src, src_padding_mask):
        self.encoded += 1
        return src.to(torch.float64)[..., None]

    def decode(self, tgt_in, memory, src_padding_mask):
        B, T = tgt_in.shape
        logits = torch.zeros(B, T, self.vocab, dtype=torch.float64)
        for b in range(B):
            row = tgt_in[b].tolist()
            for t in range(T):
                script = self.scripts[b]
                right = row[0] == self.bos_id and row[1:t + 1] == script[:t] and t < len(script)
                logits[b, t, script[t] if right else self.wrong] = 1.0
        return logits

    def forward(self, src, src_padding_mask, tgt_in):
        return self.decode(tgt_in, self.encode(src, src_padding_mask), src_padding_mask)


def _greedy_call(greedy_decode, model, src, mask, **kwargs) -> torch.Tensor:
    __tracebackhide__ = True
    out = call_learner(greedy_decode, model, src.clone(), mask.clone(), name="greedy_decode", **kwargs)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != src.shape[0]:
        fail(f"greedy_decode returned {describe(out)}: return the written tokens as one tensor "
             f"(B, L) = ({src.shape[0]}, L), without the leading BOS.")
    if out.dtype != torch.long:
        fail(f"greedy_decode returned a {out.dtype} tensor: token ids are int64 (argmax gives them).")
    return out


def check_greedy(greedy_decode, *, seed: int = 0, stops=(3, 7), max_len: int = 8,
                 bos_id: int = ref.BOS_ID, eos_id: int = ref.EOS_ID, pad_id: int = ref.PAD_ID) -> None:
    """Greedy decoding on a scripted model whose sequences write EOS after `stops` tokens (or
    never, if a stop exceeds max_len), then against the reference on a random model."""
    __tracebackhide__ = True
    vocab = 13
    specials = {bos_id, eos_id, pad_id}
    gen = torch.Generator().manual_seed(seed)
    ids = dict(max_len=max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)

    # 1. A scripted model: which tokens it is fed, when it stops, what follows EOS.
    wrong = max(i for i in range(vocab) if i not in specials)
    scripts = []
    for stop in stops:
        body = _tokens(gen, (max_len + 2,), vocab, specials | {wrong}).tolist()
        if stop <= max_len:
            body[stop - 1] = eos_id                   # EOS is the stop-th token; the script goes on
        scripts.append(body)
    scripted = _Scripted(scripts, vocab, bos_id, wrong)
    src = torch.zeros(len(stops), 4, dtype=torch.long)   # the scripted model ignores its input
    mask = torch.zeros(len(stops), 4, dtype=torch.bool)
    got = _greedy_call(greedy_decode, scripted, src, mask, **ids)
    length = min(max(stops), max_len)
    expected = torch.full((len(stops), length), pad_id)
    for b, stop in enumerate(stops):
        n = min(stop, length)
        expected[b, :n] = torch.tensor(scripts[b][:n])
    if got.shape != expected.shape or not torch.equal(got, expected):
        shown = f"\nGot      {got.tolist()}\nexpected {expected.tolist()}"
        if got.shape[1] > 0 and torch.all(got[:, 0] == bos_id):
            fail("greedy_decode's output starts with BOS: return the written tokens without it "
                 f"(written[:, 1:]).{shown}")
        if (got == wrong).any():
            fail("The model was not fed what greedy decoding writes: at every step it must read "
                 "BOS followed by all the tokens written so far (not only the last one, not always "
                 f"BOS), and the logits of its last position decide the next token.{shown}")
        if got.shape[1] > length and torch.equal(got[:, :length], expected):
            fail(f"greedy_decode kept writing after every sequence had written EOS: stop as soon "
                 f"as all are finished (here after {length} tokens), or at max_len.{shown}")
        if got.shape[1] < length and torch.equal(got, expected[:, :got.shape[1]]):
            fail(f"greedy_decode stopped after {got.shape[1]} tokens, when the first sequence "
                 f"finished: stop when every sequence has written EOS (here after {length}).{shown}")
        if got.shape == expected.shape:
            after = torch.zeros_like(expected, dtype=torch.bool)
            for b, stop in enumerate(stops):
                after[b, stop:] = True
            if torch.equal(got[~after], expected[~after]):
                fail("After its EOS a sequence must hold pad_id at every later step, whatever the "
                     f"model says: masked_fill the next tokens of finished sequences with pad_id.{shown}")
        fail("greedy_decode's tokens differ from the script the model writes: at every step feed "
             "BOS and every token written so far, and take the argmax of the logits of the LAST "
             f"position, model.decode(written, memory, src_padding_mask)[:, -1, :].{shown}")
    # 2. The reference model with random weights: every token as the reference writes it.
    model = _random_model(seed, vocab=vocab)
    src, mask = _source(gen, 3, vocab, specials, pad_id)
    expected = ref.greedy_decode(model, src, mask, **ids)
    got = _greedy_call(greedy_decode, model, src, mask, **ids)
    if got.shape[1] == expected.shape[1] + 1 and torch.all(got[:, 0] == bos_id):
        fail("greedy_decode's output starts with BOS: return the written tokens without it "
             "(written[:, 1:]).")
    if got.shape != expected.shape or not torch.equal(got, expected):
        fail(f"On a model with random weights greedy_decode wrote\n{got.tolist()}\nwhere the "
             f"reference writes\n{expected.tolist()}.\nAt every step feed BOS and every token written "
             "so far, and take the argmax of the logits of the LAST position, "
             "model.decode(written, memory, src_padding_mask)[:, -1, :].")

    passed(f"greedy_decode writes the reference's tokens, pads after EOS and stops after "
           f"{length} steps (EOS after {tuple(stops)} tokens, max_len={max_len})")


# -------------------------------------------------------------------- the trained model

def _pre_check(model, seq2seq_loss, greedy_decode, seed: int) -> ref.Seq2Seq:
    """Compare the learner's model, loss and decoder with the reference on the untrained model."""
    __tracebackhide__ = True
    config = model.config
    with torch_seeded():
        reference = ref.Seq2Seq(config)
    try:
        reference.load_state_dict(model.state_dict())
    except Exception as exc:
        fail_from(exc, "The model built by Seq2Seq does not have the reference's parameters "
                  f"({type(exc).__name__}: {exc}). Make the CrossAttention tests pass first.")
    src, mask, targets = ref.encode_batch(ref.make_pairs(16, seed + 1000, "train"))
    tgt_in = torch.cat([torch.full_like(targets[:, :1], ref.BOS_ID), targets[:, :-1]], dim=1)
    with torch.no_grad():
        logits = call_learner(model, src, mask, tgt_in, name="Seq2Seq.forward")
        expected = reference(src, mask, tgt_in).numpy()
    got = as_float_array(logits, "The logits of the model built from your pieces", expected.shape)
    if not np.allclose(got, expected, rtol=TOL32, atol=TOL32):
        fail("Before training: the model built from your CrossAttention gives other logits than "
             f"the reference with the same weights, {worst_mismatch(got, expected)}. Make the "
             "CrossAttention tests above pass first.")
    # The loss and the decoder on their own first, quietly: the dates never need padded
    # targets, and an untrained model never writes EOS, so the checks above see more.
    for check, piece, test in ((check_loss, seq2seq_loss, "test_seq2seq_loss"),
                               (check_greedy, greedy_decode, "test_greedy_decode")):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                check(piece)
        except CheckFailure as failure:
            fail_from(failure.__cause__ or failure, f"Before training: {failure}\nMake {test} "
                      "pass first; the model is not trained until every piece is right.")
    loss = call_learner(seq2seq_loss, model, src, mask, targets, name="seq2seq_loss")
    expected_loss = ref.seq2seq_loss(reference, src, mask, targets).item()
    if not isinstance(loss, torch.Tensor) or not math.isclose(float(loss.detach()), expected_loss,
                                                               rel_tol=TOL32, abs_tol=TOL32):
        fail(f"Before training: seq2seq_loss gives {describe(loss) if not isinstance(loss, torch.Tensor) else float(loss.detach())}, "
             f"the reference {expected_loss:.6g}: make test_seq2seq_loss pass first.")
    # The decoder on the reference model: the same forward passes, so the very same tokens.
    got_tokens = call_learner(greedy_decode, reference, src, mask, name="greedy_decode")
    expected_tokens = ref.greedy_decode(reference, src, mask)
    if not isinstance(got_tokens, torch.Tensor) or got_tokens.shape != expected_tokens.shape \
            or not torch.equal(got_tokens, expected_tokens):
        fail("Before training: greedy_decode writes other tokens than the reference's on the "
             "same model: make test_greedy_decode pass first.")
    return reference


def check_trained(Seq2Seq, train, seq2seq_loss, greedy_decode, *, seed: int = 0,
                  held_out_seed: int = 1) -> nn.Module:
    """Build Seq2Seq (the learner's pieces inside), check them against the reference, train
    400 steps with `train` (which uses the learner's loss) and require >= 95 % exact match on
    held-out dates. Returns the trained model."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        if not (isinstance(Seq2Seq, type) and issubclass(Seq2Seq, nn.Module)):
            fail(f"Expected `Seq2Seq` to be the model class, but got {describe(Seq2Seq)}. Re-run "
                 "the cell that defines it.")
        model = call_learner(Seq2Seq, ref.Seq2SeqConfig(), name="Seq2Seq")
        _pre_check(model, seq2seq_loss, greedy_decode, seed)
        history = call_learner(train, model, ref.TrainConfig(seed=seed), name="train")
        pairs = ref.make_pairs(HELD_OUT, held_out_seed, "held_out")
        score = ref.exact_match(model, pairs)
    seconds = history.get("seconds", float("nan")) if isinstance(history, dict) else float("nan")
    if score < THRESHOLD:
        wrong = [(s, t, o) for (s, t), o in zip(pairs[:200], ref.convert(model, [s for s, _ in pairs[:200]]))
                 if o != t][:3]
        shown = "; ".join(f"{s!r} -> {o!r} (expected {t!r})" for s, t, o in wrong)
        fail(f"After training, the model gets {score:.1%} of {HELD_OUT} held-out dates exactly "
             f"right; at least {THRESHOLD:.0%} is needed (the reference gets about 99 %). Examples: "
             f"{shown}. Every piece matched the reference before training, so look for something "
             "that differs only while training: dropout, or state kept between calls.")
    passed(f"trained in {seconds:.1f} s: {score:.1%} of {HELD_OUT} held-out dates converted exactly")
    return model


def check_exact_match(model, greedy_decode, *, seed: int = 601, n: int = HELD_OUT) -> None:
    """The trained model, decoded with the learner's greedy_decode, on other held-out dates."""
    __tracebackhide__ = True
    if not isinstance(model, nn.Module):
        fail(f"Expected the trained model, got {describe(model)}: run the test cell above first.")
    pairs = ref.make_pairs(n, seed, "held_out")
    src, mask, _ = ref.encode_batch(pairs)
    with torch_isolated(seed):
        written = call_learner(greedy_decode, model, src, mask, name="greedy_decode")
    if not isinstance(written, torch.Tensor) or written.dim() != 2:
        fail(f"greedy_decode returned {describe(written)}, expected a (B, L) tensor of token ids.")
    outputs = [ref.TOKENIZER.decode(row.tolist()).split(ref.EOS)[0].rstrip(ref.PAD)
               for row in written]
    score = sum(o == t for o, (_, t) in zip(outputs, pairs)) / n
    if score < THRESHOLD:
        fail(f"Decoded with your greedy_decode, the trained model gets {score:.1%} of {n} other "
             f"held-out dates right; at least {THRESHOLD:.0%} is needed.")
    passed(f"with your greedy_decode: {score:.1%} of {n} other held-out dates converted exactly")
