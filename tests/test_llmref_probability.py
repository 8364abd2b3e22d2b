"""llmref.probability against independent references: torch.softmax, torch.log_softmax and
torch.nn.functional.cross_entropy, all in float64, including logits of +-1e4."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmref.probability import cross_entropy, log_softmax, softmax

# Ordinary logits (size ~3), float64 on both sides: the implementations differ only in the
# order of a handful of roundings, so they agree to ~1e-16; 1e-12 leaves room for that and
# would still expose any real bug.
TOL = 1e-12
# Logits of +-1e4 (and beyond): the result itself is exact only to a few ulps of the
# logits, 2.2e-16 * 2e4 = 4e-12 for the log-probabilities, and torch subtracts the maximum
# in a different order. A relative 1e-12 with an absolute 1e-9 covers that with a wide margin
# while every overflow or underflow shows up as inf, NaN or an error of ~1e4.
BIG_RTOL, BIG_ATOL = 1e-12, 1e-9

SHAPES_AND_AXES = [((7,), -1), ((4, 9), -1), ((4, 9), 0), ((2, 3, 5), 1), ((2, 3, 5), -1)]


def _big_logits(rng, magnitude=1e4):
    """Rows near +magnitude, near -magnitude, ordinary, and a mix of +-magnitude."""
    noise = rng.standard_normal((4, 6))
    return np.stack([magnitude + noise[0], -magnitude + noise[1], noise[2],
                     magnitude * np.array([1, -1, 1, -1, -1, 1]) + noise[3]])


@pytest.mark.parametrize("shape, axis", SHAPES_AND_AXES, ids=str)
def test_softmax_matches_torch(shape, axis):
    x = np.random.default_rng(0).standard_normal(shape) * 3
    expected = torch.softmax(torch.from_numpy(x), dim=axis).numpy()
    np.testing.assert_allclose(softmax(x, axis=axis), expected, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("shape, axis", SHAPES_AND_AXES, ids=str)
def test_log_softmax_matches_torch(shape, axis):
    x = np.random.default_rng(1).standard_normal(shape) * 3
    expected = torch.log_softmax(torch.from_numpy(x), dim=axis).numpy()
    np.testing.assert_allclose(log_softmax(x, axis=axis), expected, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("magnitude", [1e4, 1e6])
@pytest.mark.parametrize("axis", [-1, 0])
def test_huge_logits_match_torch(magnitude, axis):
    x = np.moveaxis(_big_logits(np.random.default_rng(2), magnitude), -1, axis)
    t = torch.from_numpy(np.ascontiguousarray(x))
    # No overflow, no 0 / 0, no log(0) anywhere; exp() of a very negative number underflowing
    # to 0 inside a sum is harmless and expected.
    with np.errstate(all="raise", under="ignore"):
        p, logp = softmax(x, axis=axis), log_softmax(x, axis=axis)
    np.testing.assert_allclose(p, torch.softmax(t, dim=axis).numpy(), rtol=BIG_RTOL, atol=BIG_ATOL)
    np.testing.assert_allclose(logp, torch.log_softmax(t, dim=axis).numpy(),
                               rtol=BIG_RTOL, atol=BIG_ATOL)
    # The mixed row's small log-probabilities are about -2 * magnitude, not -inf.
    assert np.isfinite(logp).all() and logp.min() < -1.9 * magnitude


@pytest.mark.parametrize("batch, classes", [((8,), 5), ((3, 4), 7), ((2, 3, 2), 11), ((1,), 3)],
                         ids=str)
def test_cross_entropy_matches_torch(batch, classes):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((*batch, classes)) * 3
    targets = rng.integers(classes, size=batch)
    # torch wants the classes on axis 1; flattening the leading axes gives the same mean.
    expected = F.cross_entropy(torch.from_numpy(logits.reshape(-1, classes)),
                               torch.from_numpy(targets.reshape(-1))).item()
    value = cross_entropy(logits, targets)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=TOL, abs=TOL)


def test_cross_entropy_with_huge_logits_matches_torch():
    rng = np.random.default_rng(4)
    logits = _big_logits(rng)
    targets = np.array([2, 0, 5, 1])  # row 3's class 1 has probability e^-2e4: 0 in float64
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)).item()
    with np.errstate(all="raise", under="ignore"):
        value = cross_entropy(logits, targets)
    assert np.isfinite(value) and value > 4e3
    assert value == pytest.approx(expected, rel=BIG_RTOL, abs=BIG_ATOL)


def test_inputs_are_left_unchanged():
    x = np.random.default_rng(5).standard_normal((3, 4))
    kept = x.copy()
    softmax(x), log_softmax(x), cross_entropy(x, np.array([0, 1, 3]))
    np.testing.assert_array_equal(x, kept)
