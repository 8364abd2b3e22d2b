# GENERATED from solutions/16_kv_cache/16_kv_cache.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Incremental decoding with a KV cache for llmref.gpt.GPT: left padding, one layer's attention against cached keys and values, the cached forward pass and generation: the reference for exercise 16_kv_cache."""
import math

import torch

from llmref.block import CausalSelfAttention
from llmref.gpt import GPT


def left_pad(sequences: list, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Put prompts of different lengths in one batch, padded on the LEFT.

    sequences: a list of B non-empty sequences of token ids. Returns (idx (B, T) int64,
    attention_mask (B, T) bool), T the longest length; the mask is True on real tokens.
    Padding on the left puts every prompt's last token in the last column, so that the
    next token of every sequence is read from the same place and appended to the same place.
    """
    if not sequences:
        raise ValueError("left_pad needs at least one sequence, got an empty list")
    lengths = [len(s) for s in sequences]
    if min(lengths) == 0:
        raise ValueError(f"sequence {lengths.index(0)} is empty: every prompt needs at least "
                         "one token to condition on")
    T = max(lengths)
    idx = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        idx[row, T - len(sequence):] = torch.as_tensor(sequence, dtype=torch.long)
        mask[row, T - len(sequence):] = True
    return idx, mask


def attend_with_cache(attn: CausalSelfAttention, x: torch.Tensor,
                      past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                      attention_mask: torch.Tensor | None = None):
    """One layer's causal self-attention for T_new new positions, with the cached past.

    attn: a CausalSelfAttention (its c_attn, c_proj, n_head, dropouts are used as they are).
    x: (B, T_new, C), the new positions' input (after ln_1).
    past_kv: (k, v) this layer returned on the previous call, each (B, n_head, T_past, hs),
             or None for no past (T_past = 0).
    attention_mask: bool (B, T_past + T_new), True on real tokens, False on padding, or None.
    Returns (y (B, T_new, C), (k, v)) with k, v (B, n_head, T_past + T_new, hs): the past
    keys and values followed by the new ones, the cache for the next call. New position i
    sits at index T_past + i and attends to the indices <= T_past + i that are real tokens;
    a padding position attends to itself alone, so that its row stays finite.
    """
    B, T_new, C = x.shape
    h = attn.n_head
    hs = C // h
    q, k, v = attn.c_attn(x).split(C, dim=2)                    # 3 x (B, T_new, C)
    q = q.view(B, T_new, h, hs).transpose(1, 2)                  # (B, h, T_new, hs)
    k = k.view(B, T_new, h, hs).transpose(1, 2)
    v = v.view(B, T_new, h, hs).transpose(1, 2)
    if past_kv is not None:
        k = torch.cat([past_kv[0], k], dim=2)                    # along time: (B, h, T, hs)
        v = torch.cat([past_kv[1], v], dim=2)
    T = k.size(2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)             # (B, h, T_new, T)
    query_at = torch.arange(T - T_new, T, device=x.device).unsqueeze(1)  # (T_new, 1): absolute index
    key_at = torch.arange(T, device=x.device).unsqueeze(0)              # (1, T)
    allowed = key_at <= query_at                                         # (T_new, T)
    if attention_mask is not None:
        real_key = attention_mask.to(torch.bool)[:, None, None, :]       # (B, 1, 1, T)
        allowed = allowed & (real_key | (key_at == query_at))            # (B, 1, T_new, T)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = attn.attn_dropout(torch.softmax(scores, dim=-1))
    y = (weights @ v).transpose(1, 2).reshape(B, T_new, C)
    return attn.resid_dropout(attn.c_proj(y)), (k, v)


def forward_with_cache(model: GPT, idx: torch.Tensor,
                       past: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                       attention_mask: torch.Tensor | None = None):
    """The GPT's forward pass for T_new new tokens after T_past cached ones.

    idx: (B, T_new) int64, the new tokens (a whole prompt to prefill, or one token a step).
    past: the `present` of the previous call, one (k, v) per layer, each
          (B, n_head, T_past, hs); None for none.
    attention_mask: bool (B, T_past + T_new), True on real tokens, or None (all real).
    Returns (logits (B, T_new, V), present): present holds one (k, v) per layer, each
    (B, n_head, T_past + T_new, hs). A token's position is the number of real tokens before
    it in its sequence (T_past + i without a mask), so left padding shifts nothing.
    Raises ValueError naming both lengths if T_past + T_new > block_size.
    """
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be (B, T_new) token ids with T_new >= 1, got shape "
                         f"{tuple(idx.shape)}: an empty prompt gives nothing to condition on")
    B, T_new = idx.shape
    blocks = model.transformer.h
    if past is not None and len(past) != len(blocks):
        raise ValueError(f"past has {len(past)} entries but the model has {len(blocks)} layers: "
                         "pass the `present` of the previous call unchanged")
    T_past = 0 if past is None else past[0][0].size(2)
    T = T_past + T_new
    context = model.config.block_size
    if T > context:
        raise ValueError(f"{T_past} cached + {T_new} new tokens = {T} positions, more than the "
                         f"model's context block_size={context}: start again from the last "
                         f"{context} tokens or generate fewer")
    if attention_mask is not None:
        if tuple(attention_mask.shape) != (B, T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                             f"(B, T_past + T_new) = {(B, T)}: it covers the cached tokens too")
        real = attention_mask.to(torch.long)
        pos = (real.cumsum(dim=1) - 1).clamp(min=0)[:, T_past:]          # (B, T_new)
    else:
        pos = torch.arange(T_past, T, device=idx.device)                 # (T_new,)
    x = model.transformer.drop(model.transformer.wte(idx) + model.transformer.wpe(pos))
    present = []
    for layer, block in enumerate(blocks):
        y, kv = attend_with_cache(block.attn, block.ln_1(x),
                                  None if past is None else past[layer], attention_mask)
        x = x + y
        x = x + block.mlp(block.ln_2(x))
        present.append(kv)
    logits = model.lm_head(model.transformer.ln_f(x))                    # (B, T_new, V)
    return logits, present


@torch.no_grad()
def generate_with_cache(model: GPT, idx: torch.Tensor, max_new_tokens: int,
                        temperature: float = 1.0, top_k: int | None = None,
                        generator: torch.Generator | None = None,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """GPT.generate with a KV cache: append max_new_tokens tokens to idx (B, T), return
    (B, T + max_new_tokens).

    One forward_with_cache over the whole prompt (prefill), then one call per new token
    with the cache. Each step samples exactly as GPT.generate does (divide by temperature,
    top_k, softmax, torch.multinomial(probs, 1, generator=generator)), so without cropping
    the tokens are GPT.generate's. attention_mask (B, T) bool marks real tokens of a
    left-padded batch. Raises ValueError if T + max_new_tokens - 1 > block_size (the cache
    cannot crop), for temperature <= 0 and for top_k < 1.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; for greedy decoding "
                         "use top_k=1")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 (1 is greedy decoding), got {top_k}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be (B, T) token ids with T >= 1, got shape "
                         f"{tuple(idx.shape)}: an empty prompt gives nothing to condition on")
    B, T = idx.shape
    context = model.config.block_size
    if T + max_new_tokens - 1 > context:
        raise ValueError(f"a prompt of {T} tokens and max_new_tokens={max_new_tokens} need "
                         f"{T + max_new_tokens - 1} positions in the cache, more than the "
                         f"model's context block_size={context}: shorten one of them")
    if max_new_tokens == 0:
        return idx
    mode_on_entry = model.training  # restored on the way out, even after an error
    model.eval()                                                 # dropout off while sampling
    try:
        mask = attention_mask
        logits, past = forward_with_cache(model, idx, None, mask)  # prefill: the whole prompt
        for step in range(max_new_tokens):
            last = logits[:, -1, :] / temperature                  # (B, V): the next token only
            if top_k is not None:
                kth = torch.topk(last, min(top_k, last.size(-1))).values[:, -1:]
                last = last.masked_fill(last < kth, float("-inf"))
            token = torch.multinomial(torch.softmax(last, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, token], dim=1)
            if step == max_new_tokens - 1:
                break                                              # the last token needs no forward pass
            if mask is not None:
                mask = torch.cat([mask.to(torch.bool), mask.new_ones((B, 1), dtype=torch.bool)], dim=1)
            logits, past = forward_with_cache(model, token, past, mask)
    finally:
        model.train(mode_on_entry)
    return idx
