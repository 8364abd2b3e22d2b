"""llmref.block against an independent reference built from PyTorch's own modules:
nn.MultiheadAttention with a causal attn_mask, nn.LayerNorm, and an nn.Sequential MLP
(nn.Linear, nn.GELU, nn.Linear), wired pre-norm, on the same weights. Plus the properties
the rest of the course relies on: causality, GPT-2's parameter names, the parameter count,
dropout only in training."""
import pytest
import torch
from torch import nn

from llmref.block import MLP, Block, CausalSelfAttention

# float64: eps is 2.2e-16. PyTorch scales q before q @ k^T and fuses the projections into
# other kernels; the same numbers rounded in another order differ by ~1e-15 on values of
# order 1 (gradients, summed over positions, of order 10). 1e-10 is far above that and far
# below any real bug (a missing scale, bias or residual moves values by ~1e-1).
TOL64 = 1e-10


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors this small gain nothing from threads, and on a busy 2-core machine threads that
    wait for each other make a 0.01 s check take seconds (the notebook sets the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TorchBlock(nn.Module):
    """The same block from PyTorch's modules: x + mha(ln_1(x)) with a causal mask, then
    + mlp(ln_2(x))."""

    def __init__(self, n_embd, n_head, bias=True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.mha = nn.MultiheadAttention(n_embd, n_head, bias=bias, batch_first=True)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU(),
                                 nn.Linear(4 * n_embd, n_embd, bias=bias))

    def forward(self, x):
        T = x.shape[1]
        future = torch.ones(T, T, dtype=torch.bool).triu(1)  # True = blocked
        h = self.ln_1(x)
        x = x + self.mha(h, h, h, attn_mask=future, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))

    @classmethod
    def from_block(cls, block: Block, n_embd: int, n_head: int, bias: bool) -> "TorchBlock":
        """Copy GPT-2's names onto PyTorch's: c_attn is in_proj (the same (3C, C) layout,
        queries first), c_proj is out_proj."""
        theirs = cls(n_embd, n_head, bias).to(torch.float64)
        s = block.state_dict()
        mapped = {"mha.in_proj_weight": s["attn.c_attn.weight"],
                  "mha.out_proj.weight": s["attn.c_proj.weight"],
                  "mlp.0.weight": s["mlp.c_fc.weight"], "mlp.2.weight": s["mlp.c_proj.weight"],
                  "ln_1.weight": s["ln_1.weight"], "ln_2.weight": s["ln_2.weight"]}
        if bias:
            mapped.update({"mha.in_proj_bias": s["attn.c_attn.bias"],
                           "mha.out_proj.bias": s["attn.c_proj.bias"],
                           "mlp.0.bias": s["mlp.c_fc.bias"], "mlp.2.bias": s["mlp.c_proj.bias"],
                           "ln_1.bias": s["ln_1.bias"], "ln_2.bias": s["ln_2.bias"]})
        theirs.load_state_dict(mapped)  # strict: every parameter of PyTorch's block is set
        return theirs


def _random_block(n_embd, n_head, bias, seed=0) -> Block:
    """The reference block in float64 with weights that keep attention neither uniform nor
    one-hot, non-zero biases and LayerNorm gains away from 1."""
    gen = torch.Generator().manual_seed(seed)
    block = Block(n_embd, n_head, bias=bias).to(torch.float64)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * p.shape[1] ** -0.5)
            elif name.startswith("ln_") and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return block


SHAPES = {  # (batch, T, n_embd, n_head)
    "4 heads": (2, 7, 32, 4),
    "one head": (3, 5, 8, 1),
    "one position": (2, 1, 12, 3),
    "6 heads, longer": (1, 16, 48, 6),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_torch_modules(shape, bias):
    batch, T, n_embd, n_head = SHAPES[shape]
    mine = _random_block(n_embd, n_head, bias)
    theirs = TorchBlock.from_block(mine, n_embd, n_head, bias)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, T, n_embd, generator=gen, dtype=torch.float64)
    upstream = torch.randn(batch, T, n_embd, generator=gen, dtype=torch.float64)

    grads = []
    for module in (mine, theirs):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        out.backward(upstream)
        grads.append((out.detach(), xi.grad))
    (out, x_grad), (ref_out, ref_x_grad) = grads
    torch.testing.assert_close(out, ref_out, rtol=TOL64, atol=TOL64)
    torch.testing.assert_close(x_grad, ref_x_grad, rtol=TOL64, atol=TOL64)

    # Every parameter's gradient, through the same name mapping.
    ours = dict(mine.named_parameters())
    pairs = {"attn.c_attn.weight": theirs.mha.in_proj_weight, "attn.c_proj.weight": theirs.mha.out_proj.weight,
             "mlp.c_fc.weight": theirs.mlp[0].weight, "mlp.c_proj.weight": theirs.mlp[2].weight,
             "ln_1.weight": theirs.ln_1.weight, "ln_2.weight": theirs.ln_2.weight}
    if bias:
        pairs.update({"attn.c_attn.bias": theirs.mha.in_proj_bias, "attn.c_proj.bias": theirs.mha.out_proj.bias,
                      "mlp.c_fc.bias": theirs.mlp[0].bias, "mlp.c_proj.bias": theirs.mlp[2].bias,
                      "ln_1.bias": theirs.ln_1.bias, "ln_2.bias": theirs.ln_2.bias})
    assert set(pairs) == set(ours)
    for name, their_param in pairs.items():
        torch.testing.assert_close(ours[name].grad, their_param.grad, rtol=TOL64, atol=TOL64, msg=name)


