"""Checks for exercise 16_kv_cache: attention against cached keys and values, the cached
forward pass of a GPT (prefill, then one token at a time, left padding included), and
generation with the cache.

Every check builds a small :class:`llmref.gpt.GPT` (or one attention layer) with seeded random
weights, runs the learner's function on it in float32 and compares with the model's own
*full* forward pass, run in float64 on the same weights: that is the independent reference
(no cache, no incremental anything; a padded sequence is compared with its own unpadded
forward pass). The reference incremental implementation, llmref.kvcache, supplies the
expected cache contents and, on a mismatch, the answers each common mistake gives (the
causal mask not offset by the past, positions restarting at 0, padding ignored, ...), so that
a failure names what to fix.

The forward-pass checks run the learner's ``forward_with_cache`` with the reference
``attend_with_cache`` in its place (and the generation check the learner's loop on the
reference ``forward_with_cache``), so that each graded cell grades one function.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Callable

import numpy as np
import torch

from llmref import kvcache as ref
from llmref.block import CausalSelfAttention
from llmref.gpt import GPT, GPTConfig

from ._core import (CheckFailure, refuse_shortcuts, as_float_array, call_learner, describe, fail, fail_from,
                    find_bad_values, global_replaced, passed, torch_isolated, worst_mismatch)
from .gpt import _random_state
from .multihead import FORBIDDEN as ATTENTION_FUNCTIONS

# Attention computed whole by a library kernel, or a library's cache: the exercise done for
# the learner (the checks' own references may use them).
SHORTCUTS = {**ATTENTION_FUNCTIONS, "transformers": "transformers"}
WHY_BY_HAND = ("Write the new keys' and values' concatenation to the cache, the scores, the mask "
               "(causal and padding, offset by the cached length) and the softmax yourself: that "
               "bookkeeping is what the exercise is about.")

# Every size distinct (V=23, block_size=19, C=16, 2 heads of 8, 3 layers, batch 3), so that a
# tensor built from the wrong size cannot broadcast by luck and a message's numbers are unique.
SMALL = dict(vocab_size=23, block_size=19, n_layer=3, n_head=2, n_embd=16)

# The learner runs in float32, the reference (the full forward pass) in float64 on the same
# float32 weights. The cached float32 computation adds the same products in other groupings;
# over 20 seeds of every check here it differs from float64 by at most 4.3e-6 on logits up to
# 13 in size, and np.allclose(rtol=1e-5, atol=1e-5) allows 1e-5 plus 1e-5 of the value: a
# margin of 2 or more. Every mistake the checks name moves some logit by more than 1e-2.
TOL = 1e-5


def _config(**overrides) -> GPTConfig:
    unknown = set(overrides) - {f.name for f in fields(GPTConfig)}
    assert not unknown, f"not GPTConfig fields: {unknown}"
    return GPTConfig(**{**SMALL, **overrides})


def _models(config: GPTConfig, seed: int) -> tuple[GPT, GPT]:
    """The same seeded random GPT twice: float32 for the learner, float64 for the reference."""
    state = _random_state(config, seed)
    with torch.random.fork_rng(devices=[]):
        model, model64 = GPT(config), GPT(config).double()
    model.load_state_dict(state)
    model64.load_state_dict(state)
    return model.eval(), model64.eval()


def _tokens(config: GPTConfig, seed: int, *shape: int) -> torch.Tensor:
    return torch.randint(config.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


def _compare(actual: np.ndarray, expected: np.ndarray, what: str, explain: Callable[[], str],
             against: str = "the full forward pass") -> None:
    __tracebackhide__ = True
    bad = find_bad_values(actual)
    if bad:
        fail(f"{what} contain {bad}. {explain()}")
    if not np.allclose(actual, expected, rtol=TOL, atol=TOL):
        fail(f"{what} differ from {against}: {worst_mismatch(actual, expected)}. {explain()}")


def _matches(actual: np.ndarray, candidate: np.ndarray) -> bool:
    return candidate.shape == actual.shape and np.allclose(actual, candidate, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ the cache's shape

def _check_cache(present: Any, config: GPTConfig, B: int, T: int, T_new: int, who: str) -> list:
    """`present` is one (k, v) per layer, each (B, n_head, T, hs): 2·n_layer·T·C numbers per
    sequence. Returns it as a list of pairs of tensors."""
    __tracebackhide__ = True
    L, h, C = config.n_layer, config.n_head, config.n_embd
    shape = (B, h, T, C // h)
    if not isinstance(present, (list, tuple)) or len(present) != L:
        fail(f"{who} should return as its cache a list of one (k, v) pair per layer, "
             f"{L} here, but returned {describe(present)}"
             + (f" of length {len(present)}" if isinstance(present, (list, tuple)) else "") + ".")
    for layer, pair in enumerate(present):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or \
                not all(isinstance(t, torch.Tensor) for t in pair):
            fail(f"Layer {layer}'s cache entry is {describe(pair)}: it should be a pair of "
                 f"tensors (k, v), each {shape}.")
        for name, tensor in zip("kv", pair):
            got = tuple(tensor.shape)
            if got == shape:
                continue
            if got == (B, h, T_new, C // h) and T_new != T:
                fail(f"Layer {layer}'s cached {name} has shape {got}: only the {T_new} new "
                     f"positions. Return the past keys and values followed by the new ones, "
                     f"{shape}: the returned cache replaces the one passed in.")
            fail(f"Layer {layer}'s cached {name} has shape {got}, expected (B, n_head, "
                 f"T_past + T_new, head_size) = {shape}.")
    numbers = sum(k.numel() + v.numel() for k, v in present)
    expected = 2 * L * T * C * B
    assert numbers == expected, (numbers, expected)  # the shapes above make it so
    return list(present)


# ------------------------------------------------------------------ attend_with_cache

def _attention(config: GPTConfig, seed: int) -> tuple[CausalSelfAttention, CausalSelfAttention]:
    model, model64 = _models(config, seed)
    return model.transformer.h[0].attn, model64.transformer.h[0].attn


def _call_attend(fn, attn, x, past_kv, mask, B, T, T_new, C, config) -> tuple[np.ndarray, list]:
    __tracebackhide__ = True
    args = (attn, x.clone(), None if past_kv is None else tuple(t.clone() for t in past_kv),
            None if mask is None else mask.clone())
    try:
        with refuse_shortcuts(SHORTCUTS, "attend_with_cache", WHY_BY_HAND):
            result = call_learner(fn, *args, name="attend_with_cache")
    except CheckFailure as failure:
        cause = failure.__cause__
        if past_kv is not None and isinstance(cause, RuntimeError):
            fail_from(cause, f"{failure}\nIt broke once there was a past. The cached keys are "
                      f"(B, n_head, T_past, head_size): concatenate the past and the new ones "
                      f"along the time axis, dim=2, the axis that grows by one each step.")
        raise
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"attend_with_cache should return a pair (y, (k, v)), but returned {describe(result)}.")
    y, kv = result
    kv = _check_cache([kv], GPTConfig(n_layer=1, n_head=config.n_head, n_embd=C), B, T, T_new,
                      "attend_with_cache")[0]
    return as_float_array(y, "attend_with_cache's output y", (B, T_new, C)), kv


def _explain_attend(fn_variant, actual, mask_used: bool, T_past: int, T_new: int) -> str:
    variants = [
        (dict(offset=False), "the causal mask is not offset by the past: new position i sits at "
                             f"index T_past + i of the keys (T_past = {T_past} here), so it may "
                             "attend to every key up to T_past + i, not only to the first i + 1"),
        (dict(causal=False), "nothing is masked: with several new positions, an earlier one "
                             "attends to the later ones. Mask key s for the query at index "
                             "T_past + i when s > T_past + i"),
    ]
    if mask_used:
        variants.insert(0, (dict(padding=False), "the padding mask is ignored: real tokens attend "
                                                 "to padding keys. Mask the keys whose "
                                                 "attention_mask is False"))
    for kwargs, message in variants:
        if _matches(actual, fn_variant(**kwargs)):
            return f"Your output matches attention where {message}."
    return ("Compute q, k, v of the new positions with c_attn, append k and v to the past along "
            "the time axis, and let new position i attend to the keys 0 .. T_past + i.")


def _attend_variant(attn64, x64, past64, mask, *, offset=True, causal=True, padding=True):
    """Reference attention for the new positions, the way a mistake computes it."""
    B, T_new, C = x64.shape
    h, hs = attn64.n_head, C // attn64.n_head
    with torch.no_grad():
        q, k, v = attn64.c_attn(x64).split(C, dim=2)
        q, k, v = (t.view(B, T_new, h, hs).transpose(1, 2) for t in (q, k, v))
        if past64 is not None:
            k, v = torch.cat([past64[0], k], dim=2), torch.cat([past64[1], v], dim=2)
        T = k.size(2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)
        query_at = torch.arange(T - T_new, T)[:, None] if offset else torch.arange(T_new)[:, None]
        key_at = torch.arange(T)[None, :]
        allowed = key_at <= query_at if causal else torch.ones(T_new, T, dtype=torch.bool)
        if padding and mask is not None:
            allowed = allowed & (mask[:, None, None, :] | (key_at == torch.arange(T - T_new, T)[:, None]))
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(B, T_new, C)
        return attn64.c_proj(y).numpy()


def check_attend(attend_with_cache, *, seed: int = 1, batch: int = 3, prompt: int = 5,
                 chunk: int = 4, steps: int = 3, **overrides) -> None:
    """One attention layer, its input given in pieces: a prompt with no past, then a chunk of
    several positions after it, then single positions, each with the cache the previous call
    returned. Every piece's output equals the layer's full causal attention over the whole
    input (CausalSelfAttention.forward, float64) at its positions, and the returned keys and
    values are the past ones followed by the new ones."""
    __tracebackhide__ = True
    config = _config(**overrides)
    C = config.n_embd
    T_all = prompt + chunk + steps
    assert T_all <= config.block_size
    with torch_isolated(seed):
        attn, attn64 = _attention(config, seed)
        x = torch.randn(batch, T_all, C, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            full = attn64(x.double()).numpy()
            kfull, vfull = _split_kv(attn64, x.double())
        pieces = [(0, prompt), (prompt, prompt + chunk)] + \
                 [(t, t + 1) for t in range(prompt + chunk, T_all)]
        past, past64 = None, None
        for start, end in pieces:
            T_new = end - start
            where = (f"the {'prompt' if start == 0 else 'chunk' if T_new > 1 else 'step'} of "
                     f"positions {start}..{end - 1} (T_past={start}, T_new={T_new})")
            with torch.no_grad():
                y, kv = _call_attend(attend_with_cache, attn, x[:, start:end], past, None,
                                     batch, end, T_new, C, config)
            _compare(y, full[:, start:end], f"The outputs for {where}",
                     lambda: _explain_attend(
                         lambda **kw: _attend_variant(attn64, x[:, start:end].double(), past64,
                                                      None, **kw), y, False, start, T_new),
                     "the layer's full causal attention")
            for name, got, want in (("keys", kv[0], kfull), ("values", kv[1], vfull)):
                got = got.detach().double().numpy()
                if not np.allclose(got, want[:, :, :end], rtol=TOL, atol=TOL):
                    fail(f"After {where} the returned {name} are not those of positions 0..{end - 1} "
                         f"in order: {worst_mismatch(got, want[:, :, :end])}. Return the past "
                         f"{name} followed by the new ones, (B, n_head, T_past + T_new, head_size), "
                         "split into heads as CausalSelfAttention does.")
            past = kv
            past64 = (torch.from_numpy(kfull[:, :, :end]), torch.from_numpy(vfull[:, :, :end]))
    passed(f"attend_with_cache equals full causal attention: a prompt of {prompt}, a chunk of "
           f"{chunk} after it, then {steps} single steps; the cache grows to {T_all} positions")


def _split_kv(attn64, x64) -> tuple[np.ndarray, np.ndarray]:
    B, T, C = x64.shape
    h = attn64.n_head
    _, k, v = attn64.c_attn(x64).split(C, dim=2)
    return tuple(t.view(B, T, h, C // h).transpose(1, 2).numpy() for t in (k, v))


def check_attend_padding(attend_with_cache, *, seed: int = 2, lengths=(3, 6, 1), steps: int = 2,
                         **overrides) -> None:
    """Left-padded sequences in one batch: at every real position the output equals the
    layer's full causal attention over that sequence alone (no padding at all); padding
    positions stay finite (each attends to itself), so that nothing NaN reaches a later layer."""
    __tracebackhide__ = True
    config = _config(**overrides)
    C = config.n_embd
    B, P = len(lengths), max(lengths)
    T_all = P + steps
    with torch_isolated(seed):
        attn, attn64 = _attention(config, seed)
        x = torch.randn(B, T_all, C, generator=torch.Generator().manual_seed(seed))
        mask = torch.ones(B, T_all, dtype=torch.bool)
        for b, n in enumerate(lengths):
            mask[b, :P - n] = False
        alone = []
        with torch.no_grad():
            for b, n in enumerate(lengths):
                alone.append(attn64(x[b:b + 1, P - n:].double())[0].numpy())
        past = None
        pieces = [(0, P)] + [(t, t + 1) for t in range(P, T_all)]
        for start, end in pieces:
            T_new = end - start
            with torch.no_grad():
                y, kv = _call_attend(attend_with_cache, attn, x[:, start:end], past, mask[:, :end],
                                     B, end, T_new, C, config)
            bad = find_bad_values(y)
            if bad:
                fail(f"With left padding your output contains {bad}. A padding position whose "
                     "keys are all masked has a softmax of 0/0: let every padding position "
                     "attend to itself (its own key is never masked), so that its row stays "
                     "finite. Its output is never read, but a NaN there becomes a NaN key and "
                     "value in the next layer, and 0 * NaN is NaN in every real row.")
            for b, n in enumerate(lengths):
                first = max(start, P - n)               # the first real position in this piece
                actual = y[b, first - start:]
                expected = alone[b][first - (P - n): end - (P - n)]
                if actual.shape[0] == 0:
                    continue

                def explain(b=b, start=start, end=end, first=first):
                    x64 = x[:, start:end].double()
                    past64 = None if past is None else tuple(t.double() for t in past)
                    wrong = _attend_variant(attn64, x64, past64, mask[:, :end], padding=False)
                    if _matches(actual, wrong[b, first - start:]):
                        return ("Your output matches attention that ignores the padding mask: "
                                "real tokens attend to padding keys. Mask the keys whose "
                                "attention_mask is False, as well as the future.")
                    return ("Each query may attend to the keys at or before it whose "
                            "attention_mask is True.")
                _compare(actual, expected,
                         f"The outputs of sequence {b} (length {n}, left-padded to {P}) at "
                         f"positions {first}..{end - 1}", explain,
                         "the layer's causal attention over this sequence alone")
            past = kv
    passed(f"attend_with_cache with left padding (lengths {list(lengths)}, then {steps} steps) "
           "equals attention over each sequence alone; padding rows finite")


# ------------------------------------------------------------------ forward_with_cache

def _call_forward(fn, model, idx, past, mask, config, B, T, T_new) -> tuple[np.ndarray, list]:
    __tracebackhide__ = True
    args = (model, idx.clone(), None if past is None else [tuple(kv) for kv in past],
            None if mask is None else mask.clone())
    with refuse_shortcuts(SHORTCUTS, "forward_with_cache", WHY_BY_HAND):
        result = call_learner(fn, *args, name="forward_with_cache")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"forward_with_cache should return a pair (logits, present), but returned "
             f"{describe(result)}.")
    logits, present = result
    present = _check_cache(present, config, B, T, T_new, "forward_with_cache")
    return as_float_array(logits, "The logits (first returned value)", (B, T_new, config.vocab_size)), present


def _forward_variant(model64, idx, past64, mask, *, offset=True, mask_positions=True,
                     mask_attention=True, own_layer=True) -> tuple[np.ndarray, list]:
    """The reference's cached forward pass, the way a mistake computes it."""
    B, T_new = idx.shape
    T_past = 0 if past64 is None else past64[0][0].size(2)
    with torch.no_grad():
        if mask is not None and mask_positions:
            pos = (mask.long().cumsum(1) - 1).clamp(min=0)[:, T_past:]
        else:
            pos = torch.arange(T_past if offset else 0, (T_past if offset else 0) + T_new)
        t = model64.transformer
        x = t.wte(idx) + t.wpe(pos)
        present = []
        for layer, block in enumerate(t.h):
            past_kv = None if past64 is None else past64[layer if own_layer else 0]
            y, kv = ref.attend_with_cache(block.attn, block.ln_1(x), past_kv,
                                          mask if mask_attention else None)
            x = x + y
            x = x + block.mlp(block.ln_2(x))
            present.append(kv)
        return model64.lm_head(t.ln_f(x)).numpy(), present


