"""llmref.kvcache against independent references: the model's own full forward pass (no
cache) on every prefix, each padded sequence alone, GPT.generate's tokens, and Hugging Face's
GPT2LMHeadModel on the same weights with its own past_key_values, attention_mask and
position_ids; the size of the cache; bad input."""
import pytest
import torch

from gpt_fixtures import one_thread, random_tokens, seeded_gpt  # noqa: F401 (one_thread: autouse)
from llmref.gpt import GPTConfig
from llmref.kvcache import attend_with_cache, forward_with_cache, generate_with_cache, left_pad


# float64: the cached and full passes add the same products in other groupings, which costs
# ~1e-15 on logits of order 10; 1e-10 is far above that and far below any real difference.
TOL64 = 1e-10

CONFIGS = {
    "bias": GPTConfig(vocab_size=23, block_size=17, n_layer=2, n_head=2, n_embd=16),
    "no bias, 4 heads": GPTConfig(vocab_size=31, block_size=13, n_layer=3, n_head=4, n_embd=32, bias=False),
    "one layer, one head": GPTConfig(vocab_size=11, block_size=9, n_layer=1, n_head=1, n_embd=8),
}


def _incremental(model, idx, cuts, mask=None):
    """Logits of idx fed in pieces ending at `cuts`, concatenated, and the final cache."""
    pieces, past, start = [], None, 0
    for end in cuts:
        logits, past = forward_with_cache(model, idx[:, start:end], past,
                                          None if mask is None else mask[:, :end])
        pieces.append(logits)
        start = end
    return torch.cat(pieces, dim=1), past


