"""llmref.positions against independent references: F.embedding and its autograd for the lookup,
the paper's formula element by element for the sinusoidal table, and, for RoPE, a rotation
matrix built block by block, complex multiplication, and the rotate-half form used by
GPT-NeoX and Llama on permuted features. Plus the properties each one promises."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmref.positions import apply_rope, embedding_backward, embedding_forward, sinusoidal_table

# float64 throughout unless stated: the same numbers rounded in another order differ by
# ~1e-15 on values of order 1; 1e-10 is far above that and far below any real bug.
TOL64 = 1e-10
SEEDS = range(5)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ lookup

@pytest.mark.parametrize("ids_shape", [(), (1,), (7,), (3, 5), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_lookup_is_f_embedding(ids_shape, dtype):
    gen = _gen(0)
    weight = torch.randn(9, 5, generator=gen, dtype=dtype)
    ids = torch.randint(0, 9, ids_shape, generator=gen)
    out = embedding_forward(weight, ids)
    assert out.dtype == dtype and out.shape == (*ids_shape, 5)
    assert torch.equal(out, F.embedding(ids, weight))  # a copy: exactly equal


def test_lookup_is_differentiable_like_f_embedding():
    weight = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[0, 5, 5], [2, 0, 5]])
    g = torch.randn(2, 3, 3, dtype=torch.float64)
    (ours,) = torch.autograd.grad(embedding_forward(weight, ids), weight, g)
    (theirs,) = torch.autograd.grad(F.embedding(ids, weight), weight, g)
    torch.testing.assert_close(ours, theirs, rtol=TOL64, atol=TOL64)


@pytest.mark.parametrize("bad", [-1, -6, -50, 6, 7, 1000])
def test_lookup_refuses_an_id_outside_the_table_and_names_it(bad):
    weight = torch.randn(6, 3)
    ids = torch.tensor([[0, 1], [bad, 2]])
    with pytest.raises(IndexError) as caught:
        embedding_forward(weight, ids)
    assert f"token id {bad} " in str(caught.value) and "[0, 6)" in str(caught.value)


# ---------------------------------------------------------------------------- gradient

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ids_shape", [(1,), (20,), (4, 7), (2, 3, 5)], ids=str)
def test_gradient_is_autograds_through_f_embedding(ids_shape, seed):
    gen = _gen(seed)
    vocab, dim = 8, 4
    ids = torch.randint(0, vocab - 2, ids_shape, generator=gen)   # the last two rows unseen
    g = torch.randn(*ids_shape, dim, generator=gen, dtype=torch.float64)
    table = torch.zeros(vocab, dim, dtype=torch.float64, requires_grad=True)
    F.embedding(ids, table).backward(g)
    ours = embedding_backward(g, ids, vocab)
    torch.testing.assert_close(ours, table.grad, rtol=TOL64, atol=TOL64)
    assert torch.equal(ours[-2:], torch.zeros(2, dim, dtype=torch.float64))  # unseen: exactly 0


def test_repeated_ids_add_up():
    g = torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]], dtype=torch.float64)
    ours = embedding_backward(g, torch.tensor([3, 1, 3]), 4)
    expected = torch.tensor([[0, 0], [10, 20], [0, 0], [101, 202]], dtype=torch.float64)
    assert torch.equal(ours, expected)


def test_gradient_keeps_dtype_and_total():
    # Every position's gradient lands in exactly one row: the column sums are preserved.
    g = torch.randn(3, 5, 2, generator=_gen(1))
    ids = torch.randint(0, 4, (3, 5), generator=_gen(2))
    ours = embedding_backward(g, ids, 4)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.sum(0), g.reshape(-1, 2).sum(0), rtol=1e-5, atol=1e-5)


def test_gradient_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"expected \(\*ids.shape, d\)"):
        embedding_backward(torch.zeros(3, 4, 2), torch.zeros(4, 3, dtype=torch.long), 5)


# --------------------------------------------------------------------- sinusoidal table

def _paper_table(length, dim, base):
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(pos / base^(2i/d)),
    one element at a time with the math module."""
    return torch.tensor([[math.sin(pos / base ** (c / dim)) if c % 2 == 0
                          else math.cos(pos / base ** ((c - 1) / dim)) for c in range(dim)]
                         for pos in range(length)], dtype=torch.float64)


@pytest.mark.parametrize("length, dim, base", [(1, 2, 10000.0), (50, 16, 10000.0), (128, 64, 10000.0),
                                               (30, 6, 100.0), (17, 10, 2.0)])
def test_table_is_the_papers_formula(length, dim, base):
    table = sinusoidal_table(length, dim, base=base)
    assert table.dtype == torch.float32 and table.shape == (length, dim)
    # float32 output of a float64 computation: one rounding, half an ulp of values <= 1.
    torch.testing.assert_close(table.double(), _paper_table(length, dim, base), rtol=0, atol=1e-7)