def _past64(model64, prefix, mask=None):
    """The reference's float64 cache after `prefix` (None for an empty one)."""
    if prefix.shape[1] == 0:
        return None
    return _forward_variant(model64, prefix, None, mask)[1]


FORWARD_MISTAKES = [
    (dict(offset=False), "the positions restart at 0 in every call: the new tokens are at "
                         "positions T_past .. T_past + T_new - 1, so look up wpe there"),
    (dict(own_layer=False), "every layer is given layer 0's cache: pass past[i] to layer i"),
    (dict(mask_positions=False), "the positions are counted from the first column, padding "
                                 "included: a token's position is the number of real tokens "
                                 "before it in its sequence (from the attention_mask's running "
                                 "count), so that left padding shifts nothing"),
    (dict(mask_attention=False), "the attention_mask is not passed to the layers' attention: "
                                 "real tokens attend to padding"),
]


def _explain_forward(model64, idx, past64, mask, actual, rows=slice(None), columns=slice(None)) -> str:
    for kwargs, message in FORWARD_MISTAKES:
        if mask is None and ("mask_positions" in kwargs or "mask_attention" in kwargs):
            continue
        wrong = _forward_variant(model64, idx, past64, mask, **kwargs)[0][rows, columns]
        if _matches(actual, wrong):
            return f"Your logits match a forward pass where {message}."
    return ("Each layer: x + attention(ln_1(x)) against that layer's cache, then x + "
            "mlp(ln_2(x)); then ln_f and lm_head, as GPT.forward does.")


