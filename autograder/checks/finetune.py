"""Checks for exercise 18_finetune: LoRA, the masked SFT loss, sequence log-probabilities, DPO.

``LoRALinear`` is compared with its formula, base(x) + (alpha / r) x A^T B^T, computed in
float64 from the learner's own A and B (set to seeded random values, since B starts at 0);
its gradients with autograd through that formula; its merged layer with the unmerged one.
``sft_loss`` and ``sequence_logprob`` are compared with ``F.cross_entropy`` in float64 (with
``ignore_index`` for the prompt, a reference independent of llmref), and ``dpo_loss`` with
the formula in NumPy float64, where -log sigmoid(z) = logaddexp(0, -z). The reference
implementations themselves (llmref.finetune) are tested against Hugging Face ``peft`` and
these formulas in tests/test_llmref_finetune.py.

On a mismatch a check computes what each common mistake would have given (the mask
ignored, the targets shifted twice, a mean per sequence, the reference model left out, ...)
and names the one the learner's answer matches. Every check runs on one thread with its own
seed; the learner's thread setting and torch's random state are restored afterwards.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmref.gpt import GPT, GPTConfig

from ._core import (CheckFailure, refuse_shortcuts, as_float_array, call_learner, describe, fail, fail_from,
                    find_bad_values, in_learners_process, passed, torch_isolated, worst_mismatch)

# Libraries that add adapters or compute preference losses for the learner (peft is the
# checks' independent reference for LoRA).
SHORTCUTS = {"peft": "peft", "trl": "trl"}
WHY_LORA = ("Write the adapter yourself: a frozen base, A (r, in) and B (out, r) with B at zero, "
            "and the scaling alpha / r. Knowing what peft adds to a layer is the exercise.")
WHY_DPO = ("Write the loss yourself from the four log-probabilities: the margin against the "
           "reference model and its log-sigmoid are the exercise.")

# LoRA in float32 against the formula in float64: a product of three matrices of inner sizes
# <= 40 on values of order 1 rounds to ~1e-6 (measured: < 5e-7); 1e-5 leaves a margin of 20,
# and every known mistake moves outputs by more than 1e-1.
LORA_TOL = 1e-5
# A mean of cross-entropies (of order 3) in float32: rounding < 3e-7 relative (measured).
LOSS_RTOL = 1e-6
# Gradients of a mean over N tokens are ~1/N per entry; float32 rounding ~1e-8 absolute.
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-7
# Sums of up to 10 log-probabilities of size up to ~600 (logits scaled by 100) in float32:
# each log_softmax rounds to ~6e-5 absolute at that size, so 1e-5 relative to the sum (which
# is in the hundreds) is comfortably above rounding and far below any mistake.
LOGPROB_RTOL, LOGPROB_ATOL = 1e-5, 1e-4
# The DPO loss in float32: differences of log-probabilities of size ~100, scaled by beta; the
# margin rounds to ~1e-5 absolute for the largest margins, and the loss, an average of terms
# of which the large ones equal -margin, inherits that: 1e-6 relative plus 1e-5 absolute.
DPO_RTOL, DPO_ATOL = 1e-6, 1e-5

INSTALL = "Re-run the cell that defines it."


def _allclose(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> bool:
    return actual.shape == expected.shape and bool(np.allclose(actual, expected, rtol=rtol, atol=atol))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float64).cpu().numpy()


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    """The learner's result must stay a tensor: the training loop calls backward() on it."""
    __tracebackhide__ = True
    if value is None:
        fail(f"{what} is None. Does your function end with a `return` statement?")
    if not isinstance(value, torch.Tensor):
        fail(f"{what} is a {type(value).__name__}, not a torch tensor. Keep it a tensor (no "
             "`.item()`, no NumPy) so that `loss.backward()` can train through it.")
    return value


# ============================================================================ LoRA

def _base_linear(in_features: int, out_features: int, bias: bool, gen: torch.Generator) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        base = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        base.weight.copy_(torch.randn(out_features, in_features, generator=gen) / math.sqrt(in_features))
        if bias:
            base.bias.copy_(0.5 * torch.randn(out_features, generator=gen))
    return base


