"""The checks behind exercise 10_block, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks, and
the tolerances separate right from wrong with room to spare."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks import block as checks
from llmref.block import MLP, Block, CausalSelfAttention


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors this small gain nothing from threads, and on a busy 2-core machine threads that
    wait for each other make a 0.01 s check take seconds (the notebook sets the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

REFERENCE_CHECKS = [
    (checks.check_attention, CausalSelfAttention),
    (checks.check_mlp, MLP),
    (checks.check_block, Block),
    (checks.check_causal, CausalSelfAttention),
    (checks.check_causal, Block),
    (checks.check_dropout, CausalSelfAttention),
    (checks.check_dropout, MLP),
    (checks.check_dropout, Block),
]


@pytest.mark.parametrize("check, cls", REFERENCE_CHECKS,
                         ids=[f"{c.__name__}-{k.__name__}" for c, k in REFERENCE_CHECKS])
def test_reference_passes_each_check_quickly(check, cls, capsys):
    start = time.perf_counter()
    check(cls)
    # ~0.02 s on an idle machine; the margin is for a busy 2-core CI runner.
    assert time.perf_counter() - start < 2.0
    assert "\N{CHECK MARK}" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs", [
    {"n_embd": 12, "n_head": 3, "bias": False},
    {"n_embd": 8, "n_head": 1, "batch": 1, "length": 4},
    {"n_embd": 16, "n_head": 2, "length": 1},
], ids=["no bias", "one head", "one position"])
def test_checks_accept_the_reference_in_other_shapes(kwargs):
    checks.check_attention(CausalSelfAttention, **kwargs)
    checks.check_block(Block, **kwargs)
    checks.check_causal(Block, **kwargs)


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    checks.check_block(Block)
    checks.check_dropout(Block)
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------- tolerances, measured

def test_float32_reference_is_well_inside_the_tolerance():
    # The learner's module runs in float32: the reference run the same way differs from the
    # float64 answer by less than a tenth of the tolerance, output and gradients alike.
    case = checks._make_case("block", 7, n_embd=48, n_head=6, bias=True, batch=3, length=9)
    module = Block(48, 6)
    module.load_state_dict(case.state)
    x = case.x.clone().requires_grad_(True)
    out = module(x)
    out.backward(case.upstream)
    pairs = [(out.detach().numpy(), case.expected), (x.grad.numpy(), case.expected_x_grad)]
    pairs += [(p.grad.numpy(), case.expected_grads[n]) for n, p in module.named_parameters()]
    for got, want in pairs:
        assert np.abs(got - want).max() < checks.TOL * checks._scale(want) / 10


def test_the_closest_mistake_is_far_outside_the_tolerance():
    # GELU's tanh approximation is the smallest change the checks must catch.
    case = checks._make_case("mlp", 1, n_embd=32, n_head=1, bias=True, batch=2, length=5)
    tanh = checks._mlp_variant(case, case.x, act="tanh").numpy()
    assert np.abs(tanh - case.expected).max() > 10 * checks.TOL * checks._scale(case.expected)


# ------------------------------------------------------------------ bad classes

class _Raises(nn.Module):
    def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
        super().__init__()
        raise NotImplementedError()


class _ForwardRaises(CausalSelfAttention):
    def forward(self, x):
        return {}["missing"]


class _ReturnsNone(CausalSelfAttention):
    def forward(self, x):
        super().forward(x)


class _ReturnsPair(CausalSelfAttention):
    def forward(self, x):
        return super().forward(x), None


class _Detached(CausalSelfAttention):
    def forward(self, x):
        return super().forward(x).detach()


class _WrongShape(CausalSelfAttention):
    def forward(self, x):
        return super().forward(x)[:, :1]


class _NoSuper(nn.Module):
    def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
        pass


class _TransposedAttn(CausalSelfAttention):
    def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
        super().__init__(n_embd, n_head, dropout, bias)
        self.c_attn = nn.Linear(n_embd, n_embd, bias=bias)


class _BufferWeights(CausalSelfAttention):
    def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
        super().__init__(n_embd, n_head, dropout, bias)
        weight = self.c_proj.weight.detach().clone()
        del self.c_proj.weight
        self.c_proj.register_buffer("weight", weight)


class _Library(nn.TransformerEncoderLayer):
    def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
        super().__init__(n_embd, n_head, 4 * n_embd, dropout, batch_first=True, norm_first=True)


class _WrapsMultihead(nn.Module):
    def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
        super().__init__()
        self.inner = nn.MultiheadAttention(n_embd, n_head, batch_first=True)


class _Functional(CausalSelfAttention):
    def forward(self, x):
        from torch.nn.functional import scaled_dot_product_attention as attention
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2)
                   for t in self.c_attn(x).split(C, dim=2))
        y = attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class _Noisy(CausalSelfAttention):
    def forward(self, x):
        return F.dropout(super().forward(x), 0.1)


class _WrongGradient(CausalSelfAttention):
    def forward(self, x):
        out = super().forward(x)
        return out.detach() + (out - out.detach()) * 0.5  # right values, half the gradient


AlwaysEqual = type("AlwaysEqual", (), {"__eq__": lambda self, other: True})


class _NotANumber(CausalSelfAttention):
    def forward(self, x):
        return AlwaysEqual()


BAD_ATTENTION = {
    "not a class": (lambda n_embd, n_head: None, "a class that subclasses nn.Module"),
    "an instance": (CausalSelfAttention(8, 2), "a class that subclasses nn.Module"),
    "another class": (MLP, "Expected the class `CausalSelfAttention`"),
    "stub": (type("CausalSelfAttention", (_Raises,), {}), "still raises NotImplementedError"),
    "no super().__init__()": (type("CausalSelfAttention", (_NoSuper,), {}), "super().__init__()"),
    "forward raises": (type("CausalSelfAttention", (_ForwardRaises,), {}), "raised KeyError"),
    "returns None": (type("CausalSelfAttention", (_ReturnsNone,), {}), "returned None"),
    "returns a pair": (type("CausalSelfAttention", (_ReturnsPair,), {}), "should return one torch.Tensor"),
    "wrong shape": (type("CausalSelfAttention", (_WrongShape,), {}), "has shape (2, 1, 32), expected (2, 7, 32)"),
    "object equal to everything": (type("CausalSelfAttention", (_NotANumber,), {}), "should return one torch.Tensor"),
    "detached": (type("CausalSelfAttention", (_Detached,), {}), "not connected to the autograd graph"),
    "wrong gradient": (type("CausalSelfAttention", (_WrongGradient,), {}), "the gradient of the input x is not"),
    "c_attn too narrow": (type("CausalSelfAttention", (_TransposedAttn,), {}), "c_attn is nn.Linear(n_embd, 3 * n_embd)"),
    "weight kept as a buffer": (type("CausalSelfAttention", (_BufferWeights,), {}), "not registered as a parameter"),
    "is a TransformerEncoderLayer": (type("CausalSelfAttention", (_Library,), {}), "uses nn.TransformerEncoderLayer"),
    "wraps nn.MultiheadAttention": (type("CausalSelfAttention", (_WrapsMultihead,), {}),
                                    "uses nn.MultiheadAttention, which does the exercise"),
    "calls F.scaled_dot_product_attention": (type("CausalSelfAttention", (_Functional,), {}),
                                             "uses F.scaled_dot_product_attention, which does the exercise"),
    "random with dropout 0": (type("CausalSelfAttention", (_Noisy,), {}), "changes from call to call"),
}


@pytest.mark.parametrize("case", BAD_ATTENTION, ids=str)
def test_bad_attention_gives_a_clear_failure(case):
    cls, phrase = BAD_ATTENTION[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_attention(cls)
    assert phrase in str(caught.value)


def test_failure_display_hides_our_frames_and_keeps_the_learners():
    class CausalSelfAttention(_ForwardRaises):
        def forward(self, x):
            return x @ self.c_attn.weight  # the learner's bug: the weight is not transposed

    with pytest.raises(CheckFailure) as caught:
        checks.check_attention(CausalSelfAttention)
    shown = "\n".join(caught.value._render_traceback_())
    assert "return x @ self.c_attn.weight" in shown
    assert "_core.py" not in shown and "autograder" not in shown


# ------------------------------------------------------------- causality and dropout

class _PeeksAtNext(CausalSelfAttention):
    """Right everywhere except that position t also reads x[t + 1], by a residual-free leak."""
    def forward(self, x):
        out = super().forward(x)
        return out + 1e-3 * torch.roll(x, shifts=-1, dims=1)


class _SeesOnlyItself(CausalSelfAttention):
    def forward(self, x):
        return self.c_proj(self.c_attn(x).split(x.shape[-1], dim=2)[2])


CAUSAL_MISTAKES = {
    "a small leak from the next position": (_PeeksAtNext, "sees the future"),
    "the past is hidden too": (_SeesOnlyItself, "the past is hidden too"),
}


@pytest.mark.parametrize("case", CAUSAL_MISTAKES, ids=str)
def test_causal_check_names_the_leak(case):
    cls, phrase = CAUSAL_MISTAKES[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_causal(type("CausalSelfAttention", (cls,), {}))
    assert phrase in str(caught.value)


class _GradientOnlyLeak(CausalSelfAttention):
    """Same values as the reference, but a gradient path from the future (x[t+1] enters as
    a zero-valued term)."""
    def forward(self, x):
        nxt = torch.roll(x, shifts=-1, dims=1)
        return super().forward(x) + (nxt - nxt.detach())


def test_causal_check_follows_the_gradient_too():
    with pytest.raises(CheckFailure) as caught:
        checks.check_causal(type("CausalSelfAttention", (_GradientOnlyLeak,), {}))
    assert "with respect to the input at a later position" in str(caught.value)


class _ScalesInEval(MLP):
    """Hand-made dropout that rescales by (1 - p) in evaluation (the pre-2014 convention)."""
    def forward(self, x):
        out = self.c_proj(self.gelu(self.c_fc(x)))
        return self.dropout(out) if self.training else out * (1 - self.dropout.p)


def test_dropout_check_catches_rescaling_in_eval():
    with pytest.raises(CheckFailure) as caught:
        checks.check_dropout(type("MLP", (_ScalesInEval,), {}))
    assert "dropout must change nothing" in str(caught.value)


def test_block_check_names_a_wrong_part_rather_than_the_wiring():
    class Block(nn.Module):  # wired right, around an attention that forgets the scale
        def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
            self.attn = _Unscaled(n_embd, n_head, dropout, bias)
            self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
            self.mlp = MLP(n_embd, dropout, bias)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    with pytest.raises(CheckFailure) as caught:
        checks.check_block(Block)
    message = str(caught.value)
    assert "Your Block is wired right" in message and "your CausalSelfAttention differs" in message


class _Unscaled(CausalSelfAttention):
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        scores = (q @ k.transpose(-2, -1)).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


def test_unscaled_attention_is_named():
    with pytest.raises(CheckFailure) as caught:
        checks.check_attention(type("CausalSelfAttention", (_Unscaled,), {}))
    assert "not scaled" in str(caught.value)


def test_unknown_wiring_mistake_is_blamed_on_the_wiring():
    class Block(nn.Module):
        def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
            self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
            self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
            self.mlp = MLP(n_embd, dropout, bias)

        def forward(self, x):
            x = x + 0.5 * self.attn(self.ln_1(x))  # a mistake no diagnosis knows
            return x + self.mlp(self.ln_2(x))

    with pytest.raises(CheckFailure) as caught:
        checks.check_block(Block)
    assert "so the wiring of forward is at fault" in str(caught.value)