def check_incremental(forward_with_cache, *, seed: int = 3, batch: int = 2,
                      prompt_lengths=(1, 6), **overrides) -> None:
    """For each prompt length: prefill the whole prompt in one call, then feed one token at a
    time with the returned cache until the context is full. Every call's logits equal the
    model's full forward pass (float64) at the same positions; the cache holds one (k, v)
    per layer of (B, n_head, T, head_size), 2·n_layer·T·n_embd numbers per sequence."""
    __tracebackhide__ = True
    config = _config(**overrides)
    L, C, block = config.n_layer, config.n_embd, config.block_size
    with torch_isolated(seed):
        model, model64 = _models(config, seed)
        with global_replaced(forward_with_cache, "attend_with_cache", ref.attend_with_cache):
            for P in prompt_lengths:
                idx = _tokens(config, seed + P, batch, block)
                with torch.no_grad():
                    full = model64(idx)[0].numpy()
                past = None
                pieces = [(0, P)] + [(t, t + 1) for t in range(P, block)]
                for start, end in pieces:
                    piece = idx[:, start:end]
                    with torch.no_grad():
                        logits, present = _call_forward(forward_with_cache, model, piece, past,
                                                        None, config, batch, end, end - start)
                    numbers = sum(k.numel() + v.numel() for k, v in present) // batch
                    if numbers != 2 * L * end * C:  # cannot happen once the shapes are right
                        fail(f"The cache holds {numbers} numbers per sequence after {end} tokens, "
                             f"expected 2·n_layer·T·n_embd = {2 * L * end * C}.")
                    what = ("The prefill's logits" if start == 0 else
                            f"The logits of the step at position {start} (after a prompt of {P})")
                    _compare(logits, full[:, start:end], what,
                             lambda: _explain_forward(model64, piece, _past64(model64, idx[:, :start]),
                                                      None, logits))
                    past = present
            _check_refused(forward_with_cache, model, config, past, batch)
    passed(f"forward_with_cache: prefill of {' and '.join(map(str, prompt_lengths))} tokens, then "
           f"one token a step to the context of {block}, equals the full forward pass; the cache "
           f"is 2·n_layer·T·n_embd = 2·{L}·T·{C} numbers per sequence; a longer one is refused")