def _parameter(layer: nn.Module, name: str, shape: tuple[int, ...], what: str) -> torch.Tensor:
    __tracebackhide__ = True
    value = getattr(layer, name, None)
    if not isinstance(value, nn.Parameter):
        fail(f"The layer has no nn.Parameter `{name}` (found {describe(value)}). Store {what} as "
             f"`self.{name} = nn.Parameter(...)`, shape {shape}: the checks and add_lora use that name, "
             "and only an nn.Parameter is trained by the optimizer.")
    if tuple(value.shape) != shape:
        fail(f"`{name}` has shape {tuple(value.shape)}, expected {shape}: {what}.")
    return value


def _lora_variants(x, W, b, A, B, r, alpha) -> dict[str, np.ndarray]:
    """What common mistakes compute, float64."""
    base = x @ W.T + (b if b is not None else 0)
    low = x @ A.T @ B.T
    return {
        "scaled by alpha instead of alpha / r": base + alpha * low,
        "scaled by r / alpha instead of alpha / r": base + (r / alpha) * low,
        "not scaled at all (alpha / r is missing)": base + low,
        "missing the base layer's output": (alpha / r) * low,
        "missing the base layer's bias": x @ W.T + (alpha / r) * low,
    }


def _build_lora(LoRALinear, base: nn.Linear, r: int, alpha: float) -> nn.Module:
    __tracebackhide__ = True
    with refuse_shortcuts(SHORTCUTS, "LoRALinear", WHY_LORA):
        layer = call_learner(LoRALinear, base, r, alpha, name="LoRALinear")
    if not isinstance(layer, nn.Module):
        fail(f"LoRALinear(...) made a {type(layer).__name__}, not an nn.Module. Is it a class "
             "that subclasses nn.Module and calls super().__init__()?")
    return layer


