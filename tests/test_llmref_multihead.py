"""llmref.multihead against an independent reference: torch.nn.MultiheadAttention on the same
weights (batch_first=True, dropout 0), every mask combination, self- and cross-attention."""
import pytest
import torch
from torch import nn

from llmref.multihead import MultiHeadAttention

# float32: eps is 1.2e-7. PyTorch scales q before q @ k^T and fuses the bias into one
# matmul over the stacked projections, we divide the scores afterwards: the same numbers
# rounded in another order differ by ~1e-6 on values of order 1, hence 1e-5.
TOL32 = 1e-5
# float64: eps is 2.2e-16, so the same reordering costs ~1e-15; 1e-10 is far above that
# and far below any real bug (a missing scale or bias moves values by ~1e-1).
TOL64 = 1e-10

TOLERANCES = {torch.float32: TOL32, torch.float64: TOL64}

# (batch, L, S or None for self-attention, embed_dim, num_heads)
SHAPES = {
    "self-attention": (2, 6, None, 16, 4),
    "cross-attention, S > L": (3, 4, 7, 12, 3),
    "cross-attention, S < L": (2, 5, 3, 8, 2),
    "one head": (2, 5, None, 8, 1),
}
MASKS = ["none", "attn_mask", "key_padding_mask", "both"]


def _pair(embed_dim, num_heads, bias, dtype, seed=0):
    """torch's module with random weights (non-zero biases) and ours with a copy of them."""
    gen = torch.Generator().manual_seed(seed)
    theirs = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (embed_dim ** -0.5 if p.dim() == 2 else 0.5))
    theirs = theirs.to(dtype)
    mine = MultiHeadAttention(embed_dim, num_heads, bias=bias).to(dtype)
    mine.load_state_dict(theirs.state_dict())
    return mine, theirs


def _inputs(batch, q_len, k_len, embed_dim, masks, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, q_len, embed_dim, generator=gen, dtype=dtype)
    if k_len is None:
        key = value = query
        k_len = q_len
    else:
        key = torch.randn(batch, k_len, embed_dim, generator=gen, dtype=dtype)
        value = torch.randn(batch, k_len, embed_dim, generator=gen, dtype=dtype)
    kwargs = {}
    if masks in ("attn_mask", "both"):
        if k_len == q_len:
            attn_mask = torch.triu(torch.ones(q_len, k_len, dtype=torch.bool), diagonal=1)
        else:
            attn_mask = torch.rand(q_len, k_len, generator=gen) < 0.5
            attn_mask[:, 0] = False  # every query keeps a key: a fully blocked row is NaN in both
        kwargs["attn_mask"] = attn_mask
    if masks in ("key_padding_mask", "both"):
        lengths = torch.randint(1, k_len + 1, (batch,), generator=gen)
        lengths[0] = k_len  # one sequence without padding
        kwargs["key_padding_mask"] = torch.arange(k_len)[None, :] >= lengths[:, None]
    return query, key, value, kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("masks", MASKS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch_multihead_attention(shape, masks, bias, dtype):
    batch, q_len, k_len, embed_dim, num_heads = SHAPES[shape]
    mine, theirs = _pair(embed_dim, num_heads, bias, dtype)
    query, key, value, kwargs = _inputs(batch, q_len, k_len, embed_dim, masks, dtype)
    with torch.no_grad():
        out, weights = mine(query, key, value, **kwargs)
        ref_out, ref_weights = theirs(query, key, value, need_weights=True, average_attn_weights=True, **kwargs)
    tol = TOLERANCES[dtype]
    assert out.dtype == dtype and out.shape == (batch, q_len, embed_dim)
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    torch.testing.assert_close(weights, ref_weights, rtol=tol, atol=tol)


def test_gradients_match_torch():
    # float64, so the gradients agree to the same 1e-10 as the forward pass.
    mine, theirs = _pair(12, 3, True, torch.float64)
    query, key, value, kwargs = _inputs(2, 4, 6, 12, "both", torch.float64)
    grads = []
    for module in (mine, theirs):
        inputs = [t.clone().requires_grad_() for t in (query, key, value)]
        out, weights = module(*inputs, **kwargs)
        (out.pow(2).sum() + weights.pow(2).sum()).backward()
        grads.append([t.grad for t in inputs] + [p.grad for _, p in sorted(module.named_parameters())])
    for mine_grad, their_grad in zip(*grads):
        torch.testing.assert_close(mine_grad, their_grad, rtol=TOL64, atol=TOL64)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_state_dict_has_torch_layout_both_ways(bias):
    mine, theirs = _pair(8, 2, bias, torch.float32)
    assert {k: v.shape for k, v in mine.state_dict().items()} == \
           {k: v.shape for k, v in theirs.state_dict().items()}
    assert {n for n, _ in mine.named_parameters()} == set(mine.state_dict())
    fresh = nn.MultiheadAttention(8, 2, bias=bias, batch_first=True)
    fresh.load_state_dict(mine.state_dict())  # strict: no missing or extra keys either way


def test_need_weights_false_returns_none_and_the_same_output():
    mine, _ = _pair(16, 4, True, torch.float32)
    query, key, value, kwargs = _inputs(2, 5, None, 16, "both", torch.float32)
    out, weights = mine(query, key, value, **kwargs)
    quiet, none = mine(query, key, value, need_weights=False, **kwargs)
    assert none is None
    torch.testing.assert_close(quiet, out, rtol=0, atol=0)


def test_fresh_module_is_initialised_like_torch():
    # Same initialisation scheme: biases start at zero, in_proj_weight is xavier-uniform.
    torch.manual_seed(0)
    mine = MultiHeadAttention(64, 4)
    bound = (6 / (64 + 3 * 64)) ** 0.5
    assert mine.in_proj_bias.abs().max() == 0 and mine.out_proj.bias.abs().max() == 0
    assert mine.in_proj_weight.abs().max() <= bound
    assert mine.in_proj_weight.std() > bound / 3  # not left at zero


def test_embed_dim_must_split_into_heads():
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)