def _check_refused(fn, model, config, full_cache, batch) -> None:
    """With the context full, one more token is refused; so is a prompt longer than it."""
    __tracebackhide__ = True
    block = config.block_size
    one = _tokens(config, 0, batch, 1)
    too_long = _tokens(config, 1, batch, block + 2)
    for call, args, total in (
            (f"forward_with_cache(model, one token, past of {block} positions)",
             (model, one, full_cache, None), block + 1),
            (f"forward_with_cache(model, a prompt of {block + 2} tokens)",
             (model, too_long, None, None), block + 2)):
        try:
            with torch.no_grad():
                fn(*args)
        except ValueError as exc:
            text = str(exc)
            if str(block) in text and str(total) in text:
                continue
            fail(f"{call} raised ValueError({text!r}), which does not name both lengths: say "
                 f"that {total} positions exceed the context block_size={block}.")
        except NotImplementedError as exc:
            fail_from(exc, "forward_with_cache still raises NotImplementedError.")
        except Exception as exc:
            fail_from(exc, f"{call} raised {type(exc).__name__}: {exc}. Refuse it yourself, "
                      f"before any work, with a ValueError naming both lengths ({total} "
                      f"positions, block_size={block}): the position table has {block} rows.")
        else:
            fail(f"{call} returned logits: the model has no position beyond block_size={block}. "
                 f"Raise a ValueError naming both lengths ({total} and {block}).")


