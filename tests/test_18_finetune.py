"""The checks behind exercise 18_finetune, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference and harmless variations of it, and turns broken
input (wrong types, crashes, shapes) into a CheckFailure in words, never a traceback."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import llmref.finetune as reference
from autograder.checks import CheckFailure
from autograder.checks import finetune as checks


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_check_accepts_the_reference(capsys):
    checks.check_lora(reference.LoRALinear)
    checks.check_lora(reference.LoRALinear, in_features=5, out_features=5, r=5, alpha=2.0, bias=False)
    checks.check_lora_in_gpt(reference.LoRALinear, reference.add_lora, reference.merge_lora)
    checks.check_sft_loss(reference.sft_loss, empty_row=True, batch=4)
    checks.check_sequence_logprob(reference.sequence_logprob)
    checks.check_dpo_loss(reference.dpo_loss)
    checks.check_dpo_pipeline(reference.dpo_loss, reference.sequence_logprob)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 7


def test_harmless_variations_pass():
    # Multiplying by the mask and dividing by its count is the same per-token mean.
    def sft_by_multiplication(logits, targets, loss_mask):
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return (losses * loss_mask).sum() / loss_mask.sum()

    checks.check_sft_loss(sft_by_multiplication)

    # log-probabilities through -F.cross_entropy, and the loss through softplus.
    def logprob_by_cross_entropy(logits, targets, loss_mask):
        lp = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return (lp * loss_mask).sum(-1)

    checks.check_sequence_logprob(logprob_by_cross_entropy)

    def dpo_by_softplus(pc, pr, rc, rr, beta=0.1):
        c, r = beta * (pc - rc), beta * (pr - rr)
        return F.softplus(r - c).mean(), c.detach(), r.detach()

    checks.check_dpo_loss(dpo_by_softplus)


def test_a_merge_that_keeps_its_base_but_forgets_the_scaling_is_named():
    class NoScaleMerge(reference.LoRALinear):
        def merge(self):
            merged = nn.Linear(self.base.in_features, self.base.out_features)
            with torch.no_grad():
                merged.weight.copy_(self.base.weight + self.lora_B @ self.lora_A)
                merged.bias.copy_(self.base.bias)
            return merged

    with pytest.raises(CheckFailure, match="without the scaling"):
        checks.check_lora(NoScaleMerge)


def test_a_zero_A_is_named():
    class ZeroA(reference.LoRALinear):
        def __init__(self, base, r, alpha):
            super().__init__(base, r, alpha)
            nn.init.zeros_(self.lora_A)

    with pytest.raises(CheckFailure, match="neither\\s+ever gets a gradient"):
        checks.check_lora(ZeroA)


@pytest.mark.parametrize("check, fn", [
    (checks.check_lora, lambda base, r, alpha: None),
    (checks.check_lora, lambda base, r, alpha: 1 / 0),
    (checks.check_sft_loss, lambda logits, targets, mask: 2.0),
    (checks.check_sft_loss, lambda logits, targets, mask: logits.sum(-1)),
    (checks.check_sequence_logprob, lambda logits, targets, mask: None),
    (checks.check_sequence_logprob, lambda logits, targets, mask: logits[..., 0]),
    (checks.check_dpo_loss, lambda *args: torch.tensor(0.0)),
    (checks.check_dpo_loss, lambda *args: (torch.tensor(0.0),)),
    (checks.check_dpo_loss, lambda *args: "loss"),
])
def test_broken_input_is_a_check_failure(check, fn):
    with pytest.raises(CheckFailure):
        check(fn)


def test_the_stub_fails_with_not_implemented():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    for check in (checks.check_sft_loss, checks.check_sequence_logprob, checks.check_dpo_loss):
        with pytest.raises(CheckFailure, match="NotImplementedError"):
            check(stub)


def test_checks_restore_the_learners_torch_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_sft_loss(reference.sft_loss)
    assert torch.equal(torch.rand(3), expected)
