"""llmref.backprop against two independent references: central finite differences of the
forward pass, and torch.autograd through torch.softmax and PyTorch's
scaled_dot_product_attention."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmref.attention import scaled_dot_product_attention
from llmref.backprop import attention_backward, softmax_backward

# Central differences err by O(h^2) from truncation and by about eps * |L| / h from rounding
# (eps = 2.2e-16 in float64). h = 1e-6, near the cube root of eps where the two balance,
# leaves an error of about 1e-10 for the O(1) losses below (measured: at most 7e-10).
FD_STEP = 1e-6
# 1e-7 is over a hundred times that error, yet a hundred thousand times smaller than what
# any known mistake (a missing sum term, scale or transpose) changes in a gradient (1e-2 or more).
FD_TOL = 1e-7
# torch.autograd in float64 evaluates the same formulas in another summation order, so the
# two agree to a few ulps of the O(1) gradients (measured: 3e-16); 1e-12 leaves a wide margin
# while still catching any real difference in a formula.
TORCH_TOL = 1e-12


def numerical_gradient(f, x, h=FD_STEP):
    """The gradient of the scalar function f at x by central differences, entry by entry."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = h
        grad[index] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


SOFTMAX_CASES = {
    "vector": ((6,), -1),
    "rows": ((3, 5), -1),
    "columns": ((3, 5), 0),
    "middle axis of a batch": ((2, 4, 3), 1),
}


@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=str)
def test_softmax_backward_matches_finite_differences(case):
    shape, axis = SOFTMAX_CASES[case]
    rng = np.random.default_rng(1)
    x, grad_y = rng.standard_normal(shape), rng.standard_normal(shape)
    # L(x) = sum(grad_y * softmax(x)) has gradient J^T grad_y, the VJP under test.
    expected = numerical_gradient(lambda x: np.sum(grad_y * softmax(x, axis)), x)
    got = softmax_backward(softmax(x, axis), grad_y, axis=axis)
    np.testing.assert_allclose(got, expected, rtol=FD_TOL, atol=FD_TOL)


@pytest.mark.parametrize("scale", [1.0, 30.0], ids=["moderate", "saturated"])
@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=str)
def test_softmax_backward_matches_torch(case, scale):
    shape, axis = SOFTMAX_CASES[case]
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal(shape) * scale, requires_grad=True)
    grad_y = rng.standard_normal(shape)
    y = torch.softmax(x, dim=axis)
    y.backward(torch.from_numpy(grad_y))
    got = softmax_backward(y.detach().numpy(), grad_y, axis=axis)
    np.testing.assert_allclose(got, x.grad.numpy(), rtol=TORCH_TOL, atol=TORCH_TOL)


ATTENTION_CASES = {
    "single head": ((), 4, 4, 3, 3),
    "batched, L_q != L_k, d_v != d_k": ((2, 3), 3, 5, 4, 2),
    "d_k = 1, L_q > L_k": ((2,), 4, 3, 1, 2),
}


def causal_mask(q_len, k_len):
    """True where query i may attend to key j <= i + max(k_len - q_len, 0): with more keys than
    queries the keys align to the end, otherwise to the start, so every query sees a key."""
    return np.tril(np.ones((q_len, k_len), dtype=bool), k=max(k_len - q_len, 0))


def _inputs(case, seed):
    batch, q_len, k_len, d_k, d_v = ATTENTION_CASES[case]
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((*batch, q_len, d_k)), rng.standard_normal((*batch, k_len, d_k)),
            rng.standard_normal((*batch, k_len, d_v)), rng.standard_normal((*batch, q_len, d_v)))


MASKED = pytest.mark.parametrize("masked", [False, True], ids=["no mask", "causal mask"])


@MASKED
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=str)
def test_attention_backward_matches_finite_differences(case, masked):
    Q, K, V, grad_out = _inputs(case, seed=3)
    mask = causal_mask(Q.shape[-2], K.shape[-2]) if masked else None

    def loss(Q, K, V):
        return np.sum(grad_out * scaled_dot_product_attention(Q, K, V, mask)[0])

    dQ, dK, dV = attention_backward(Q, K, V, grad_out, mask)
    np.testing.assert_allclose(dQ, numerical_gradient(lambda Q: loss(Q, K, V), Q), rtol=FD_TOL, atol=FD_TOL)
    np.testing.assert_allclose(dK, numerical_gradient(lambda K: loss(Q, K, V), K), rtol=FD_TOL, atol=FD_TOL)
    np.testing.assert_allclose(dV, numerical_gradient(lambda V: loss(Q, K, V), V), rtol=FD_TOL, atol=FD_TOL)


def _torch_gradients(Q, K, V, grad_out, mask):
    q, k, v = (torch.tensor(a, requires_grad=True) for a in (Q, K, V))
    attn_mask = None
    if mask is not None:
        attn_mask = torch.from_numpy(np.array(np.broadcast_to(mask, (*Q.shape[:-1], K.shape[-2]))))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out.backward(torch.from_numpy(grad_out))
    return q.grad.numpy(), k.grad.numpy(), v.grad.numpy()


@MASKED
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=str)
def test_attention_backward_matches_torch(case, masked):
    Q, K, V, grad_out = _inputs(case, seed=4)
    mask = causal_mask(Q.shape[-2], K.shape[-2]) if masked else None
    for ours, theirs in zip(attention_backward(Q, K, V, grad_out, mask),
                            _torch_gradients(Q, K, V, grad_out, mask)):
        np.testing.assert_allclose(ours, theirs, rtol=TORCH_TOL, atol=TORCH_TOL)


def test_padded_keys_get_exactly_zero_gradient():
    # Keys that the mask hides from every query cannot influence the output at all.
    rng = np.random.default_rng(5)
    lengths = np.array([2, 5, 1])
    Q, K, V = (rng.standard_normal((3, length, 6)) for length in (4, 5, 5))
    grad_out = rng.standard_normal((3, 4, 6))
    mask = (np.arange(5)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, L_k)
    dQ, dK, dV = attention_backward(Q, K, V, grad_out, mask)
    padded = ~mask[:, 0, :]
    assert np.all(dK[padded] == 0) and np.all(dV[padded] == 0)
    for ours, theirs in zip((dQ, dK, dV), _torch_gradients(Q, K, V, grad_out, mask)):
        np.testing.assert_allclose(ours, theirs, rtol=TORCH_TOL, atol=TORCH_TOL)
