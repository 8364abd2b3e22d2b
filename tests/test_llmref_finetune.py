"""llmref.finetune against independent references: Hugging Face peft's LoRA on the same
matrices, F.cross_entropy for the masked losses, the DPO formula in NumPy float64; and
bad input refused with a message naming the value."""
from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmref.finetune import (LoRALinear, add_lora, dpo_loss, merge_lora, parameter_counts,
                             sequence_logprob, sft_loss)
from llmref.gpt import GPT, GPTConfig


def tiny_gpt(seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=19, block_size=10, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()


# ----------------------------------------------------------------------------- LoRA

@pytest.mark.slow  # importing peft imports transformers: seconds
@pytest.mark.parametrize("r, alpha, bias", [(4, 8.0, True), (1, 32.0, False), (6, 3.0, True)])
def test_lora_matches_peft(r, alpha, bias):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import LoraConfig, get_peft_model

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(12, 20, bias=bias)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(r)
    ours_base = Tiny()
    theirs = get_peft_model(copy.deepcopy(ours_base), LoraConfig(
        r=r, lora_alpha=alpha, target_modules=["proj"], lora_dropout=0.0, bias="none"))
    layer = theirs.base_model.model.proj
    with torch.no_grad():  # peft starts with B = 0 too: give both adapters the same nonzero B
        layer.lora_B["default"].weight.normal_()
    ours = LoRALinear(ours_base.proj, r, alpha)
    with torch.no_grad():
        ours.lora_A.copy_(layer.lora_A["default"].weight)
        ours.lora_B.copy_(layer.lora_B["default"].weight)
    x = torch.randn(3, 5, 12)
    # float32 through the same three products in another order: ~1e-6 of outputs of order 1.
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    trainable, _ = theirs.get_nb_trainable_parameters()
    assert trainable == r * (12 + 20) == parameter_counts(ours)[0]
    merged = theirs.merge_and_unload()
    torch.testing.assert_close(ours.merge().weight, merged.proj.weight, rtol=1e-6, atol=1e-6)


def test_lora_formula_merge_and_gradients():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    layer = LoRALinear(base, 3, 6.0)
    x = torch.randn(4, 8)
    assert torch.equal(layer(x), base(x))  # B = 0: exactly the base
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = base(x) + 2.0 * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected)
    layer(x).sum().backward()
    assert base.weight.grad is None and base.bias.grad is None
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None
    weight = base.weight.detach().clone()
    merged = layer.merge()
    assert torch.equal(base.weight, weight)  # merge leaves the base alone
    torch.testing.assert_close(merged(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("r", [0, -1, 7, 100])
def test_a_rank_outside_the_layer_is_refused_naming_it(r):
    with pytest.raises(ValueError, match=rf"r={r}\b.*1\.\.6"):
        LoRALinear(nn.Linear(6, 9), r, 1.0)


def test_lora_wraps_only_linear_layers():
    with pytest.raises(TypeError, match="Conv1d"):
        LoRALinear(nn.Conv1d(3, 3, 1), 1, 1.0)


def test_add_lora_on_the_gpt_counts_merges_and_freezes():
    model = tiny_gpt()
    ids = torch.randint(19, (2, 10))
    before = model(ids)[0].detach()
    names = add_lora(model, r=2, alpha=4.0)
    assert len(names) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    trainable, total = parameter_counts(model)
    per_block = 2 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16))
    assert trainable == 2 * per_block
    assert total == trainable + sum(p.numel() for p in tiny_gpt().parameters())
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    torch.testing.assert_close(model(ids)[0], before)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.1)
        adapted = model(ids)[0]
        assert merge_lora(model) == 8
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        torch.testing.assert_close(model(ids)[0], adapted, rtol=1e-4, atol=1e-4)


def test_add_lora_refuses_without_changing_the_model():
    model = tiny_gpt()
    with pytest.raises(ValueError, match=r"no nn.Linear named one of \('query',\).*c_attn"):
        add_lora(model, 2, 4.0, targets=("query",))
    with pytest.raises(ValueError, match="r=17"):
        add_lora(model, 17, 4.0)  # fits c_fc (16 -> 64) nowhere: min is 16
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- SFT, log-probs