def check_lora(LoRALinear, *, seed: int = 30, in_features: int = 12, out_features: int = 20,
               r: int = 4, alpha: float = 8.0, bias: bool = True) -> None:
    """LoRALinear starts as its base, computes base(x) + (alpha/r) x A^T B^T, trains only A and
    B (r(in + out) parameters) with the right gradients, merges into an equal nn.Linear without
    changing itself, and refuses ranks outside 1..min(in, out)."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        gen = torch.Generator().manual_seed(seed)
        base = _base_linear(in_features, out_features, bias, gen)
        W0 = base.weight.detach().clone()
        b0 = base.bias.detach().clone() if bias else None
        layer = _build_lora(LoRALinear, base, r, alpha)
        shape = f"nn.Linear({in_features}, {out_features}), r={r}, alpha={alpha}"

        # --- structure: which tensors there are, and which of them train
        A = _parameter(layer, "lora_A", (r, in_features), "A, (r, in_features)")
        B = _parameter(layer, "lora_B", (out_features, r), "B, (out_features, r)")
        frozen = [name for name, p in base.named_parameters() if p.requires_grad]
        if frozen:
            fail(f"For {shape}, the base layer's {' and '.join(frozen)} still requires a gradient: "
                 "LoRA trains only A and B. Freeze the base with `p.requires_grad_(False)` for each of "
                 "its parameters; otherwise the optimizer updates all of it, as full fine-tuning would.")
        trainable = [(n, p) for n, p in layer.named_parameters() if p.requires_grad]
        count = sum(p.numel() for _, p in trainable)
        expected_count = r * (in_features + out_features)
        if count != expected_count or {id(p) for _, p in trainable} != {id(A), id(B)}:
            fail(f"For {shape}, the trainable parameters are {[n for n, _ in trainable]} "
                 f"({count} numbers); expected only lora_A and lora_B, r * (in + out) = "
                 f"{expected_count}.")
        scaling = getattr(layer, "scaling", None)
        if not isinstance(scaling, (int, float)) or not math.isclose(scaling, alpha / r, rel_tol=1e-12):
            fail(f"For {shape}, `scaling` is {scaling!r}; expected alpha / r = {alpha / r:g}. Dividing "
                 "by r keeps the size of the update at initialisation the same whatever the rank, so "
                 "a learning rate tuned for one r works for another; alpha alone makes it grow with r.")
        if not torch.equal(base.weight.detach(), W0):
            fail("Building the LoRALinear changed the base layer's weight: wrap it, don't alter it.")

        # --- initialisation
        if bool((B.detach() != 0).any()):
            fail(f"For {shape}, lora_B should start at zero, so that the adapted layer starts as "
                 "exactly the pretrained one (B A = 0); yours has nonzero entries. Initialise B with "
                 "zeros and A at random.")
        if not bool((A.detach() != 0).any()) or not bool(torch.isfinite(A.detach()).all()):
            fail(f"For {shape}, lora_A starts at zero (or not finite). With both A and B zero neither "
                 "ever gets a gradient (each one's gradient goes through the other), and the adapter "
                 "never learns: initialise A at random, like nn.Linear's weight "
                 "(nn.init.kaiming_uniform_(A, a=math.sqrt(5))).")
        x = torch.randn(2, 3, in_features, generator=gen)
        y0 = call_learner(layer, x, name="LoRALinear.forward")
        y0 = as_float_array(y0, "LoRALinear's output at initialisation", (2, 3, out_features))
        x64 = _numpy(x)
        W, b = _numpy(W0), (_numpy(b0) if bias else None)
        at_init = x64 @ W.T + (b if bias else 0)
        if not _allclose(y0, at_init, LORA_TOL, LORA_TOL):
            fail(f"For {shape}, right after construction (B = 0) the output should equal the base "
                 f"layer's; {worst_mismatch(y0, at_init)}.")

        # --- the formula, with A and B away from their initial values
        with torch.no_grad():
            A.copy_(torch.randn(r, in_features, generator=gen) / math.sqrt(in_features))
            B.copy_(torch.randn(out_features, r, generator=gen) / math.sqrt(r))
        An, Bn = _numpy(A), _numpy(B)
        expected = at_init + (alpha / r) * (x64 @ An.T @ Bn.T)
        y_tensor = call_learner(layer, x, name="LoRALinear.forward")
        y = as_float_array(y_tensor, "LoRALinear's output", (2, 3, out_features))
        if not _allclose(y, expected, LORA_TOL, LORA_TOL):
            for mistake, value in _lora_variants(x64, W, b, An, Bn, r, alpha).items():
                if _allclose(y, value, LORA_TOL, LORA_TOL):
                    fail(f"For {shape} with nonzero A and B, your output is {mistake}. The layer "
                         "computes base(x) + (alpha / r) * x A^T B^T.")
            fail(f"For {shape} with nonzero A and B, the output is not base(x) + (alpha / r) x A^T B^T: "
                 f"{worst_mismatch(y, expected)}.")

        # --- gradients reach A and B only, and are the formula's
        if not isinstance(y_tensor, torch.Tensor) or y_tensor.grad_fn is None:
            fail("LoRALinear's output has no gradient: is A or B detached, or the forward pass "
                 "run under torch.no_grad()?")
        g = torch.randn(2, 3, out_features, generator=gen)
        call_learner(lambda: (y_tensor * g).sum().backward(), name="backward through LoRALinear")
        Ad = torch.tensor(An, requires_grad=True)
        Bd = torch.tensor(Bn, requires_grad=True)
        ((alpha / r) * (torch.tensor(x64) @ Ad.T @ Bd.T) * g.double()).sum().backward()
        for name, p, ref in (("lora_A", A, Ad), ("lora_B", B, Bd)):
            if p.grad is None or not bool(p.grad.abs().sum() > 0):
                fail(f"For {shape}, {name} received no gradient: the adapter's path must stay in the "
                     "graph (no .detach(), no torch.no_grad() in forward).")
            if not _allclose(_numpy(p.grad), _numpy(ref.grad), LORA_TOL, LORA_TOL):
                fail(f"For {shape}, the gradient of {name} is not the formula's: "
                     f"{worst_mismatch(_numpy(p.grad), _numpy(ref.grad))}.")
        if base.weight.grad is not None and bool(base.weight.grad.abs().sum() > 0):
            fail("The base layer's weight received a gradient: freeze it.")

        # --- merging
        with torch.no_grad():
            before = _numpy(layer(x))
        merged = call_learner(layer.merge, name="LoRALinear.merge")
        if not isinstance(merged, nn.Linear):
            fail(f"merge() returned {describe(merged)}; it should return a new nn.Linear whose weight "
                 "is W + (alpha / r) B A, with the base's bias.")
        if not torch.equal(base.weight.detach(), W0):
            fail("merge() changed the base layer's weight. Then the LoRALinear adds its update twice "
                 "(once in the changed base, once in forward): build a new nn.Linear and leave the "
                 "base as it was.")
        with torch.no_grad():
            merged_y = as_float_array(call_learner(merged, x, name="the merged layer"),
                                      "the merged layer's output", (2, 3, out_features))
            after = _numpy(layer(x))
        if not _allclose(merged_y, before, LORA_TOL, LORA_TOL):
            variants = {"without the scaling alpha / r": W + Bn @ An,
                        "without the base weight": (alpha / r) * Bn @ An}
            for mistake, weight in variants.items():
                if _allclose(merged_y, x64 @ weight.T + (b if bias else 0), LORA_TOL, LORA_TOL):
                    fail(f"The merged layer's weight is {mistake}: it must be W + (alpha / r) B A.")
            if bias and _allclose(merged_y, before - b, LORA_TOL, LORA_TOL):
                fail("The merged layer has lost the base's bias: copy it over.")
            fail(f"The merged layer does not compute what the adapted one does: "
                 f"{worst_mismatch(merged_y, before)}.")
        if not _allclose(after, before, LORA_TOL, LORA_TOL):
            fail("After merge(), the LoRALinear itself computes something else: merge() must leave "
                 "it (and its base) unchanged.")

        # --- ranks that make no sense
        limit = min(in_features, out_features)
        for bad in (limit + 1, 0):
            fresh = _base_linear(in_features, out_features, bias, gen)
            try:
                LoRALinear(fresh, bad, alpha)
            except ValueError as exc:
                message = str(exc)
                if str(bad) not in message or str(limit) not in message:
                    fail(f"LoRALinear(nn.Linear({in_features}, {out_features}), r={bad}) raised "
                         f"ValueError({message!r}). Say what is wrong: name the rank given ({bad}) and "
                         f"the allowed range (1 to {limit}).")
            except Exception as exc:
                fail_from(exc, f"LoRALinear(nn.Linear({in_features}, {out_features}), r={bad}) raised "
                               f"{type(exc).__name__}; raise ValueError naming the rank and the allowed "
                               f"range 1..{limit} yourself, before using it.")
            else:
                fail(f"LoRALinear accepted r={bad} for nn.Linear({in_features}, {out_features}). A rank "
                     f"must be between 1 and min(in, out) = {limit}: B A can have no higher rank, so a "
                     "larger r only adds redundant parameters. Raise ValueError naming r and that range.")
    passed(f"LoRALinear for {shape}: starts as its base, matches the formula and its gradients, "
           f"trains {expected_count} parameters, merges exactly, refuses r=0 and r={limit + 1}.")


def check_lora_in_gpt(LoRALinear, add_lora, merge_lora, *, seed: int = 33, r: int = 2,
                      alpha: float = 4.0) -> None:
    """Adapters in a tiny GPT (the given add_lora around the learner's LoRALinear): the model
    starts as it was, trains only the adapters, and merges back into the same function."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        config = GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
        model = in_learners_process(GPT(config).eval())
        ids = torch.randint(23, (2, 8))
        with torch.no_grad():
            original = _numpy(model(ids)[0])
        with refuse_shortcuts(SHORTCUTS, "add_lora", WHY_LORA):
            call_learner(add_lora, model, r, alpha, name="add_lora")
        expected_count = config.n_layer * r * (16 + 48 + 16 + 16 + 16 + 64 + 64 + 16)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if trainable != expected_count:
            fail(f"With adapters of rank {r} on c_attn, c_proj and c_fc of a 2-layer GPT of width 16, "
                 f"{trainable} parameters train; expected {expected_count}, r * (in + out) summed over "
                 "the adapted layers. Is the base frozen, and are A and B the only new parameters?")
        with torch.no_grad():
            adapted = _numpy(model(ids)[0])
        if not _allclose(adapted, original, LORA_TOL, LORA_TOL):
            fail("A GPT with fresh adapters computes something else than before: "
                 f"{worst_mismatch(adapted, original)}. B must start at zero.")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, LoRALinear):
                    module.lora_B.copy_(0.1 * torch.randn(module.lora_B.shape, generator=gen))
            tuned = _numpy(model(ids)[0])
            with refuse_shortcuts(SHORTCUTS, "merge_lora", WHY_LORA):
                call_learner(merge_lora, model, name="merge_lora")
            merged = _numpy(model(ids)[0])
        if not _allclose(merged, tuned, 1e-4, 1e-4):  # through two blocks: rounding ~1e-6 on logits ~1
            fail(f"The merged GPT differs from the adapted one: {worst_mismatch(merged, tuned)}.")
    passed(f"A GPT with rank-{r} adapters starts as it was, trains {expected_count} parameters, "
           "and merges into the same function.")