def check_left_padding(forward_with_cache, *, seed: int = 4, lengths=(4, 9, 1), steps: int = 3,
                       **overrides) -> None:
    """Prompts of different lengths, left-padded into one batch with an attention_mask:
    prefill, then `steps` single tokens per sequence with the mask extended by a True column
    each step. At every real position the logits equal that sequence's own full forward pass,
    unpadded (its first real token at position 0)."""
    __tracebackhide__ = True
    config = _config(**overrides)
    B, P = len(lengths), max(lengths)
    assert P + steps <= config.block_size
    with torch_isolated(seed):
        model, model64 = _models(config, seed)
        rows = [_tokens(config, 100 * seed + b, 1, n + steps)[0] for b, n in enumerate(lengths)]
        idx, mask = ref.left_pad([r[:n].tolist() for r, n in zip(rows, lengths)])
        later = torch.stack([r[n:] for r, n in zip(rows, lengths)])          # (B, steps)
        with torch.no_grad():
            alone = [model64(r[None])[0][0].numpy() for r in rows]             # (n + steps, V)
        with global_replaced(forward_with_cache, "attend_with_cache", ref.attend_with_cache):
            past = None
            pieces = [(idx, mask)] + [
                (later[:, s:s + 1], torch.cat([mask, torch.ones(B, s + 1, dtype=torch.bool)], 1))
                for s in range(steps)]
            for i, (piece, piece_mask) in enumerate(pieces):
                T, T_new = piece_mask.shape[1], piece.shape[1]
                with torch.no_grad():
                    logits, present = _call_forward(forward_with_cache, model, piece, past,
                                                    piece_mask, config, B, T, T_new)
                for b, n in enumerate(lengths):
                    if i == 0:
                        actual, expected, cols = logits[b, P - n:], alone[b][:n], slice(P - n, None)
                        what = f"The prefill's logits of sequence {b} (length {n}, left-padded to {P})"
                    else:
                        actual, expected, cols = logits[b], alone[b][n + i - 1: n + i], slice(None)
                        what = f"Step {i}'s logits of sequence {b} (length {n}, left-padded to {P})"
                    _compare(actual, expected, what, lambda: _explain_forward(
                        model64, piece, _past64(model64, torch.cat([idx, later[:, :i - 1]], 1),
                                                piece_mask[:, :-1]) if i else None,
                        piece_mask, actual, b, cols))
                past = present
    passed(f"forward_with_cache with left padding (lengths {list(lengths)} in one batch, then "
           f"{steps} steps) equals each sequence's own unpadded forward pass")


