"""The checks behind exercise 06_multihead, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks import multihead as checks
from llmref.multihead import MultiHeadAttention as Reference

ALL_CHECKS = [checks.check_shapes_and_params, checks.check_unmasked, checks.check_causal_mask,
              checks.check_padding_mask, checks.check_both_masks, checks.check_weights]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_reference_passes_each_check_quickly(check, capsys):
    start = time.perf_counter()
    check(Reference)
    # Well under a second on an idle machine; the margin is for a busy 2-core CI runner.
    assert time.perf_counter() - start < 2.0
    assert "\N{CHECK MARK}" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs", [
    {"embed_dim": 12, "num_heads": 3, "bias": False},
    {"embed_dim": 8, "num_heads": 1, "q_len": 1, "k_len": 4},
], ids=["no bias", "one head, one query"])
def test_shapes_check_accepts_the_reference_in_other_layouts(kwargs):
    checks.check_shapes_and_params(Reference, **kwargs)


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    checks.check_unmasked(Reference)
    assert torch.equal(torch.get_rng_state(), before)


class _Wrapping(Reference):
    """The reference with forward's result passed through `change`."""
    change = staticmethod(lambda out, weights: (out, weights))

    def forward(self, *args, **kwargs):
        return self.change(*super().forward(*args, **kwargs))


def _returning(change):
    return type("MultiHeadAttention", (_Wrapping,), {"change": staticmethod(change)})


class _SeparateProjections(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(embed_dim, embed_dim, bias=bias) for _ in range(4))


class _Transposed(Reference):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__(embed_dim, num_heads, bias)
        self.in_proj_weight = nn.Parameter(torch.zeros(embed_dim, 3 * embed_dim))


class _IgnoresBias(Reference):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__(embed_dim, num_heads, bias=True)


class _InitRaises(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        raise NotImplementedError()


class _Detached(Reference):
    def forward(self, *args, **kwargs):
        out, weights = super().forward(*args, **kwargs)
        return out.detach(), weights


class _TorchItself(nn.MultiheadAttention):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__(embed_dim, num_heads, bias=bias, batch_first=True)


class _CallsTheFunctional(Reference):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        from torch.nn.functional import multi_head_attention_forward
        out, weights = multi_head_attention_forward(
            query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), self.embed_dim,
            self.num_heads, self.in_proj_weight, self.in_proj_bias, None, None, False, 0.0,
            self.out_proj.weight, self.out_proj.bias, key_padding_mask=key_padding_mask,
            attn_mask=attn_mask, need_weights=need_weights)
        return out.transpose(0, 1), weights


AlwaysEqual = type("AlwaysEqual", (), {"__eq__": lambda self, other: True})