# ============================================================================ SFT

def _token_batch(seed: int, batch: int, length: int, vocab: int, scale: float, empty_row: bool):
    """Logits, targets and a mask: each row a prompt, an answer, then padding (all False)."""
    gen = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(batch, length, vocab, generator=gen)).requires_grad_(True)
    targets = torch.randint(vocab, (batch, length), generator=gen)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for row in range(batch):
        start = int(torch.randint(0, max(1, length - 1), (1,), generator=gen))
        end = int(torch.randint(start + 1, length + 1, (1,), generator=gen))
        mask[row, start:end] = True
    if not bool(mask[:, 0].all()) and batch > 0:
        mask[0, 0] = False  # at least one row whose prompt is non-empty (the usual case)
    if empty_row and batch > 1:
        mask[-1] = False
    if not bool(mask.any()):
        mask[0, -1] = True
    return logits, targets, mask


def _token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(target) per position in float64 by F.cross_entropy, (B, T)."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.double().reshape(B * T, V), targets.reshape(B * T),
                           reduction="none").reshape(B, T)


def _sft_variants(logits, targets, mask) -> dict[str, float]:
    """What the common mistakes compute, float64, as numbers (NaN where one is undefined)."""
    with torch.no_grad():
        losses = _token_losses(logits, targets)
        m = mask.double()
        out = {
            "the mean over every position, prompt included: the mask is ignored":
                float(losses.mean()),
            "the masked losses summed, then divided by the number of ALL positions":
                float((losses * m).sum() / m.numel()),
            "a mean per sequence, then a mean over the batch: the contract is per token, "
            "every answer token of the batch weighing the same":
                float(((losses * m).sum(1) / m.sum(1)).mean()),
            "the prompt's positions, not the answer's: the mask is inverted":
                float(losses[~mask].mean()) if bool((~mask).any()) else math.nan,
            "a sum, not a mean, over the answer's tokens":
                float(losses[mask].sum()),
        }
        if logits.shape[1] > 1:  # shifted once more: logits[:, :-1] against targets[:, 1:]
            shifted = _token_losses(logits[:, :-1], targets[:, 1:])
            for what, chosen in (("mask[:, 1:]", mask[:, 1:]), ("mask[:, :-1]", mask[:, :-1])):
                if bool(chosen.any()):
                    out[f"shifted by one position (logits[:, :-1] against targets[:, 1:], {what}). "
                        "The targets are already the next tokens and the mask is already aligned "
                        "with them: compare logits[:, t] with targets[:, t]"] = float(shifted[chosen].mean())
    return out