# ------------------------------------------------------------------ generate_with_cache

# Captured at import: a check run on llmref.kvcache itself swaps these names in that module.
_REFERENCE_FORWARD = ref.forward_with_cache


class _Recorder:
    """The reference forward_with_cache, noting the shapes of each call."""

    def __init__(self):
        self.calls: list[tuple[int, int, bool]] = []   # (T_past, T_new, mask given)

    def __call__(self, model, idx, past=None, attention_mask=None):
        T_past = 0 if past is None else past[0][0].size(2)
        self.calls.append((T_past, idx.shape[1], attention_mask is not None))
        return _REFERENCE_FORWARD(model, idx, past, attention_mask)


def _run_generate(fn, model, prompt, max_new, mask=None, **kwargs) -> tuple[Any, _Recorder]:
    __tracebackhide__ = True
    recorder = _Recorder()
    extra = {} if mask is None else {"attention_mask": mask.clone()}
    try:
        with global_replaced(fn, "forward_with_cache", recorder), \
                torch.random.fork_rng(devices=[]):
            tokens = call_learner(fn, model, prompt.clone(), max_new, name="generate_with_cache",
                                  **kwargs, **extra)
    except CheckFailure as failure:
        if mask is not None and "attention_mask has shape" in str(failure):
            fail_from(failure.__cause__, f"{failure}\nExtend the attention_mask by one True column "
                      "for each token appended: it covers the cached tokens and the new one.")
        raise
    if not isinstance(tokens, torch.Tensor):
        fail(f"generate_with_cache returned {describe(tokens)}: return the token ids, "
             "(B, T + max_new_tokens), int64.")
    B, T = prompt.shape
    if tuple(tokens.shape) != (B, T + max_new):
        fail(f"generate_with_cache returned shape {tuple(tokens.shape)} for a prompt {(B, T)} and "
             f"max_new_tokens={max_new}: expected {(B, T + max_new)}, the prompt followed by the new tokens.")
    return tokens, recorder