def batch(seed=0, B=3, T=7, V=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    targets = torch.randint(V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) > 0.4
    mask[0, -1] = True
    return logits, targets, mask


def test_sft_loss_is_cross_entropy_with_the_prompt_ignored():
    logits, targets, mask = batch()
    expected = F.cross_entropy(logits.transpose(1, 2), torch.where(mask, targets, -100), ignore_index=-100)
    torch.testing.assert_close(sft_loss(logits, targets, mask), expected, rtol=1e-12, atol=0)


def test_sft_loss_ignores_the_prompts_logits_entirely():
    logits, targets, mask = batch(1)
    changed = logits.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), logits.shape[-1], dtype=torch.float64) * 1e3
    changed[~mask][:, 0] = -math.inf
    assert torch.equal(sft_loss(changed, targets, mask), sft_loss(logits, targets, mask))


def test_sequence_logprob_sums_what_sft_loss_averages():
    logits, targets, mask = batch(2, B=4)
    lp = sequence_logprob(logits, targets, mask)
    torch.testing.assert_close(-lp.sum() / mask.sum(), sft_loss(logits, targets, mask))
    # Independent: a product of the probabilities, for each sequence, in NumPy.
    p = np.exp(logits.numpy() - np.log(np.exp(logits.numpy()).sum(-1, keepdims=True)))
    picked = np.take_along_axis(p, targets.numpy()[..., None], -1)[..., 0]
    np.testing.assert_allclose(lp.numpy(), np.log(np.where(mask.numpy(), picked, 1.0)).sum(-1), rtol=1e-10)


def test_sequence_logprob_is_finite_where_softmax_underflows():
    logits, targets, mask = batch(3)
    logits = (logits * 500).float()
    assert torch.isfinite(sequence_logprob(logits, targets, mask)).all()


@pytest.mark.parametrize("change, message", [
    (lambda l, t, m: (l[0], t, m), r"logits must have shape \(B, T, V\)"),
    (lambda l, t, m: (l, t[:, :-1], m), r"targets must have shape \(B, T\) = \(3, 7\)"),
    (lambda l, t, m: (l, t, m.long()), "loss_mask must be a bool tensor"),
    (lambda l, t, m: (l, t.float(), m), "targets must be integer token ids"),
    (lambda l, t, m: (l, t, torch.zeros_like(m)), "loss_mask selects no position"),
])
def test_sft_loss_refuses_bad_input(change, message):
    with pytest.raises(ValueError, match=message):
        sft_loss(*change(*batch()))


# ----------------------------------------------------------------------------- DPO

def test_dpo_loss_is_the_formula_in_float64():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-30 + 20 * torch.randn(9, generator=g, dtype=torch.float64) for _ in range(4))
    pc[0] = rc[0] + 5000  # margins of +-500 with beta = 0.1: log(sigmoid()) would fail
    pr[1] = rr[1] + 5000
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.1)
    z = 0.1 * ((pc - rc) - (pr - rr)).numpy()
    np.testing.assert_allclose(float(loss), np.mean(np.logaddexp(0, -z)), rtol=1e-12)
    np.testing.assert_allclose(chosen.numpy(), 0.1 * (pc - rc).numpy())
    assert not chosen.requires_grad and not rejected.requires_grad


def test_dpo_loss_at_the_reference_is_log_2_and_descent_widens_the_margin():
    policy, reference = tiny_gpt(1), tiny_gpt(1).requires_grad_(False)
    ids_c = torch.randint(19, (4, 10), generator=torch.Generator().manual_seed(0))
    ids_r = ids_c.clone()
    ids_r[:, 5:] = torch.randint(19, (4, 5), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(4, 9, dtype=torch.bool)
    mask[:, 4:] = True

    def logp(model, ids):
        return sequence_logprob(model(ids[:, :-1])[0], ids[:, 1:], mask)

    with torch.no_grad():
        rc, rr = logp(reference, ids_c), logp(reference, ids_r)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    margins = []
    for step in range(4):
        loss, c, r = dpo_loss(logp(policy, ids_c), logp(policy, ids_r), rc, rr, beta=0.5)
        if step == 0:
            assert math.isclose(float(loss.detach()), math.log(2), rel_tol=1e-6)
        margins.append(float((c - r).mean()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert margins[-1] > margins[0] + 0.1


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan")])
def test_dpo_loss_refuses_a_beta_that_is_not_positive(beta):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=f"beta must be > 0.*got {beta}"):
        dpo_loss(x, x, x, x, beta)


def test_dpo_loss_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"one shape.*\(2,\).*\(3,\)"):
        dpo_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3), torch.zeros(3))