def check_sft_loss(sft_loss, *, seed: int = 40, batch: int = 3, length: int = 8, vocab: int = 13,
                   empty_row: bool = False) -> None:
    """sft_loss equals F.cross_entropy's mean over the answer's tokens (the prompt's given
    ignore_index), per token across the batch, with the same gradient."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        logits, targets, mask = _token_batch(seed, batch, length, vocab, 2.0, empty_row)
        what = f"logits {tuple(logits.shape)}, {int(mask.sum())} answer tokens"
        if empty_row:
            what += ", one sequence with no answer token"
        # The independent reference: ignore_index drops the prompt, the default mean is per token.
        ref_logits = logits.detach().double().requires_grad_(True)
        ignored = torch.where(mask, targets, torch.full_like(targets, -100))
        expected_t = F.cross_entropy(ref_logits.reshape(-1, vocab), ignored.reshape(-1), ignore_index=-100)
        expected_t.backward()
        expected = float(expected_t.detach())

        loss = _as_tensor(call_learner(sft_loss, logits, targets, mask.clone(), name="sft_loss"),
                          "sft_loss's result")
        value = as_float_array(loss, "sft_loss's result", ())
        if math.isnan(float(value)):
            fail(f"For {what}, sft_loss returned NaN. A sequence whose mask is all False makes a "
                 "per-sequence mean 0/0: average over the answer tokens of the whole batch instead "
                 "(sum of their losses / their number).")
        if not math.isclose(float(value), expected, rel_tol=LOSS_RTOL, abs_tol=1e-7):
            for mistake, wrong in _sft_variants(logits, targets, mask).items():
                if math.isclose(float(value), wrong, rel_tol=LOSS_RTOL, abs_tol=1e-7):
                    fail(f"For {what}, your loss {float(value):.6g} is {mistake}. Expected {expected:.6g}.")
            fail(f"For {what}, sft_loss gave {float(value):.6g}; the mean cross-entropy over the "
                 f"positions where loss_mask is True is {expected:.6g}.")
        if loss.grad_fn is None:
            fail("sft_loss's result has no gradient (grad_fn is None): was it computed under "
                 "torch.no_grad(), or rebuilt from a number? loss.backward() must reach the logits.")
        call_learner(loss.backward, name="sft_loss(...).backward")
        got, ref = _numpy(logits.grad), _numpy(ref_logits.grad)
        if not _allclose(got, ref, GRAD_RTOL, GRAD_ATOL):
            fail(f"For {what}, the gradient of sft_loss with respect to the logits differs from the "
                 f"reference's: {worst_mismatch(got, ref)}. The prompt's positions must get a zero gradient.")
    passed(f"sft_loss for {what}: the per-token mean over the answer, {expected:.4f}, and its gradient.")


# ============================================================================ log-probabilities

def check_sequence_logprob(sequence_logprob, *, seed: int = 50, batch: int = 3, length: int = 7,
                           vocab: int = 11, scale: float = 100.0) -> None:
    """sequence_logprob sums -F.cross_entropy over each sequence's answer, stays finite for
    logits large enough that softmax underflows in float32, and has the reference's gradient."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        logits, targets, mask = _token_batch(seed, batch, length, vocab, scale, empty_row=batch > 2)
        what = f"logits {tuple(logits.shape)} of size ~{scale:g}"
        ref_logits = logits.detach().double().requires_grad_(True)
        token_logps = -_token_losses(ref_logits, targets)
        expected_t = torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(1)
        expected_t.sum().backward()
        expected = _numpy(expected_t)

        result = _as_tensor(call_learner(sequence_logprob, logits, targets, mask.clone(),
                                         name="sequence_logprob"), "sequence_logprob's result")
        got = as_float_array(result, "sequence_logprob's result", (batch,))
        bad = find_bad_values(got)
        if bad:
            fail(f"For {what}, sequence_logprob returned {bad}. torch.log(torch.softmax(...)) gives "
                 "log(0) = -inf for a token whose probability underflows in float32; use "
                 "torch.log_softmax, which computes z - logsumexp(z) and stays finite.")
        if not _allclose(got, expected, LOGPROB_RTOL, LOGPROB_ATOL):
            with torch.no_grad():
                lp = -_token_losses(logits, targets)
                raw = logits.detach().double().gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                m = mask.double()
                variants = {
                    "a mean over the answer's tokens, not their sum: DPO needs the log-probability "
                    "of the whole answer": _numpy((lp * m).sum(1) / m.sum(1).clamp(min=1)),
                    "summed over every position, prompt included: the mask is ignored": _numpy(lp.sum(1)),
                    "built from the raw logits, not log-probabilities: apply log_softmax over the "
                    "vocabulary first": _numpy(torch.where(mask, raw, torch.zeros_like(raw)).sum(1)),
                }
                if length > 1:
                    shifted = -_token_losses(logits[:, :-1], targets[:, 1:])
                    variants["shifted by one position: the targets are already the next tokens, "
                             "compare logits[:, t] with targets[:, t]"] = _numpy(
                        torch.where(mask[:, 1:], shifted, torch.zeros_like(shifted)).sum(1))
            for mistake, wrong in variants.items():
                if _allclose(got, wrong, LOGPROB_RTOL, LOGPROB_ATOL):
                    fail(f"For {what}, your log-probabilities are {mistake}.")
            fail(f"For {what}, sequence_logprob is not the sum of log softmax(logits)[target] over "
                 f"the answer: {worst_mismatch(got, expected)}.")
        if result.grad_fn is None:
            fail("sequence_logprob's result has no gradient: DPO trains through it.")
        call_learner(lambda: result.sum().backward(), name="backward through sequence_logprob")
        grad, ref = _numpy(logits.grad), _numpy(ref_logits.grad)
        if not _allclose(grad, ref, GRAD_RTOL, 1e-5):
            fail(f"For {what}, the gradient of sequence_logprob differs from the reference's: "
                 f"{worst_mismatch(grad, ref)}.")
    passed(f"sequence_logprob for {what}: the summed log-probabilities of the answers, finite, "
           "with the reference's gradient.")


