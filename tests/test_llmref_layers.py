"""llmref.layers against independent references: torch.nn.Linear and torch.nn.LayerNorm
(forward and backward), and finite differences (torch.autograd.gradcheck)."""
import pytest
import torch
from torch import nn

from llmref.layers import LayerNorm, Linear

# float64 on both sides. The implementations differ only in the order of their sums
# (addmm vs matmul + add; PyTorch's fused LayerNorm kernel and its hand-written backward vs
# autograd through our mean/var), which moves values by ~1e-15 relative. 1e-10 allows for
# that with room to spare and still fails on any real bug (the closest known one, the
# unbiased variance, is off by more than 1e-2 at width 8).
TOL = 1e-10

BATCHES = {"one vector": (), "a batch": (5,), "several leading dims": (2, 3, 4)}


def _compare(mine: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """Same output and the same gradients of input and parameters under one upstream gradient."""
    upstream = torch.randn(theirs(x).shape, dtype=torch.float64)
    grads = []
    for module in (mine, theirs):
        xi = x.clone().requires_grad_(True)
        module.zero_grad()
        out = module(xi)
        out.backward(upstream)
        grads.append((out.detach(), xi.grad, {k: p.grad.clone() for k, p in module.named_parameters()}))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = grads
    torch.testing.assert_close(out_a, out_b, rtol=TOL, atol=TOL)
    torch.testing.assert_close(gx_a, gx_b, rtol=TOL, atol=TOL)
    assert gp_a.keys() == gp_b.keys()
    for key in gp_a:
        torch.testing.assert_close(gp_a[key], gp_b[key], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_linear_matches_pytorch(batch, bias):
    torch.manual_seed(0)
    theirs = nn.Linear(6, 4, bias=bias, dtype=torch.float64)
    mine = Linear(6, 4, bias=bias).double()
    mine.load_state_dict(theirs.state_dict())
    _compare(mine, theirs, torch.randn(*batch, 6, dtype=torch.float64))


def test_linear_state_dict_copies_both_ways():
    mine, theirs = Linear(3, 2), nn.Linear(3, 2)
    theirs.load_state_dict(mine.state_dict())
    mine.load_state_dict(theirs.state_dict())
    assert {k: v.shape for k, v in mine.state_dict().items()} == \
           {k: v.shape for k, v in theirs.state_dict().items()}
    assert list(Linear(3, 2, bias=False).state_dict()) == ["weight"]
    assert Linear(3, 2, bias=False).bias is None


def test_linear_initialises_like_pytorch():
    # nn.Linear draws weight then bias with uniform_(-b, b), b = 1/sqrt(in_features) (its
    # kaiming_uniform_(a=sqrt(5)) reduces to that). Same seed, same draws; the bound is
    # computed by a different formula, so allow float32 rounding (1.2e-7 relative).
    for in_features, out_features in ((5, 3), (256, 64)):
        torch.manual_seed(1)
        mine = Linear(in_features, out_features)
        torch.manual_seed(1)
        theirs = nn.Linear(in_features, out_features)
        for key in ("weight", "bias"):
            torch.testing.assert_close(getattr(mine, key), getattr(theirs, key), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("shape", [8, (3, 4)], ids=["last dim", "last two dims"])
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_layernorm_matches_pytorch(batch, shape, eps):
    torch.manual_seed(0)
    theirs = nn.LayerNorm(shape, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    mine = LayerNorm(shape, eps=eps).double()
    mine.load_state_dict(theirs.state_dict())
    trailing = (shape,) if isinstance(shape, int) else shape
    # Rows of very different scale and offset, some with variance far below eps.
    x = torch.randn(*batch, *trailing, dtype=torch.float64)
    x = x * 10.0 ** torch.empty(*batch, *[1] * len(trailing), dtype=torch.float64).uniform_(-3, 1) + 3
    _compare(mine, theirs, x)


def test_layernorm_starts_like_pytorch():
    for shape in (6, (2, 3)):
        mine, theirs = LayerNorm(shape), nn.LayerNorm(shape)
        for key in ("weight", "bias"):
            torch.testing.assert_close(getattr(mine, key), getattr(theirs, key), rtol=0, atol=0)
        theirs.load_state_dict(mine.state_dict())


@pytest.mark.parametrize("module", [
    lambda: Linear(4, 3), lambda: Linear(4, 3, bias=False), lambda: LayerNorm(5), lambda: LayerNorm((2, 3), eps=0.1),
], ids=["Linear", "Linear without bias", "LayerNorm", "LayerNorm over two dims"])
def test_gradients_match_finite_differences(module):
    # gradcheck compares autograd with central differences (step 1e-6) at its default
    # float64 tolerances (atol 1e-5, rtol 1e-3): independent of any PyTorch layer.
    torch.manual_seed(3)
    layer = module().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    trailing = tuple(layer.weight.shape[1:]) if isinstance(layer, Linear) else layer.normalized_shape
    x = torch.randn(2, *trailing, dtype=torch.float64, requires_grad=True)
    params = tuple(layer.parameters())

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip([n for n, _ in layer.named_parameters()], ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_(True) for p in params]))
