"""llmref.gpt against an independent reference: the same forward pass assembled from torch
built-ins (F.embedding, nn.MultiheadAttention with a causal mask, F.layer_norm, F.linear,
F.gelu) on the same weights in float64; causality; the tie; sampling (greedy, seeded,
top-k, the distribution temperature gives); the parameter formula against built models;
bad input."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gpt_fixtures import one_thread, random_tokens, seeded_gpt  # noqa: F401 (one_thread: autouse)
from llmref.gpt import GPT, GPTConfig, count_parameters


# float64: eps is 2.2e-16; the two forward passes round in different orders through a few
# blocks of width <= 32, which costs ~1e-14 on logits of order 10. 1e-10 is far above that
# and far below any real difference (a missing bias or norm moves logits by ~1e-1).
TOL64 = 1e-10

CONFIGS = {
    "bias": GPTConfig(vocab_size=23, block_size=12, n_layer=2, n_head=2, n_embd=16),
    "no bias": GPTConfig(vocab_size=23, block_size=12, n_layer=2, n_head=2, n_embd=16, bias=False),
    "one layer, one head": GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8),
    "three layers, four heads": GPTConfig(vocab_size=40, block_size=16, n_layer=3, n_head=4, n_embd=32),
}


def _independent_logits(model: GPT, idx: torch.Tensor, *, wte_in=None, wte_out=None) -> torch.Tensor:
    """The forward pass from torch built-ins and the model's state_dict (not its modules).

    wte_in / wte_out: the token matrix used to embed and to score, by default the model's;
    passing two separate leaves lets a test see the gradient of each use."""
    config = model.config
    C, T = config.n_embd, idx.shape[1]
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    wte_in = sd["transformer.wte.weight"] if wte_in is None else wte_in
    wte_out = sd["transformer.wte.weight"] if wte_out is None else wte_out

    def norm(prefix, x):
        return F.layer_norm(x, (C,), sd[prefix + ".weight"], sd.get(prefix + ".bias"))

    x = F.embedding(idx, wte_in) + F.embedding(torch.arange(T), sd["transformer.wpe.weight"])
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = blocked, torch's convention
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        mha = nn.MultiheadAttention(C, config.n_head, bias=config.bias, batch_first=True).to(x.dtype)
        mha_state = {"in_proj_weight": sd[p + "attn.c_attn.weight"],
                     "out_proj.weight": sd[p + "attn.c_proj.weight"]}
        if config.bias:
            mha_state.update({"in_proj_bias": sd[p + "attn.c_attn.bias"],
                              "out_proj.bias": sd[p + "attn.c_proj.bias"]})
        mha.load_state_dict(mha_state)
        h = norm(p + "ln_1", x)
        x = x + mha(h, h, h, attn_mask=future, need_weights=False)[0]
        h = norm(p + "ln_2", x)
        hidden = F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd.get(p + "mlp.c_fc.bias")))
        x = x + F.linear(hidden, sd[p + "mlp.c_proj.weight"], sd.get(p + "mlp.c_proj.bias"))
    return norm("transformer.ln_f", x) @ wte_out.T


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_an_independent_forward_pass(name):
    config = CONFIGS[name]
    model = seeded_gpt(config)
    for length in (1, config.block_size // 2, config.block_size):
        idx = random_tokens(config, 3, length)
        with torch.no_grad():
            logits, loss = model(idx)
        assert loss is None and logits.shape == (3, length, config.vocab_size)
        torch.testing.assert_close(logits, _independent_logits(model, idx), rtol=TOL64, atol=TOL64)


@pytest.mark.parametrize("name", ["bias", "no bias"])
def test_loss_is_the_mean_negative_log_likelihood_of_the_next_token(name):
    config = CONFIGS[name]
    model = seeded_gpt(config)
    window = random_tokens(config, 4, config.block_size + 1)
    idx, targets = window[:, :-1], window[:, 1:]  # a slice, as callers cut batches: not contiguous
    assert not targets.is_contiguous()
    with torch.no_grad():
        logits, loss = model(idx, targets)
    log_probs = torch.log_softmax(_independent_logits(model, idx), dim=-1)
    expected = -log_probs.gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(loss, expected, rtol=TOL64, atol=TOL64)
    assert loss.dim() == 0


def test_gradient_of_the_tied_matrix_sums_both_uses():
    config = CONFIGS["bias"]
    model = seeded_gpt(config)
    idx, targets = random_tokens(config, 2, 7), random_tokens(config, 2, 7, seed=2)
    model(idx, targets)[1].backward()
    wte = model.transformer.wte.weight.detach()
    wte_in, wte_out = wte.clone().requires_grad_(), wte.clone().requires_grad_()
    logits = _independent_logits(model, idx, wte_in=wte_in, wte_out=wte_out)
    F.cross_entropy(logits.reshape(-1, config.vocab_size), targets.reshape(-1)).backward()
    torch.testing.assert_close(model.transformer.wte.weight.grad, wte_in.grad + wte_out.grad,
                               rtol=TOL64, atol=TOL64)
    assert wte_in.grad.abs().sum() > 0 and wte_out.grad.abs().sum() > 0  # both uses contribute


@pytest.mark.parametrize("name", ["bias", "three layers, four heads"])
def test_causal_a_later_token_never_changes_earlier_logits(name):
    config = CONFIGS[name]
    model = seeded_gpt(config)
    idx = random_tokens(config, 2, config.block_size)
    with torch.no_grad():
        base = model(idx)[0]
        for t in range(config.block_size):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1) % config.vocab_size
            logits = model(changed)[0]
            torch.testing.assert_close(logits[:, :t], base[:, :t], rtol=0, atol=1e-12)
            assert (logits[:, t] - base[:, t]).abs().max() > 1e-3


def test_too_long_a_sequence_is_refused_naming_both_lengths():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match=r"length 11 .*block_size=8"):
        model(torch.zeros(1, 11, dtype=torch.long))


# ------------------------------------------------------------------- names, tie, count

def test_parameter_names_are_gpt2s_and_the_head_is_tied():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    block = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
             "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
             "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]
    # GPT-2's checkpoint names (Hugging Face and nanoGPT), less the attention-mask buffers.
    expected = (["transformer.wte.weight", "transformer.wpe.weight"]
                + [f"transformer.h.0.{n}" for n in block]
                + ["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"])
    assert sorted(model.state_dict()) == sorted(expected)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.bias is None
    assert "lm_head.weight" not in dict(model.named_parameters())  # the shared matrix once


@pytest.mark.parametrize("overrides", [
    {}, {"bias": False}, {"n_layer": 0}, {"n_layer": 1, "n_embd": 8, "n_head": 1, "block_size": 1},
    {"vocab_size": 65, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 96},
], ids=str)
def test_count_parameters_equals_the_number_of_a_built_model(overrides):
    config = GPTConfig(**overrides)
    model = GPT(config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())


# GPT-2's four sizes, with their published parameter counts (a tied head, biases, wpe of 1024).
GPT2 = {
    "small": (dict(n_layer=12, n_head=12, n_embd=768), 124_439_808),
    "medium": (dict(n_layer=24, n_head=16, n_embd=1024), 354_823_168),
    "large": (dict(n_layer=36, n_head=20, n_embd=1280), 774_030_080),
    "xl": (dict(n_layer=48, n_head=25, n_embd=1600), 1_557_611_200),
}


@pytest.mark.parametrize("size", GPT2)
def test_count_parameters_gives_gpt2s_published_sizes(size):
    sizes, published = GPT2[size]
    config = GPTConfig(vocab_size=50257, block_size=1024, **sizes)
    assert count_parameters(config) == published
    if size == "small":  # built without memory on the meta device: the formula is the model's count
        with torch.device("meta"):
            model = GPT(config)
        assert sum(p.numel() for p in model.parameters()) == published


# --------------------------------------------------------------------- initialisation

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("overrides", [{}, {"vocab_size": 65, "n_embd": 64, "n_layer": 2, "block_size": 32},
                                       {"n_layer": 1, "bias": False}], ids=str)
def test_a_fresh_model_starts_near_ln_v_with_gpt2s_initialisation(overrides, seed):
    config = GPTConfig(**overrides)
    torch.manual_seed(seed)
    model = GPT(config)
    idx = random_tokens(config, 8, min(64, config.block_size), seed=seed)
    targets = random_tokens(config, 8, min(64, config.block_size), seed=seed + 100)
    with torch.no_grad():
        loss = model(idx, targets)[1].item()
    # The margin the check uses (autograder/checks/gpt.py, INITIAL_LOSS_MARGIN), with room.
    assert abs(loss - math.log(config.vocab_size)) < 0.08
    params = dict(model.named_parameters())
    assert abs(params["transformer.wte.weight"].std().item() / 0.02 - 1) < 0.05
    c_proj = params["transformer.h.0.attn.c_proj.weight"].std().item()
    assert abs(c_proj / (0.02 / math.sqrt(2 * config.n_layer)) - 1) < 0.05
    if config.bias:
        assert params["transformer.h.0.mlp.c_fc.bias"].abs().max() == 0


# --------------------------------------------------------------------------- sampling

def _greedy(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding written independently: argmax of the independent forward pass."""
    for _ in range(steps):
        context = idx[:, -model.config.block_size:]
        logits = _independent_logits(model, context)[:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


def test_top_k_one_is_greedy_decoding_and_the_context_is_cropped():
    config = CONFIGS["bias"]
    model = seeded_gpt(config)
    prompt = random_tokens(config, 3, config.block_size + 5)  # longer than the context from the start
    tokens = model.generate(prompt, 10, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, _greedy(model, prompt, 10))


def test_sampling_is_reproducible_with_a_seeded_generator_and_leaves_the_global_one_alone():
    config = CONFIGS["bias"]
    model = seeded_gpt(config)
    prompt = random_tokens(config, 2, 3)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        runs.append(model.generate(prompt, 20, temperature=0.9, top_k=7,
                                   generator=torch.Generator().manual_seed(42)))
        assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(runs[0], runs[1])
    other = model.generate(prompt, 20, temperature=0.9, top_k=7, generator=torch.Generator().manual_seed(43))
    assert not torch.equal(other, runs[0])


def test_top_k_samples_only_among_the_k_largest_logits():
    config = CONFIGS["three layers, four heads"]
    model = seeded_gpt(config)
    prompt = random_tokens(config, 4, 2)
    k = 3
    tokens = model.generate(prompt, 25, temperature=2.0, top_k=k, generator=torch.Generator().manual_seed(0))
    for step in range(prompt.shape[1], tokens.shape[1]):
        context = tokens[:, :step][:, -config.block_size:]
        logits = _independent_logits(model, context)[:, -1]
        rank = (logits > logits.gather(1, tokens[:, step:step + 1])).sum(-1)  # how many are larger
        assert (rank < k).all()


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, 4)])
def test_sampled_frequencies_follow_the_tempered_top_k_distribution(temperature, top_k):
    config = CONFIGS["bias"]
    model = seeded_gpt(config)
    n = 20_000
    prompt = random_tokens(config, 1, 4).expand(n, 4)
    tokens = model.generate(prompt, 1, temperature=temperature, top_k=top_k,
                            generator=torch.Generator().manual_seed(0))[:, -1]
    logits = _independent_logits(model, prompt[:1])[0, -1] / temperature
    if top_k is not None:
        logits[logits < logits.sort(descending=True).values[top_k - 1]] = -math.inf
    p = torch.softmax(logits, -1)
    frequency = torch.bincount(tokens, minlength=config.vocab_size).double() / n
    # Each frequency is a mean of n draws: its std is sqrt(p (1 - p) / n) <= 0.0036; 5 of them
    # (and 1e-9 for the tokens top-k removed) is a bound a correct sampler meets every time.
    assert ((frequency - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-9).all()


def test_generate_keeps_idx_and_the_models_mode():
    config = CONFIGS["bias"]
    model = seeded_gpt(config)
    prompt = random_tokens(config, 2, 4)
    copy = prompt.clone()
    for training in (True, False):
        model.train(training)
        tokens = model.generate(prompt, 3, generator=torch.Generator().manual_seed(0))
        assert model.training is training
        assert torch.equal(prompt, copy) and torch.equal(tokens[:, :4], prompt)
        assert tokens.shape == (2, 7) and tokens.dtype == torch.int64
    assert torch.equal(model.generate(prompt, 0), prompt)


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"top_k": 0}, "top_k must be at least 1"),
], ids=str)
def test_generate_refuses_bad_arguments(kwargs, match):
    model = seeded_gpt(CONFIGS["bias"])
    with pytest.raises(ValueError, match=match):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 1, **kwargs)


def test_top_k_above_the_vocabulary_keeps_every_token():
    model = seeded_gpt(CONFIGS["bias"])
    prompt = random_tokens(CONFIGS["bias"], 2, 3)
    everything = model.generate(prompt, 8, top_k=100, generator=torch.Generator().manual_seed(3))
    plain = model.generate(prompt, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(everything, plain)