# ============================================================================ DPO

def _dpo_inputs(seed: int, batch: int, spread: float | None, beta: float):
    """Four (B,) float32 log-probabilities. Small margins, and (batch >= 3) one pair whose
    margin is about -200 and one about +200, where log(sigmoid(.)) fails in float32."""
    gen = torch.Generator().manual_seed(seed)
    ref_c = -40 + 10 * torch.randn(batch, generator=gen)
    ref_r = -40 + 10 * torch.randn(batch, generator=gen)
    pol_c = ref_c + 3 * torch.randn(batch, generator=gen)
    pol_r = ref_r + 3 * torch.randn(batch, generator=gen)
    if spread is not None:
        pol_c = ref_c + spread * torch.randn(batch, generator=gen)
    if batch >= 3:  # margins beta * ((pc - rc) - (pr - rr)) of -200 and +200
        pol_c[0], pol_r[0] = ref_c[0] - 100 / beta, ref_r[0] + 100 / beta
        pol_c[1], pol_r[1] = ref_c[1] + 100 / beta, ref_r[1] - 100 / beta
    return (pol_c.requires_grad_(True), pol_r.requires_grad_(True), ref_c, ref_r)


def _dpo_reference(pc, pr, rc, rr, beta) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """NumPy float64: loss, chosen and rejected rewards, and d loss / d policy_chosen."""
    pc, pr, rc, rr = (_numpy(t) for t in (pc, pr, rc, rr))
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    z = chosen - rejected
    loss = float(np.mean(np.logaddexp(0.0, -z)))  # -log sigmoid(z) = log(1 + e^-z)
    sigmoid_minus = np.exp(-np.logaddexp(0.0, z))  # sigmoid(-z), without overflow
    return loss, chosen, rejected, -beta * sigmoid_minus / len(z)