def test_table_properties():
    table = sinusoidal_table(200, 32).double()
    assert table.abs().max() <= 1
    pairs = table[:, 0::2] ** 2 + table[:, 1::2] ** 2
    torch.testing.assert_close(pairs, torch.ones_like(pairs), rtol=0, atol=1e-6)
    assert torch.equal(table[0], torch.tensor([0.0, 1.0] * 16, dtype=torch.float64))
    # PE(p) . PE(p + k) = sum_i cos(k w_i): the same for every p at a given offset k.
    for k in (1, 5, 40):
        dots = (table[:-k] * table[k:]).sum(-1)
        torch.testing.assert_close(dots, torch.full_like(dots, dots[0].item()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dim", [1, 7, 33])
def test_table_refuses_an_odd_dim(dim):
    with pytest.raises(ValueError, match=f"dim must be even.*dim={dim}"):
        sinusoidal_table(4, dim)


# -------------------------------------------------------------------------------- RoPE

def _rotation_matrix(p, d, base):
    """R_p: block diagonal, one 2x2 rotation by p * base^(-2i/d) per neighbouring pair."""
    blocks = []
    for i in range(d // 2):
        a = p * base ** (-2 * i / d)
        blocks.append(torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                                   dtype=torch.float64))
    return torch.block_diag(*blocks)


def _by_matrices(x, positions, base):
    d = x.shape[-1]
    R = torch.stack([_rotation_matrix(int(p), d, base) for p in positions])     # (T, d, d)
    return (R @ x.unsqueeze(-1)).squeeze(-1)


def _by_complex_numbers(x, positions, base):
    d = x.shape[-1]
    w = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = torch.polar(torch.ones(len(positions), d // 2, dtype=torch.float64), positions[:, None] * w)
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous()) * turn
    return torch.view_as_real(z).reshape(x.shape)


def _rotate_half_rope(x, positions, base):
    """The GPT-NeoX / Llama form: x * cos + rotate_half(x) * sin, pairs (i, i + d/2)."""
    d = x.shape[-1]
    w = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = torch.cat([positions[:, None] * w] * 2, dim=-1)                     # (T, d)
    first, second = x[..., : d // 2], x[..., d // 2:]
    return x * angle.cos() + torch.cat([-second, first], dim=-1) * angle.sin()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape, base, offset", [((5, 2), 10000.0, 0), ((2, 7, 8), 10000.0, 0),
                                                 ((2, 3, 6, 16), 500.0, 40), ((4, 64), 10000.0, 1000)],
                         ids=str)
def test_rope_matches_matrices_and_complex_numbers(shape, base, offset, seed):
    x = torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)
    positions = offset + torch.arange(shape[-2])
    ours = apply_rope(x, positions, base=base)
    torch.testing.assert_close(ours, _by_matrices(x, positions, base), rtol=TOL64, atol=TOL64)
    torch.testing.assert_close(ours, _by_complex_numbers(x, positions, base), rtol=TOL64, atol=TOL64)


def test_rope_is_rotate_half_on_permuted_features():
    # Interleaved and halves conventions are one rotation on two orderings of the features:
    # moving the even features to the front turns one into the other.
    d = 12
    x = torch.randn(3, 9, d, generator=_gen(3), dtype=torch.float64)
    positions = torch.arange(9) + 5
    to_halves = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
    ours = apply_rope(x, positions)
    theirs = _rotate_half_rope(x[..., to_halves], positions, 10000.0)
    torch.testing.assert_close(ours[..., to_halves], theirs, rtol=TOL64, atol=TOL64)
    assert not torch.allclose(ours, _rotate_half_rope(x, positions, 10000.0))


@pytest.mark.parametrize("seed", SEEDS)
def test_rope_keeps_norms_and_scores_depend_only_on_the_offset(seed):
    gen = _gen(seed)
    q, k = torch.randn(2, 32, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(apply_rope(q[None], torch.tensor([123])).norm(), q.norm(),
                               rtol=TOL64, atol=TOL64)

    def score(m, n):
        return (apply_rope(q[None], torch.tensor([m])) @ apply_rope(k[None], torch.tensor([n])).T).item()

    for m, n, shift in [(0, 3, 10), (7, 2, 100), (50, 50, 1234)]:
        assert math.isclose(score(m, n), score(m + shift, n + shift), abs_tol=1e-9)
        # (R_m q) . (R_n k) = q . R_{n-m} k
        assert math.isclose(score(m, n), (q @ _rotation_matrix(n - m, 32, 10000.0) @ k).item(), abs_tol=1e-9)


def test_rope_defaults_dtype_and_input():
    x = torch.randn(2, 6, 8, generator=_gen(4))
    before = x.clone()
    out = apply_rope(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(x, before)
    assert torch.equal(out, apply_rope(x, torch.arange(6)))
    assert torch.equal(out, apply_rope(x, [0, 1, 2, 3, 4, 5], base=10000.0))
    assert torch.equal(out[:, 0], x[:, 0])                         # position 0: angle 0
    # float32 against float64 on the same numbers: float32 rounding, growing with the position.
    torch.testing.assert_close(out.double(), apply_rope(x.double()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("x_shape, positions, match", [
    ((4, 7), None, "even size"),
    ((4, 8), torch.arange(5), r"shape \(T,\) = \(4,\)"),
    ((2, 4, 8), torch.zeros(2, 4, dtype=torch.long), r"got \(2, 4\)"),
], ids=["odd d", "too many positions", "positions per batch"])
def test_rope_refuses_bad_shapes(x_shape, positions, match):
    with pytest.raises(ValueError, match=match):
        apply_rope(torch.zeros(x_shape), positions)
