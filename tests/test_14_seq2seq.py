"""The checks behind exercise 14_seq2seq, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference quickly, bad input fails in words (a
CheckFailure), not tracebacks, and the last check never trains a model with a wrong piece."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks import seq2seq as checks
from llmref import seq2seq as ref

FAST = [(checks.check_shapes, ref.CrossAttention), (checks.check_cross_attention, ref.CrossAttention),
        (checks.check_padding, ref.CrossAttention), (checks.check_loss, ref.seq2seq_loss),
        (checks.check_greedy, ref.greedy_decode)]


@pytest.mark.parametrize("check, piece", FAST, ids=lambda x: getattr(x, "__name__", ""))
def test_reference_passes_each_check_quickly(check, piece, capsys):
    check(piece)  # the first call may import parts of torch
    start = time.perf_counter()
    check(piece)
    # Well under a second on an idle machine; the margin is for a busy 2-core CI runner.
    assert time.perf_counter() - start < 2.0
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_checks_leave_the_global_random_state_and_threads_alone():
    torch.manual_seed(123)
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    checks.check_padding(ref.CrossAttention)
    checks.check_greedy(ref.greedy_decode)
    assert torch.equal(torch.get_rng_state(), before) and torch.get_num_threads() == threads


class _OneProjection(nn.Module):
    def __init__(self, n_embd, n_head, bias=True):
        super().__init__()
        self.in_proj = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.out_proj = nn.Linear(n_embd, n_embd, bias=bias)


class _Averaged(ref.CrossAttention):
    def forward(self, x, memory, padding_mask=None, return_weights=False):
        out, weights = super().forward(x, memory, padding_mask, return_weights=True)
        return (out, weights.mean(1)) if return_weights else out


class _Detached(ref.CrossAttention):
    def forward(self, x, memory, padding_mask=None, return_weights=False):
        result = super().forward(x, memory, padding_mask, return_weights)
        return tuple(r.detach() for r in result) if return_weights else result.detach()


class _UsesTorch(ref.CrossAttention):
    def forward(self, x, memory, padding_mask=None, return_weights=False):
        torch.nn.functional.scaled_dot_product_attention(x[:, None], memory[:, None], memory[:, None])
        return super().forward(x, memory, padding_mask, return_weights)


@pytest.mark.parametrize("check, bad, phrase", [
    (checks.check_shapes, ref.CrossAttention(8, 2), "class that subclasses nn.Module"),
    (checks.check_shapes, _OneProjection, "q_proj, k_proj, v_proj and out_proj"),
    (checks.check_shapes, _Averaged, "not their average"),
    (checks.check_cross_attention, _Detached, "grad_fn"),
    (checks.check_cross_attention, _UsesTorch, "does the exercise for you"),
], ids=["instance", "one projection", "averaged weights", "detached", "sdpa"])
def test_bad_cross_attention_gets_a_clear_message(check, bad, phrase):
    with pytest.raises(CheckFailure, match=phrase):
        check(bad)


@pytest.mark.parametrize("bad, phrase", [
    (lambda *a, **k: 1.0, "not loss.item()"),
    (lambda model, src, mask, targets, **k: ref.seq2seq_loss(model, src, mask, targets, **k).detach(),
     "no grad_fn"),
    (lambda *a, **k: torch.zeros(3, requires_grad=True), "one number"),
])
def test_bad_loss_gets_a_clear_message(bad, phrase):
    with pytest.raises(CheckFailure, match=phrase):
        checks.check_loss(bad)


@pytest.mark.parametrize("bad, phrase", [
    (lambda *a, **k: [[1, 2]], "one tensor"),
    (lambda *a, **k: ref.greedy_decode(*a, **k).float(), "int64"),
    (lambda model, src, mask, **k: torch.cat([torch.full((src.shape[0], 1), k["bos_id"]),
                                              ref.greedy_decode(model, src, mask, **k)], dim=1),
     "starts with BOS"),
])
def test_bad_greedy_decode_gets_a_clear_message(bad, phrase):
    with pytest.raises(CheckFailure, match=phrase):
        checks.check_greedy(bad)


def test_the_trained_check_stops_before_training_on_a_wrong_piece():
    def no_shift(model, src, mask, targets, bos_id=ref.BOS_ID, pad_id=ref.PAD_ID):
        logits = model(src, mask, targets)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)

    def must_not_train(model, config):
        raise AssertionError("trained although a piece is wrong")

    start = time.perf_counter()
    with pytest.raises(CheckFailure, match="(?s)Before training.*test_seq2seq_loss"):
        checks.check_trained(ref.Seq2Seq, must_not_train, no_shift, ref.greedy_decode)
    assert time.perf_counter() - start < 5.0


def test_an_untrained_model_fails_the_exact_match_clearly():
    def no_training(model, config):
        return {"loss": [], "seconds": 0.0}

    with pytest.raises(CheckFailure, match=r"(?s)0\.0% of 500 held-out dates.*at least 95%"):
        checks.check_trained(ref.Seq2Seq, no_training, ref.seq2seq_loss, ref.greedy_decode)
    with pytest.raises(CheckFailure, match="the trained model"):
        checks.check_exact_match(None, ref.greedy_decode)