def check_dpo_loss(dpo_loss, *, seed: int = 60, batch: int = 5, beta: float = 0.1,
                   spread: float | None = None) -> None:
    """dpo_loss equals the DPO formula (NumPy float64), returns beta-scaled detached rewards,
    stays finite for margins of +-200, and has the formula's gradient."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        pc, pr, rc, rr = _dpo_inputs(seed, batch, spread, beta)
        what = f"a batch of {batch} pair{'' if batch == 1 else 's'}, beta={beta:g}" + (", margins up to ±200" if batch >= 3 else "")
        expected, chosen, rejected, grad_c = _dpo_reference(pc, pr, rc, rr, beta)
        with refuse_shortcuts(SHORTCUTS, "dpo_loss", WHY_DPO):
            result = call_learner(dpo_loss, pc, pr, rc, rr, beta, name="dpo_loss")
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            fail(f"dpo_loss returned {describe(result)}; it should return three things: "
                 "(loss, chosen_rewards, rejected_rewards).")
        loss = _as_tensor(result[0], "dpo_loss's loss")
        value = float(as_float_array(loss, "dpo_loss's loss", ()))
        if not math.isfinite(value):
            fail(f"For {what}, the loss is {value}. torch.log(torch.sigmoid(z)) is log(0) = -inf once "
                 "sigmoid(z) underflows in float32 (z below about -88, a margin a trained model reaches); "
                 "F.logsigmoid computes log sigmoid(z) without forming sigmoid(z).")
        if not math.isclose(value, expected, rel_tol=DPO_RTOL, abs_tol=DPO_ATOL):
            pcn, prn, rcn, rrn = (_numpy(t) for t in (pc, pr, rc, rr))
            z = beta * ((pcn - rcn) - (prn - rrn))
            variants = {
                "without the reference model: beta * (log pi(chosen) - log pi(rejected)). The "
                "reference's log-probabilities turn each one into a change":
                    np.mean(np.logaddexp(0, -beta * (pcn - prn))),
                "with chosen and rejected swapped: it trains towards the rejected answers":
                    np.mean(np.logaddexp(0, z)),
                "summed over the batch instead of averaged": np.sum(np.logaddexp(0, -z)),
                "computed with beta outside the sigmoid, not inside it":
                    np.mean(beta * np.logaddexp(0, -z / beta)),
                "computed without beta": np.mean(np.logaddexp(0, -z / beta)),
            }
            for mistake, wrong in variants.items():
                if math.isclose(value, float(wrong), rel_tol=DPO_RTOL, abs_tol=DPO_ATOL):
                    fail(f"For {what}, your loss {value:.6g} is the one {mistake}. Expected {expected:.6g}.")
            fail(f"For {what}, dpo_loss gave {value:.6g}; -mean log sigmoid(chosen_rewards - "
                 f"rejected_rewards) is {expected:.6g}.")
        for name, given, ref in (("chosen_rewards", result[1], chosen), ("rejected_rewards", result[2], rejected)):
            tensor = _as_tensor(given, f"dpo_loss's {name}")
            got = as_float_array(tensor, f"dpo_loss's {name}", (batch,))
            if not _allclose(got, ref, DPO_RTOL, DPO_ATOL):
                if _allclose(got, ref / beta, DPO_RTOL, DPO_ATOL):
                    fail(f"{name} are not scaled by beta: they are beta * (log pi - log pi_ref).")
                fail(f"{name} should be beta * (log pi - log pi_ref) per pair: {worst_mismatch(got, ref)}.")
            if tensor.requires_grad:
                fail(f"{name} still carry a gradient: return them `.detach()`ed, they are for logging.")
        if loss.grad_fn is None:
            fail("dpo_loss's loss has no gradient: the policy's log-probabilities must reach it.")
        call_learner(loss.backward, name="dpo_loss(...)[0].backward")
        got = _numpy(pc.grad) if pc.grad is not None else None
        if got is None or find_bad_values(got):
            fail(f"For {what}, the gradient of the loss with respect to the policy's log-probabilities is "
                 f"{'missing' if got is None else find_bad_values(got)}: use F.logsigmoid.")
        if not _allclose(got, grad_c, GRAD_RTOL, 1e-9):
            fail(f"For {what}, d loss / d policy_chosen_logps differs from the formula's "
                 f"-beta sigmoid(-margin) / B: {worst_mismatch(got, grad_c)}.")
    passed(f"dpo_loss for {what}: {expected:.4f}, rewards and gradient as the formula.")


def check_dpo_pipeline(dpo_loss, sequence_logprob, *, seed: int = 63, steps: int = 3) -> None:
    """With the policy equal to the reference the loss is log 2 and the rewards 0; a few SGD
    steps on the learner's DPO loss (through the learner's sequence_logprob) widen the margin."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        config = GPTConfig(vocab_size=11, block_size=12, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
        policy = GPT(config)
        reference = copy.deepcopy(policy).requires_grad_(False)
        chosen = torch.randint(11, (4, 12))
        rejected = chosen.clone()
        rejected[:, 6:] = torch.randint(11, (4, 6))
        mask = torch.zeros(4, 11, dtype=torch.bool)
        mask[:, 5:] = True  # the answer: tokens 6..11, predicted from positions 5..10

        def logps(model, ids):
            logits, _ = model(ids[:, :-1])
            return call_learner(sequence_logprob, logits, ids[:, 1:], mask.clone(), name="sequence_logprob")

        with torch.no_grad():
            ref_c, ref_r = logps(reference, chosen), logps(reference, rejected)
        optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
        margins = []
        for _ in range(steps + 1):
            result = call_learner(dpo_loss, logps(policy, chosen), logps(policy, rejected), ref_c, ref_r,
                                  0.5, name="dpo_loss")
            loss, c, r = result
            margins.append(float((c - r).mean()))
            if len(margins) == 1 and not math.isclose(float(loss.detach()), math.log(2), rel_tol=1e-5):
                fail(f"With the policy equal to the reference every reward is 0 and the loss is "
                     f"-log sigmoid(0) = log 2 = {math.log(2):.6f}; yours is {float(loss.detach()):.6f}.")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if not margins[-1] > margins[0] + 1e-3:
            fail(f"{steps} gradient-descent steps on your DPO loss did not widen the chosen-minus-rejected "
                 f"margin ({margins[0]:.4f} -> {margins[-1]:.4f}): is the sign of the loss right?")
    passed(f"DPO through sequence_logprob on a tiny GPT: loss log 2 at the start, margin "
           f"{margins[0]:.3f} -> {margins[-1]:.3f} in {steps} steps.")