def _check_calls(recorder: _Recorder, T: int, max_new: int) -> None:
    __tracebackhide__ = True
    calls = recorder.calls
    if not calls:
        fail("generate_with_cache never called forward_with_cache: prefill the prompt with one "
             "call, then call it once per sampled token with the cache it returned.")
    if calls[0] != (0, T, calls[0][2]):
        fail(f"The first forward_with_cache call had T_past={calls[0][0]}, T_new={calls[0][1]}: "
             f"start with the whole prompt of {T} tokens and no past (the prefill).")
    rest = calls[1:]
    if all(T_past == 0 for T_past, _, _ in rest) and rest:
        fail("Each step calls forward_with_cache on the whole sequence with no past: that is "
             "decoding without a cache, recomputing every position every step. Pass only the "
             "new token, (B, 1), with the cache (present) the previous call returned.")
    for step, (T_past, T_new, _) in enumerate(rest):
        if (T_past, T_new) != (T + step, 1):
            fail(f"Step {step + 1} called forward_with_cache with T_past={T_past}, T_new={T_new}; "
                 f"expected T_past={T + step}, T_new=1. Keep the present each call returns as "
                 "the next call's past, and feed only the token just sampled.")
    if len(calls) not in (max_new, max_new + 1):
        fail(f"{len(calls)} forward passes for {max_new} new tokens: one prefill, then one per "
             "sampled token (the last one needs none).")