def test_parameter_names_are_gpt2s():
    block = Block(16, 4)
    assert list(dict(block.named_parameters())) == [
        "ln_1.weight", "ln_1.bias",
        "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
        "ln_2.weight", "ln_2.bias",
        "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
    ]
    assert set(block.state_dict()) == set(dict(block.named_parameters()))  # no saved buffers
    shapes = {n: tuple(p.shape) for n, p in block.named_parameters()}
    assert shapes["attn.c_attn.weight"] == (48, 16) and shapes["mlp.c_fc.weight"] == (64, 16)
    assert {n for n, _ in Block(16, 4, bias=False).named_parameters()} == {
        "ln_1.weight", "attn.c_attn.weight", "attn.c_proj.weight", "ln_2.weight",
        "mlp.c_fc.weight", "mlp.c_proj.weight"}


@pytest.mark.parametrize("n_embd", [8, 64, 768])
def test_parameter_count_is_12_c_squared_plus_13_c(n_embd):
    count = sum(p.numel() for p in Block(n_embd, 4).parameters())
    assert count == 12 * n_embd ** 2 + 13 * n_embd
    assert sum(p.numel() for p in Block(n_embd, 4, bias=False).parameters()) == 12 * n_embd ** 2 + 2 * n_embd


@pytest.mark.parametrize("module", [CausalSelfAttention(16, 4), Block(16, 4)], ids=["attention", "block"])
def test_causal_by_perturbation_and_by_gradient(module):
    module = module.double()
    gen = torch.Generator().manual_seed(2)
    T = 8
    x = torch.randn(2, T, 16, generator=gen, dtype=torch.float64)
    base = module(x)
    for t in range(T - 1):
        changed = x.clone()
        changed[:, t + 1:] += torch.randn(changed[:, t + 1:].shape, generator=gen, dtype=torch.float64)
        out = module(changed)
        assert torch.equal(out[:, :t + 1], base[:, :t + 1])  # exactly: the future's weight is 0
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])
    # The Jacobian d out[t] / d x[s] is block lower-triangular in (t, s), with a non-zero diagonal.
    jac = torch.autograd.functional.jacobian(module, x[:1])[0, :, :, 0]  # (T, C, T, C)
    norms = jac.abs().amax(dim=(1, 3))                                   # (T, T)
    assert torch.equal(norms.triu(1), torch.zeros(T, T, dtype=torch.float64))
    assert (norms.diagonal() > 0).all() and (norms[-1, 0] > 0)


def test_rows_see_the_past_not_only_themselves():
    # A block whose attention ignored the past would still be causal: the last position's
    # output must depend on the first token.
    block = _random_block(16, 4, True)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, 16, generator=gen, dtype=torch.float64)
    changed = x.clone()
    # A new random token, not x + 1: LayerNorm removes a shift of every feature by the same amount.
    changed[:, 0] = torch.randn(16, generator=gen, dtype=torch.float64)
    assert (block(changed)[:, -1] - block(x)[:, -1]).abs().max() > 1e-3


@pytest.mark.parametrize("cls, args", [(CausalSelfAttention, (16, 4)), (MLP, (16,)), (Block, (16, 4))],
                         ids=["attention", "mlp", "block"])
def test_dropout_only_in_training(cls, args):
    torch.manual_seed(0)
    module = cls(*args, dropout=0.3)
    plain = cls(*args)
    plain.load_state_dict(module.state_dict())
    x = torch.randn(2, 5, 16)
    module.eval()
    torch.testing.assert_close(module(x), module(x), rtol=0, atol=0)
    torch.testing.assert_close(module(x), plain.eval()(x), rtol=0, atol=0)
    module.train()
    assert not torch.equal(module(x), module(x))


def test_n_embd_must_split_into_heads():
    with pytest.raises(ValueError, match="not divisible by n_head=3"):
        CausalSelfAttention(10, 3)
    with pytest.raises(ValueError, match="not divisible"):
        Block(10, 3)


def test_runs_in_float32_on_any_length_up_to_what_it_is_given():
    # No fixed context: the mask is built for the T of each call.
    block = Block(16, 2)
    for T in (1, 3, 100):
        assert block(torch.randn(2, T, 16)).shape == (2, T, 16)