@pytest.mark.parametrize("name", CONFIGS)
def test_one_token_at_a_time_equals_the_full_forward_pass(name):
    config = CONFIGS[name]
    model = seeded_gpt(config)
    idx = random_tokens(config, 3, config.block_size)
    with torch.no_grad():
        full = model(idx)[0]
        cached, present = _incremental(model, idx, range(1, config.block_size + 1))
    torch.testing.assert_close(cached, full, rtol=0, atol=TOL64)
    # 2 * n_layer * T * n_embd numbers per sequence, in (B, n_head, T, head_size) pairs
    assert sum(k.numel() + v.numel() for k, v in present) == \
        2 * config.n_layer * config.block_size * config.n_embd * 3
    assert all(k.shape == v.shape == (3, config.n_head, config.block_size,
                                      config.n_embd // config.n_head) for k, v in present)


@pytest.mark.parametrize("cuts", [(5, 6, 7, 17), (1, 9, 17), (17,), (3, 4, 10, 12, 16, 17)])
def test_any_split_into_prefill_and_chunks_equals_the_full_pass(cuts):
    config = CONFIGS["bias"]
    model = seeded_gpt(config, seed=2)
    idx = random_tokens(config, 2, 17, seed=2)
    with torch.no_grad():
        full = model(idx)[0]
        cached, _ = _incremental(model, idx, cuts)
    torch.testing.assert_close(cached, full, rtol=0, atol=TOL64)


@pytest.mark.parametrize("name", CONFIGS)
def test_left_padded_batch_equals_each_sequence_alone(name):
    config = CONFIGS[name]
    model = seeded_gpt(config, seed=3)
    lengths = [2, config.block_size - 4, 1, 5]
    steps = 4
    rows = [random_tokens(config, n + steps, seed=10 + b).tolist() for b, n in enumerate(lengths)]
    idx, mask = left_pad([r[:n] for r, n in zip(rows, lengths)])
    P = idx.shape[1]
    later = torch.tensor([r[n:] for r, n in zip(rows, lengths)])
    everything = torch.cat([idx, later], dim=1)
    full_mask = torch.cat([mask, torch.ones(len(rows), steps, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        cached, _ = _incremental(model, everything, [P] + list(range(P + 1, P + steps + 1)), full_mask)
        for b, (row, n) in enumerate(zip(rows, lengths)):
            alone = model(torch.tensor([row]))[0][0]
            torch.testing.assert_close(cached[b, P - n:], alone, rtol=0, atol=TOL64)
            assert torch.isfinite(cached[b]).all()  # padding rows stay finite


def test_positions_count_real_tokens_only():
    """The same prompt behind 0, 3 or 6 padding columns gives the same logits."""
    config = CONFIGS["bias"]
    model = seeded_gpt(config, seed=4)
    prompt = random_tokens(config, 7, seed=4).tolist()
    logits = []
    for pad in (0, 3, 6):
        idx, mask = left_pad([prompt, [1] * (7 + pad)])
        with torch.no_grad():
            logits.append(forward_with_cache(model, idx, None, mask)[0][0, pad:])
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=TOL64)
    torch.testing.assert_close(logits[2], logits[0], rtol=0, atol=TOL64)


def test_an_all_true_mask_changes_nothing():
    config = CONFIGS["no bias, 4 heads"]
    model = seeded_gpt(config, seed=5)
    idx = random_tokens(config, 2, 9, seed=5)
    with torch.no_grad():
        plain, _ = _incremental(model, idx, (4, 5, 9))
        masked, _ = _incremental(model, idx, (4, 5, 9), torch.ones(2, 9, dtype=torch.bool))
    torch.testing.assert_close(masked, plain, rtol=0, atol=TOL64)


def test_attention_alone_equals_the_layer_and_keeps_the_keys():
    config = CONFIGS["no bias, 4 heads"]
    attn = seeded_gpt(config, seed=6).transformer.h[1].attn
    x = torch.randn(2, 10, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = attn(x)
        y1, past = attend_with_cache(attn, x[:, :6])
        y2, (k, v) = attend_with_cache(attn, x[:, 6:], past)
        _, k_all, v_all = attn.c_attn(x).split(32, dim=2)
    torch.testing.assert_close(torch.cat([y1, y2], 1), full, rtol=0, atol=TOL64)
    torch.testing.assert_close(k, k_all.view(2, 10, 4, 8).transpose(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(v, v_all.view(2, 10, 4, 8).transpose(1, 2), rtol=0, atol=0)


def test_an_empty_past_is_no_past():
    config = CONFIGS["bias"]
    attn = seeded_gpt(config, seed=7).transformer.h[0].attn
    x = torch.randn(2, 5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    empty = torch.zeros(2, 2, 0, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(attend_with_cache(attn, x, (empty, empty))[0],
                                   attend_with_cache(attn, x)[0], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*past_key_values.*:FutureWarning")
def test_matches_hugging_face_gpt2_with_its_cache_and_left_padding():
    """GPT2LMHeadModel on the same weights (its Conv1D weights are our Linear's, transposed;
    exact GELU), fed the same left-padded batch with its own attention_mask, position_ids and
    past_key_values: the same logits at every real position and the same cached keys and
    values. Float64, so any difference beyond rounding is a real one."""
    transformers = pytest.importorskip("transformers")
    config = GPTConfig(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=16)
    model = seeded_gpt(config, seed=8)
    hf_config = transformers.GPT2Config(
        vocab_size=29, n_positions=16, n_embd=16, n_layer=2, n_head=2, activation_function="gelu",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5)
    hf = transformers.GPT2LMHeadModel(hf_config).to(torch.float64).eval()
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            tensor = tensor.t()                         # Conv1D stores (in, out)
        state[name] = tensor
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(name.endswith("attn.bias") or name.endswith("masked_bias")
                                  for name in missing), (missing, unexpected)

    lengths, steps = [3, 8, 1], 3
    rows = [random_tokens(config, n + steps, seed=20 + b).tolist() for b, n in enumerate(lengths)]
    idx, mask = left_pad([r[:n] for r, n in zip(rows, lengths)], pad_id=0)
    later = torch.tensor([r[n:] for r, n in zip(rows, lengths)])
    ours, past = forward_with_cache(model, idx, None, mask)
    with torch.no_grad():
        position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
        out = hf(idx, attention_mask=mask.long(), position_ids=position_ids, use_cache=True)
        hf_past = out.past_key_values
        for b, n in enumerate(lengths):
            P = idx.shape[1]
            torch.testing.assert_close(ours[b, P - n:], out.logits[b, P - n:], rtol=0, atol=1e-9)
        for s in range(steps):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], dim=1)
            token = later[:, s:s + 1]
            ours, past = forward_with_cache(model, token, past, mask)
            position = mask.long().sum(1, keepdim=True) - 1
            out = hf(token, attention_mask=mask.long(), position_ids=position,
                     past_key_values=hf_past, use_cache=True)
            hf_past = out.past_key_values
            torch.testing.assert_close(ours, out.logits, rtol=0, atol=1e-9)
    real = mask[:, None, :, None]                           # padding keys are never read
    for layer, (k, v) in enumerate(past):
        hf_k, hf_v = (hf_past[layer][0], hf_past[layer][1]) if not hasattr(hf_past, "layers") \
            else (hf_past.layers[layer].keys, hf_past.layers[layer].values)
        torch.testing.assert_close(k * real, hf_k * real, rtol=0, atol=1e-9)
        torch.testing.assert_close(v * real, hf_v * real, rtol=0, atol=1e-9)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, 4), (2.0, 1)])
def test_generation_gives_generate_s_tokens(temperature, top_k):
    config = CONFIGS["bias"]
    model = seeded_gpt(config, seed=9, dtype=torch.float32)
    idx = random_tokens(config, 3, 5, seed=9)
    expected = model.generate(idx, 13, temperature=temperature, top_k=top_k,
                              generator=torch.Generator().manual_seed(1))
    tokens = generate_with_cache(model, idx, 13, temperature=temperature, top_k=top_k,
                                 generator=torch.Generator().manual_seed(1))
    assert torch.equal(tokens, expected)          # 5 + 13 - 1 = 17 positions: the whole context


def test_greedy_generation_of_a_padded_batch_continues_each_prompt_alone():
    config = CONFIGS["no bias, 4 heads"]
    model = seeded_gpt(config, seed=10, dtype=torch.float32)
    prompts = [random_tokens(config, n, seed=30 + b).tolist() for b, n in enumerate((4, 1, 7))]
    idx, mask = left_pad(prompts)
    tokens = generate_with_cache(model, idx, 5, top_k=1, attention_mask=mask)
    for b, prompt in enumerate(prompts):
        alone = model.generate(torch.tensor([prompt]), 5, top_k=1)
        assert tokens[b, idx.shape[1]:].tolist() == alone[0, len(prompt):].tolist()


def test_generation_restores_the_mode_and_zero_tokens_is_the_prompt():
    config = CONFIGS["bias"]
    model = seeded_gpt(config, seed=11, dtype=torch.float32).train()
    idx = random_tokens(config, 2, 3, seed=11)
    assert generate_with_cache(model, idx, 2).shape == (2, 5)
    assert model.training
    assert torch.equal(generate_with_cache(model, idx, 0), idx)


def test_left_pad_layout():
    idx, mask = left_pad([[5, 6], [7], [1, 2, 3]], pad_id=9)
    assert idx.tolist() == [[9, 5, 6], [9, 9, 7], [1, 2, 3]]
    assert mask.tolist() == [[False, True, True], [False, False, True], [True, True, True]]
    assert idx.dtype == torch.int64 and mask.dtype == torch.bool


# ------------------------------------------------------------------------ bad input

def test_too_long_is_refused_naming_both_lengths():
    config = CONFIGS["bias"]                      # block_size 17
    model = seeded_gpt(config)
    idx = random_tokens(config, 2, 17, seed=0)
    _, past = forward_with_cache(model, idx)
    with pytest.raises(ValueError, match=r"17 cached \+ 1 new tokens = 18 positions.*block_size=17"):
        forward_with_cache(model, idx[:, :1], past)
    with pytest.raises(ValueError, match=r"= 19 positions.*block_size=17"):
        forward_with_cache(model, random_tokens(config, 1, 19, seed=0))
    with pytest.raises(ValueError, match=r"need 18 positions.*block_size=17"):
        generate_with_cache(model, idx[:, :6], 13)


@pytest.mark.parametrize("call, says", [
    (lambda m: forward_with_cache(m, torch.zeros(2, 0, dtype=torch.long)), "empty prompt"),
    (lambda m: forward_with_cache(m, torch.zeros(2, 3, dtype=torch.long),
                                  attention_mask=torch.ones(2, 4, dtype=torch.bool)), r"expected \(B, T_past"),
    (lambda m: forward_with_cache(m, torch.zeros(2, 1, dtype=torch.long),
                                  past=forward_with_cache(m, torch.zeros(2, 3, dtype=torch.long))[1][:1]),
     "past has 1 entries but the model has 2 layers"),
    (lambda m: generate_with_cache(m, torch.zeros(1, 0, dtype=torch.long), 3), "empty prompt"),
    (lambda m: generate_with_cache(m, torch.zeros(1, 2, dtype=torch.long), 3, temperature=0.0), "temperature"),
    (lambda m: generate_with_cache(m, torch.zeros(1, 2, dtype=torch.long), 3, top_k=0), "top_k"),
    (lambda m: generate_with_cache(m, torch.zeros(1, 2, dtype=torch.long), -1), "max_new_tokens"),
    (lambda m: left_pad([]), "at least one sequence"),
    (lambda m: left_pad([[1, 2], []]), "sequence 1 is empty"),
])
def test_bad_input_is_refused_clearly(call, says):
    model = seeded_gpt(CONFIGS["bias"], dtype=torch.float32)
    with pytest.raises(ValueError, match=says):
        call(model)
