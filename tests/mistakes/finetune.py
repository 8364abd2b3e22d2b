"""Wrong versions of the pieces of exercise 18_finetune: LoRALinear, sft_loss,
sequence_logprob and dpo_loss.

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
The most instructive come first: real nbgrader grades the first three of each cell.
"""
from . import Mistake, edited

EXERCISE = "18_finetune"


# ----------------------------------------------------------------------------- LoRALinear

LORA = '''class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        limit = min(base.in_features, base.out_features)
        if r < 1 or r > limit:
            raise ValueError(f"r={r} must be between 1 and {limit}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad = False
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + self.scaling * (x @ self.lora_A.T @ self.lora_B.T)

    def merge(self):
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            merged.weight.copy_(self.base.weight + self.scaling * self.lora_B @ self.lora_A)
            if self.base.bias is not None:
                merged.bias.copy_(self.base.bias)
        return merged
'''

LORA_MISTAKES = [
    Mistake("lora_base_not_frozen", "LoRALinear", edited(
        LORA, ('''        for p in self.base.parameters():
            p.requires_grad = False
''', "")), says="still requires a gradient"),
    Mistake("lora_B_random", "LoRALinear", edited(
        LORA, ("self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))",
               "self.lora_B = nn.Parameter(torch.randn(base.out_features, r))")), says="lora_B should start at zero"),
    Mistake("lora_scaling_alpha", "LoRALinear", edited(
        LORA, ("self.scaling = alpha / r", "self.scaling = alpha")), says="alpha / r"),
    Mistake("lora_merge_in_place", "LoRALinear", edited(
        LORA, ('''        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            merged.weight.copy_(self.base.weight + self.scaling * self.lora_B @ self.lora_A)
            if self.base.bias is not None:
                merged.bias.copy_(self.base.bias)
        return merged''', '''        with torch.no_grad():
            self.base.weight += self.scaling * self.lora_B @ self.lora_A
        return self.base''')), says="changed the base layer's weight"),
    Mistake("lora_rank_unchecked", "LoRALinear", edited(
        LORA, ('''        if r < 1 or r > limit:
            raise ValueError(f"r={r} must be between 1 and {limit}")
''', "")), says="accepted r="),
]

# ----------------------------------------------------------------------------- sft_loss

SFT = '''def sft_loss(logits, targets, loss_mask):
    B, T, V = logits.shape
    losses = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), reduction="none")
    losses = losses.reshape(B, T)
    return losses[loss_mask].mean()
'''

SFT_MISTAKES = [
    Mistake("sft_mask_ignored", "sft_loss", edited(SFT, ("return losses[loss_mask].mean()", "return losses.mean()")),
            says="the mask is ignored"),
    Mistake("sft_shifted_twice", "sft_loss", edited(
        SFT, ("losses = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), reduction=\"none\")",
              "losses = F.cross_entropy(logits[:, :-1].reshape(B * (T - 1), V), targets[:, 1:].reshape(B * (T - 1)), "
              "reduction=\"none\")"),
        ("losses = losses.reshape(B, T)", "losses = losses.reshape(B, T - 1)"),
        ("return losses[loss_mask].mean()", "return losses[loss_mask[:, 1:]].mean()")),
        says="shifted by one position"),
    Mistake("sft_mean_per_sequence", "sft_loss", edited(
        SFT, ("return losses[loss_mask].mean()",
              "return ((losses * loss_mask).sum(dim=1) / loss_mask.sum(dim=1)).mean()")),
        says="a mean per sequence"),
    Mistake("sft_masked_mean_over_all", "sft_loss", edited(
        SFT, ("return losses[loss_mask].mean()", "return (losses * loss_mask).mean()")),
        says="divided by the number of ALL positions"),
    Mistake("sft_returns_number", "sft_loss", edited(
        SFT, ("return losses[loss_mask].mean()", "return losses[loss_mask].mean().item()")),
        says="not a torch tensor"),
]

# ----------------------------------------------------------------------------- sequence_logprob

LOGPROB = '''def sequence_logprob(logits, targets, loss_mask):
    logps = torch.log_softmax(logits, dim=-1)
    picked = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    picked = picked * loss_mask
    return picked.sum(dim=-1)
'''

LOGPROB_MISTAKES = [
    Mistake("logprob_log_of_softmax", "sequence_logprob", edited(
        LOGPROB, ("logps = torch.log_softmax(logits, dim=-1)", "logps = torch.log(torch.softmax(logits, dim=-1))")),
        says="torch.log_softmax"),
    Mistake("logprob_mean_not_sum", "sequence_logprob", edited(
        LOGPROB, ("return picked.sum(dim=-1)", "return picked.sum(dim=-1) / loss_mask.sum(dim=-1).clamp(min=1)")),
        says="not their sum"),
    Mistake("logprob_mask_ignored", "sequence_logprob", edited(
        LOGPROB, ("    picked = picked * loss_mask\n", "")), says="the mask is ignored"),
    Mistake("logprob_raw_logits", "sequence_logprob", edited(
        LOGPROB, ("logps = torch.log_softmax(logits, dim=-1)", "logps = logits")), says="raw logits"),
]

# ----------------------------------------------------------------------------- dpo_loss

DPO = '''def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()
'''

DPO_MISTAKES = [
    Mistake("dpo_log_of_sigmoid", "dpo_loss", edited(
        DPO, ("loss = -F.logsigmoid(chosen - rejected).mean()",
              "loss = -torch.log(torch.sigmoid(chosen - rejected)).mean()")), says="F.logsigmoid"),
    Mistake("dpo_no_reference", "dpo_loss", edited(
        DPO, ("loss = -F.logsigmoid(chosen - rejected).mean()",
              "loss = -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps)).mean()")),
        says="without the reference model"),
    Mistake("dpo_swapped", "dpo_loss", edited(
        DPO, ("loss = -F.logsigmoid(chosen - rejected).mean()", "loss = -F.logsigmoid(rejected - chosen).mean()")),
        says="chosen and rejected swapped"),
    Mistake("dpo_sum_over_batch", "dpo_loss", edited(
        DPO, ("loss = -F.logsigmoid(chosen - rejected).mean()", "loss = -F.logsigmoid(chosen - rejected).sum()")),
        says="summed over the batch"),
    Mistake("dpo_rewards_not_detached", "dpo_loss", edited(
        DPO, ("return loss, chosen.detach(), rejected.detach()", "return loss, chosen, rejected")),
        says="still carry a gradient"),
]

# peft's own LoRA layer inside: the adapter the exercise asks for, written by the library. It
# must really run peft's code: a call that fails binding its arguments enters no peft frame,
# and once peft is imported (by an earlier test) nothing else would.
SHORTCUT_MISTAKES = [
    Mistake("lora_by_peft", "LoRALinear", edited(
        LORA, ("        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))\n",
               "        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))\n"
               "        from peft import LoraConfig\n"
               "        from peft.tuners.lora import Linear as PeftLinear\n"
               "        self.library = PeftLinear(nn.Linear(base.in_features, base.out_features), \"default\",\n"
               "                                  LoraConfig(r=r, lora_alpha=alpha), r=r, lora_alpha=alpha)\n")), says="uses peft, which does the exercise for you"),
]

MISTAKES = LORA_MISTAKES + SFT_MISTAKES + LOGPROB_MISTAKES + DPO_MISTAKES + SHORTCUT_MISTAKES
