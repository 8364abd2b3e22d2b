"""Wrong versions of attend_with_cache, forward_with_cache and generate_with_cache
(exercise 16_kv_cache).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "16_kv_cache"

RIGHT_ATTEND = '''def attend_with_cache(attn, x, past_kv=None, attention_mask=None):
    B, T_new, C = x.shape
    h = attn.n_head
    hs = C // h
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q = q.view(B, T_new, h, hs).transpose(1, 2)
    k = k.view(B, T_new, h, hs).transpose(1, 2)
    v = v.view(B, T_new, h, hs).transpose(1, 2)
    if past_kv is not None:
        past_k, past_v = past_kv
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
    T = k.shape[2]
    T_past = T - T_new
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)
    rows = torch.arange(T_past, T).view(-1, 1)
    cols = torch.arange(T).view(1, -1)
    allowed = cols <= rows
    if attention_mask is not None:
        allowed = allowed & (attention_mask.view(B, 1, 1, T) | (cols == rows))
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = attn.attn_dropout(torch.softmax(scores, dim=-1))
    y = (weights @ v).transpose(1, 2).reshape(B, T_new, C)
    y = attn.resid_dropout(attn.c_proj(y))
    return y, (k, v)
'''

RIGHT_FORWARD = '''def forward_with_cache(model, idx, past=None, attention_mask=None):
    B, T_new = idx.shape
    T_past = 0 if past is None else past[0][0].shape[2]
    T = T_past + T_new
    if T > model.config.block_size:
        raise ValueError(f"{T} positions exceed block_size {model.config.block_size}")
    if attention_mask is None:
        pos = torch.arange(T_past, T)
    else:
        counts = attention_mask.long().cumsum(dim=1) - 1
        pos = counts.clamp(min=0)[:, T_past:]
    x = model.transformer.wte(idx) + model.transformer.wpe(pos)
    x = model.transformer.drop(x)
    present = []
    for i, block in enumerate(model.transformer.h):
        layer_past = None if past is None else past[i]
        y, kv = attend_with_cache(block.attn, block.ln_1(x), layer_past, attention_mask)
        x = x + y
        x = x + block.mlp(block.ln_2(x))
        present.append(kv)
    logits = model.lm_head(model.transformer.ln_f(x))
    return logits, present
'''

RIGHT_GENERATE = '''@torch.no_grad()
def generate_with_cache(model, idx, max_new_tokens, temperature=1.0, top_k=None,
                        generator=None, attention_mask=None):
    if temperature <= 0:
        raise ValueError("temperature must be positive; use top_k=1 for greedy decoding")
    if top_k is not None and top_k < 1:
        raise ValueError("top_k must be at least 1")
    B, T = idx.shape
    if T + max_new_tokens - 1 > model.config.block_size:
        raise ValueError(f"{T} + {max_new_tokens} - 1 positions exceed block_size {model.config.block_size}")
    was_training = model.training
    model.eval()
    mask = attention_mask
    logits, past = forward_with_cache(model, idx, None, mask)
    for step in range(max_new_tokens):
        logits = logits[:, -1, :] / temperature
        if top_k is not None:
            values, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < values[:, [-1]]] = float("-inf")
        probs = torch.softmax(logits, dim=-1)
        next_token = torch.multinomial(probs, num_samples=1, generator=generator)
        idx = torch.cat((idx, next_token), dim=1)
        if step < max_new_tokens - 1:
            if mask is not None:
                mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.bool)], dim=1)
            logits, past = forward_with_cache(model, next_token, past, mask)
    model.train(was_training)
    return idx
'''


MISTAKES = [
    # --- attend_with_cache
    Mistake("causal_mask_not_offset", "attend_with_cache", edited(RIGHT_ATTEND,
        ("rows = torch.arange(T_past, T).view(-1, 1)", "rows = torch.arange(T_new).view(-1, 1)"),
    ), says="not offset by the past"),
    Mistake("only_new_keys_returned", "attend_with_cache", edited(RIGHT_ATTEND,
        ("    if past_kv is not None:\n"
         "        past_k, past_v = past_kv\n"
         "        k = torch.cat([past_k, k], dim=2)\n"
         "        v = torch.cat([past_v, v], dim=2)\n",
         "    new_k, new_v = k, v\n"
         "    if past_kv is not None:\n"
         "        past_k, past_v = past_kv\n"
         "        k = torch.cat([past_k, k], dim=2)\n"
         "        v = torch.cat([past_v, v], dim=2)\n"),
        ("    return y, (k, v)\n", "    return y, (new_k, new_v)\n"),
    ), says="only the"),
    Mistake("padding_mask_ignored", "attend_with_cache", edited(RIGHT_ATTEND,
        ("    if attention_mask is not None:\n"
         "        allowed = allowed & (attention_mask.view(B, 1, 1, T) | (cols == rows))\n", ""),
    ), says="ignores the padding mask"),
    Mistake("padding_rows_nan", "attend_with_cache", edited(RIGHT_ATTEND,
        ("allowed & (attention_mask.view(B, 1, 1, T) | (cols == rows))",
         "allowed & attention_mask.view(B, 1, 1, T)"),
    ), says="attend to itself"),
    Mistake("cache_grown_along_heads", "attend_with_cache", edited(RIGHT_ATTEND,
        ("k = torch.cat([past_k, k], dim=2)", "k = torch.cat([past_k, k], dim=1)"),
        ("v = torch.cat([past_v, v], dim=2)", "v = torch.cat([past_v, v], dim=1)"),
    ), says="along the time axis"),
    # --- forward_with_cache
    Mistake("positions_not_offset", "forward_with_cache", edited(RIGHT_FORWARD,
        ("pos = torch.arange(T_past, T)", "pos = torch.arange(T_new)"),
    ), says="positions restart at 0"),
    Mistake("positions_ignore_padding", "forward_with_cache", edited(RIGHT_FORWARD,
        ("    if attention_mask is None:\n"
         "        pos = torch.arange(T_past, T)\n"
         "    else:\n"
         "        counts = attention_mask.long().cumsum(dim=1) - 1\n"
         "        pos = counts.clamp(min=0)[:, T_past:]\n",
         "    pos = torch.arange(T_past, T)\n"),
    ), says="padding included"),
    Mistake("mask_not_passed_to_layers", "forward_with_cache", edited(RIGHT_FORWARD,
        ("block.ln_1(x), layer_past, attention_mask)", "block.ln_1(x), layer_past)"),
    ), says="not passed to the layers"),
    Mistake("first_layer_cache_everywhere", "forward_with_cache", edited(RIGHT_FORWARD,
        ("layer_past = None if past is None else past[i]", "layer_past = None if past is None else past[0]"),
    ), says="layer 0's cache"),
    Mistake("context_not_checked", "forward_with_cache", edited(RIGHT_FORWARD,
        ("    if T > model.config.block_size:\n"
         "        raise ValueError(f\"{T} positions exceed block_size {model.config.block_size}\")\n", ""),
    ), says="naming both lengths"),
    # --- generate_with_cache
    Mistake("no_cache_used", "generate_with_cache", edited(RIGHT_GENERATE,
        ("logits, past = forward_with_cache(model, next_token, past, mask)",
         "logits, past = forward_with_cache(model, idx, None, mask)"),
    ), says="decoding without a cache"),
    Mistake("mask_not_extended", "generate_with_cache", edited(RIGHT_GENERATE,
        ("            if mask is not None:\n"
         "                mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.bool)], dim=1)\n", ""),
    ), says="Extend the attention_mask"),
    Mistake("context_limit_off_by_one", "generate_with_cache", edited(RIGHT_GENERATE,
        ("if T + max_new_tokens - 1 > model.config.block_size:",
         "if T + max_new_tokens > model.config.block_size:"),
    ), says="the last token sampled is never fed back"),
    Mistake("cache_not_kept", "generate_with_cache", edited(RIGHT_GENERATE,
        ("logits, past = forward_with_cache(model, next_token, past, mask)",
         "logits, _ = forward_with_cache(model, next_token, past, mask)"),
    ), says="Keep the present"),
    # PyTorch's attention kernel on the cache: the right numbers, the exercise done for you.
    Mistake("attend_by_sdpa", "attend_with_cache", edited(RIGHT_ATTEND,
        ("    weights = attn.attn_dropout(torch.softmax(scores, dim=-1))\n"
         "    y = (weights @ v).transpose(1, 2).reshape(B, T_new, C)\n",
         "    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)\n"
         "    y = y.transpose(1, 2).reshape(B, T_new, C)\n"),
    ), says="uses F.scaled_dot_product_attention, which does the exercise for you"),
]
