# GENERATED from solutions/18_finetune/18_finetune.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Adapting a pretrained model: LoRA adapters (LoRALinear, add_lora, merge_lora), the supervised fine-tuning loss masked to the answer, sequence log-probabilities and the DPO loss: the reference for exercise 18_finetune."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update (LoRA, Hu et al. 2021).

    y = base(x) + scaling * x A^T B^T, scaling = alpha / r, where
      base:   the wrapped nn.Linear(in_features, out_features), frozen (requires_grad False);
      lora_A: nn.Parameter (r, in_features), random like nn.Linear's weight (kaiming_uniform_, a=sqrt(5));
      lora_B: nn.Parameter (out_features, r), zeros: at first the layer computes base(x) exactly.
    Only lora_A and lora_B train: r * (in_features + out_features) parameters.
    r must be an int with 1 <= r <= min(in_features, out_features); otherwise ValueError naming
    r and that range.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        limit = min(base.in_features, base.out_features)
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= limit:
            raise ValueError(f"LoRA rank r={r!r} is outside the allowed range 1..{limit} "
                             f"(min of in_features={base.in_features}, out_features="
                             f"{base.out_features}): B @ A cannot have a higher rank")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **like))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # B = 0: the adapted layer starts as the pretrained one, and B's gradient (through A) is not 0.
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **like))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """base(x) + scaling * x A^T B^T for x of shape (..., in_features)."""
        # (..., in) -> (..., r) -> (..., out): never form the (out, in) matrix B A while training.
        return self.base(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)

    def merge(self) -> nn.Linear:
        """A new nn.Linear computing what this layer computes now: weight W + scaling * B A and
        the base's bias. This layer and its base are left unchanged."""
        base = self.base
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(base.weight + self.scaling * (self.lora_B @ self.lora_A))
            if base.bias is not None:
                merged.bias.copy_(base.bias)
        return merged

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def add_lora(model: nn.Module, r: int, alpha: float,
             targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")) -> list[str]:
    """Freeze every parameter of `model`, then replace (in place) each nn.Linear whose
    attribute name is in `targets` by a LoRALinear(r, alpha) around it. Returns the names of
    the replaced modules. Raises ValueError, changing nothing, if none matches or if r does
    not fit one of them."""
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.rpartition(".")[2] in targets]
    if not found:
        linear = sorted({name.rpartition(".")[2] for name, module in model.named_modules()
                         if isinstance(module, nn.Linear)})
        raise ValueError(f"no nn.Linear named one of {tuple(targets)} in the model; its linear "
                         f"layers are named {linear}")
    adapters = [LoRALinear(module, r, alpha) for _, module in found]  # all checked before any change
    for p in model.parameters():
        p.requires_grad_(False)
    for (name, _), adapter in zip(found, adapters):
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, adapter)
    return [name for name, _ in found]


def merge_lora(model: nn.Module) -> int:
    """Replace (in place) every LoRALinear in `model` by its merge(); returns how many."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name, module in found:
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, module.merge())
    return len(found)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters, each shared tensor counted once."""
    params = list(model.parameters())  # parameters() yields a tied tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def check_token_inputs(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> None:
    """Raise ValueError unless logits is (B, T, V), targets (B, T) integer ids and loss_mask (B, T) bool."""
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (B, T, V), got {tuple(logits.shape)}")
    for name, tensor in (("targets", targets), ("loss_mask", loss_mask)):
        if tuple(tensor.shape) != tuple(logits.shape[:2]):
            raise ValueError(f"{name} must have shape (B, T) = {tuple(logits.shape[:2])} like the "
                             f"logits' first two dimensions, got {tuple(tensor.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be integer token ids, got dtype {targets.dtype}")
    if loss_mask.dtype != torch.bool:
        raise ValueError(f"loss_mask must be a bool tensor (True on the answer's tokens), got "
                         f"dtype {loss_mask.dtype}: use `mask.bool()`")


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the targets over the positions where loss_mask is True.

    logits (B, T, V): logits[:, t] predicts targets[:, t]; targets (B, T): the ids to predict,
    already shifted (targets[:, t] is the token after input t); loss_mask (B, T) bool, aligned
    with targets: True on the answer's tokens, False on the prompt's (and on padding). Every
    answer token of the batch weighs the same: (sum of their losses) / (their number).
    Returns a scalar tensor with a gradient. Raises ValueError for mismatched shapes and when
    loss_mask selects no position at all.
    """
    check_token_inputs(logits, targets, loss_mask)
    if not loss_mask.any():
        raise ValueError("loss_mask selects no position: the batch has no answer token to learn from")
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")  # (B*T,)
    # Index instead of multiplying by the mask: a prompt position's loss may be inf, and 0 * inf is NaN.
    return losses[loss_mask.flatten()].mean()


def sequence_logprob(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """log pi(answer | prompt) for each sequence: the sum over the positions where loss_mask is
    True of log softmax(logits[b, t])[targets[b, t]]; shape (B,), with a gradient.

    Inputs and alignment as sft_loss (targets already shifted, loss_mask aligned with them).
    A sequence whose mask is all False gets 0.
    """
    check_token_inputs(logits, targets, loss_mask)
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return torch.where(loss_mask, logps, torch.zeros_like(logps)).sum(dim=-1)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss (Rafailov et al. 2023) of a batch of preference pairs.

    Each logps argument (B,) is log pi(answer | prompt) summed over the answer's tokens, under
    the policy being trained or the frozen reference model. An answer's reward is beta times
    how much more likely the policy makes it than the reference does (a difference of the
    two log-probabilities); the loss is the batch mean of -log sigmoid of the chosen
    answer's reward minus the rejected one's.
    Returns (loss, chosen_rewards, rejected_rewards); the rewards are detached (for logging).
    Raises ValueError if beta <= 0 or the four shapes differ.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (the strength of the pull towards the reference "
                         f"model; 0.1 is usual), got {beta}")
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps,
                                       ref_chosen_logps, ref_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape (B,), got {sorted(shapes)}")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    # logsigmoid(z) = -log(1 + exp(-z)), computed without forming sigmoid(z), which is 0 for z << 0.
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()