# The kinds of failure every exercise shares (the learner's code raises, is still the
# stub, is not callable, returns the wrong type or an object equal to everything) are
# tested for all exercises in tests/test_check_failures.py. The rows here are this
# exercise's own, or what that test does not assert: returning None or the wrong shape (it
# lets those pass where they may not apply); a stub __init__ or wrong values inside the
# returned pair, which that test does not reach.
BAD_INPUTS = {
    "not a class": (lambda embed_dim, num_heads: None, "a class that subclasses nn.Module"),
    "an instance": (Reference(8, 2), "a class that subclasses nn.Module"),
    "stub": (_InitRaises, "still raises NotImplementedError"),
    "separate q, k, v layers": (_SeparateProjections,
                                "Expected exactly: in_proj_weight (72, 24), in_proj_bias (72,), "
                                "out_proj.weight (24, 24), out_proj.bias (24,)"),
    "in_proj_weight transposed": (_Transposed, "stored transposed"),
    "returns None": (_returning(lambda out, weights: None), "returned None"),
    "returns the output only": (_returning(lambda out, weights: out), "should return a pair"),
    "wrong output shape": (_returning(lambda out, weights: (out[:, :1], weights)),
                           "has shape (2, 1, 24), expected (2, 3, 24)"),
    "output not numbers": (_returning(lambda out, weights: ("output", weights)), "array of numbers"),
    "object equal to everything": (_returning(lambda out, weights: (AlwaysEqual(), AlwaysEqual())),
                                   "array of numbers"),
    "output detached": (_Detached, "not connected to the parameters"),
    "subclasses nn.MultiheadAttention": (_TorchItself, "uses nn.MultiheadAttention, which does the exercise"),
    "calls F.multi_head_attention_forward": (_CallsTheFunctional,
                                             "uses F.multi_head_attention_forward, which does the exercise"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=str)
def test_bad_input_gives_a_clear_failure(case):
    cls, phrase = BAD_INPUTS[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_shapes_and_params(cls)
    assert phrase in str(caught.value)


def test_bias_false_with_biases_names_the_fix():
    with pytest.raises(CheckFailure) as caught:
        checks.check_shapes_and_params(_IgnoresBias, embed_dim=12, num_heads=3, bias=False)
    message = str(caught.value)
    assert "Not expected: in_proj_bias (36,), out_proj.bias (12,)" in message
    assert 'register_parameter("in_proj_bias", None)' in message


WEIGHT_MISTAKES = {
    "weights None": (_returning(lambda out, weights: (out, None)), "returned None for the weights"),
    "per-head weights": (type("MultiHeadAttention", (Reference,), {
        "forward": lambda self, q, k, v, key_padding_mask=None, attn_mask=None, need_weights=True:
            (Reference.forward(self, q, k, v, key_padding_mask, attn_mask)[0],
             torch.ones(q.shape[0], self.num_heads, q.shape[1], k.shape[1]))}),
                         "average over the heads"),
    "rows not normalised": (_returning(lambda out, weights: (out, None if weights is None else weights * 0.5)),
                            "should sum to 1"),
    "weights transposed": (_returning(lambda out, weights: (out, None if weights is None else weights.transpose(1, 2))),
                           "has shape (2, 5, 3), expected (2, 3, 5)"),
}


@pytest.mark.parametrize("case", WEIGHT_MISTAKES, ids=str)
def test_weight_mistakes_are_named(case):
    cls, phrase = WEIGHT_MISTAKES[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_weights(cls)
    assert phrase in str(caught.value)


def test_weight_on_a_blocked_key_is_reported():
    def leak(out, weights):
        if weights is None:
            return out, None
        weights = weights.clone()
        weights[..., -1] += 0.1  # the last key is padding in sequence 1
        return out, weights
    with pytest.raises(CheckFailure) as caught:
        checks.check_weights(_returning(leak))
    assert "reaches a key that a mask blocks" in str(caught.value)


def test_tolerance_is_tight_enough_to_catch_a_missing_scale():
    # The stated tolerance must separate right from wrong on the default check's inputs.
    case = checks._make_case(1, batch=2, q_len=5, k_len=None, embed_dim=24, num_heads=4)
    unscaled, _ = checks._attend(case, divide_by=1.0)
    assert np.abs(unscaled - case.expected_output).max() > 100 * checks.ATOL


def test_float32_reference_passes_with_room_to_spare():
    # The learner's module runs in float32: the reference run the same way is within a
    # tenth of the tolerance of the float64 answer the checks compare with.
    case = checks._make_case(4, batch=2, q_len=5, k_len=None, embed_dim=24, num_heads=4,
                             attn_mask="causal", lengths=(5, 3))
    module = Reference(24, 4)
    module.load_state_dict(case.state)
    with torch.no_grad():
        out, weights = module(case.query, case.key, case.value, key_padding_mask=case.key_padding_mask,
                              attn_mask=case.attn_mask)
    assert np.abs(out.numpy() - case.expected_output).max() < checks.ATOL / 10
    assert np.abs(weights.numpy() - case.expected_weights).max() < checks.ATOL / 10


