"""llmref.attention against an independent reference: PyTorch's scaled_dot_product_attention."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmref.attention import scaled_dot_product_attention

# float64 on both sides: the two implementations differ only in summation order, so
# agreement to 1e-12 is expected; anything looser would hide a real bug.
TOL = 1e-12

CASES = {
    "single head": ((), 4, 4, 8, 8),
    "batched, L_q != L_k, d_v != d_k": ((2, 3), 5, 7, 16, 3),
    "d_k = 1": ((2,), 3, 6, 1, 2),
}


def _torch_reference(Q, K, V, mask=None):
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    attn_mask = None if mask is None else t(np.broadcast_to(mask, (*Q.shape[:-1], K.shape[-2])))
    out = F.scaled_dot_product_attention(t(Q), t(K), t(V), attn_mask=attn_mask)
    # PyTorch does not return the weights; recompute them the way its docs define them.
    scores = t(Q) @ t(K).transpose(-1, -2) / np.sqrt(Q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return out.numpy(), torch.softmax(scores, dim=-1).numpy()


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "causal mask"])
def test_matches_pytorch(case, masked):
    batch, q_len, k_len, d_k, d_v = CASES[case]
    rng = np.random.default_rng(7)
    Q = rng.standard_normal((*batch, q_len, d_k))
    K = rng.standard_normal((*batch, k_len, d_k))
    V = rng.standard_normal((*batch, k_len, d_v))
    mask = np.tril(np.ones((q_len, k_len), dtype=bool), k=k_len - q_len) if masked else None
    out, weights = scaled_dot_product_attention(Q, K, V, mask)
    ref_out, ref_weights = _torch_reference(Q, K, V, mask)
    np.testing.assert_allclose(out, ref_out, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(weights, ref_weights, rtol=TOL, atol=TOL)


def test_survives_scores_that_overflow_exp():
    rng = np.random.default_rng(0)
    Q, K, V = (rng.standard_normal((4, 8)) * 100 for _ in range(3))
    out, weights = scaled_dot_product_attention(Q, K, V)
    ref_out, _ = _torch_reference(Q, K, V)
    assert np.isfinite(weights).all()
    np.testing.assert_allclose(out, ref_out, rtol=1e-9, atol=1e-9)