def check_generate(generate_with_cache, *, seed: int = 5, batch: int = 2, prompt: int = 4,
                   max_new_tokens: int = 9, temperature: float = 0.8, top_k: int | None = 5,
                   lengths=(2, 6, 3), **overrides) -> None:
    """Run on the reference forward_with_cache: (1) sampling with temperature and top-k gives
    exactly GPT.generate's tokens from identically seeded generators, with one prefill and one
    cached call per new token; (2) greedily (top_k=1) a left-padded batch gives each prompt's
    own greedy continuation; (3) a prompt and max_new_tokens that fill the context exactly
    work, one more token is refused with a ValueError naming the lengths."""
    __tracebackhide__ = True
    config = _config(**overrides)
    block = config.block_size
    with torch_isolated(seed):
        model, _ = _models(config, seed)
        idx = _tokens(config, seed, batch, prompt)
        draw = 1000 + seed
        expected = model.generate(idx.clone(), max_new_tokens, temperature=temperature, top_k=top_k,
                                  generator=torch.Generator().manual_seed(draw))
        model.train()
        tokens, recorder = _run_generate(generate_with_cache, model, idx, max_new_tokens,
                                         temperature=temperature, top_k=top_k,
                                         generator=torch.Generator().manual_seed(draw))
        if not model.training:
            fail("generate_with_cache left a model that was in training mode in eval mode: "
                 "remember model.training and restore it with model.train(...) at the end.")
        model.eval()
        _check_calls(recorder, prompt, max_new_tokens)
        if not torch.equal(tokens, expected):
            differ = (tokens != expected).nonzero()[0]
            fail(f"With temperature={temperature}, top_k={top_k}, new token "
                 f"{int(differ[1]) - prompt} of row {int(differ[0])} is {int(tokens[tuple(differ)])}, "
                 f"GPT.generate's is {int(expected[tuple(differ)])} (identically seeded generators). "
                 "Sample as GPT.generate does: the last position's logits / temperature, top-k "
                 "with -inf, softmax, torch.multinomial(probs, 1, generator=generator).")
        # (2) left padding, greedy
        rows = [_tokens(config, 50 + b, 1, n)[0] for b, n in enumerate(lengths)]
        padded, mask = ref.left_pad([r.tolist() for r in rows])
        steps = 4
        tokens, recorder = _run_generate(generate_with_cache, model, padded, steps, mask=mask,
                                         top_k=1, generator=torch.Generator().manual_seed(draw))
        if recorder.calls and not all(given for _, _, given in recorder.calls):
            fail("With an attention_mask, some forward_with_cache calls got none: pass it to "
                 "every call, extended by a True column for each token appended.")
        for b, r in enumerate(rows):
            own = model.generate(r[None].clone(), steps, top_k=1)[0, len(r):]
            if not torch.equal(tokens[b, padded.shape[1]:], own):
                fail(f"Greedy decoding of a left-padded batch: row {b} (a prompt of {len(r)} tokens "
                     f"padded to {padded.shape[1]}) continues {tokens[b, padded.shape[1]:].tolist()}, "
                     f"alone it continues {own.tolist()}. Pass the attention_mask to every call, "
                     "extended by one True column (the new token is real) each step.")
        # (3) the context, exactly
        P = 5
        fill = block - P + 1                        # positions needed: P + fill - 1 = block
        edge = _tokens(config, 7, 1, P)
        try:
            tokens, _ = _run_generate(generate_with_cache, model, edge, fill, top_k=1)
        except CheckFailure as failure:
            raise CheckFailure(
                f"{failure}\nA prompt of {P} and max_new_tokens={fill} need {block} positions in "
                f"the cache, exactly the context block_size={block}: the last token sampled is "
                "never fed back, so it needs no position. Refuse only when "
                "T + max_new_tokens - 1 > block_size.") from failure.__cause__
        try:
            with global_replaced(generate_with_cache, "forward_with_cache", _Recorder()):
                generate_with_cache(model, edge.clone(), fill + 1, top_k=1)
        except ValueError as exc:
            if str(block) not in str(exc):
                fail(f"generate_with_cache(prompt of {P}, max_new_tokens={fill + 1}) raised "
                     f"ValueError({str(exc)!r}), which does not name the context block_size={block}.")
        except Exception as exc:
            fail_from(exc, f"generate_with_cache(prompt of {P}, max_new_tokens={fill + 1}) raised "
                      f"{type(exc).__name__}: {exc}. Refuse it at the start with a ValueError "
                      f"naming the lengths: it needs {block + 1} positions, block_size={block}.")
        else:
            fail(f"generate_with_cache(prompt of {P}, max_new_tokens={fill + 1}) returned tokens, "
                 f"but that needs {block + 1} positions, more than block_size={block}: refuse it "
                 "at the start with a ValueError naming the lengths.")
    passed(f"generate_with_cache gives GPT.generate's tokens (one prefill, then one cached step "
           f"per token), each row of a left-padded batch its own continuation, and fills the "
           f"context of {block} exactly")
