"""Wrong versions of the pieces of exercise 12_pretrain: AdamW, param_groups, lr_at,
clip_grad_norm, get_batch, evaluate, and save_checkpoint + restore_checkpoint.

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "12_pretrain"


# ----------------------------------------------------------------------------- AdamW

ADAMW = '''class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - lr * wd)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1 ** t)
                v_hat = v / (1 - beta2 ** t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
        return None
'''

ADAMW_MISTAKES = [
    Mistake("adamw_decay_in_gradient", "AdamW", edited(ADAMW, ("""                g = p.grad
""", """                g = p.grad + wd * p
""")).replace("                p.mul_(1 - lr * wd)\n", ""), says="Adam with L2"),
    Mistake("adamw_decay_without_lr", "AdamW", edited(ADAMW, ("p.mul_(1 - lr * wd)", "p.mul_(1 - wd)")),
            says="not scaled by the learning rate"),
    Mistake("adamw_no_bias_correction", "AdamW", edited(
        ADAMW, ("m_hat = m / (1 - beta1 ** t)", "m_hat = m"), ("v_hat = v / (1 - beta2 ** t)", "v_hat = v")),
        says="no bias correction"),
    Mistake("adamw_decay_from_defaults", "AdamW", edited(
        ADAMW, ('wd = group["weight_decay"]', 'wd = self.defaults["weight_decay"]')),
        says="not with its group's group['weight_decay']"),
    Mistake("adamw_lr_from_init", "AdamW", edited(ADAMW, ('lr = group["lr"]', 'lr = self.defaults["lr"]')),
            says="does not follow group['lr']"),
    Mistake("adamw_decay_after_update", "AdamW", edited(
        ADAMW, ("                p.mul_(1 - lr * wd)\n", ""),
        ("                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))\n",
         "                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))\n                p.mul_(1 - lr * wd)\n")),
        says="decay is applied after the Adam step"),
    Mistake("adamw_moments_not_kept", "AdamW", edited(
        ADAMW, ("                if len(state) == 0:\n", "                if True:\n")),
        says="m and v start from zero on every call"),
    Mistake("adamw_crashes_without_grad", "AdamW", edited(
        ADAMW, ("                if p.grad is None:\n                    continue\n", "")),
        says="skip it"),
    Mistake("adamw_not_in_place", "AdamW", edited(
        ADAMW, ("p.sub_(lr * m_hat / (v_hat.sqrt() + eps))", "p = p - lr * m_hat / (v_hat.sqrt() + eps)")),
        says="Update the parameters in place"),
]

# ---------------------------------------------------------------------- param_groups

PARAM_GROUPS = '''def param_groups(model, weight_decay):
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, nn.Linear) and name == "weight":
                decay.append(p)
            else:
                no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
'''

BY_NAME = '''def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if {rule}:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{{"params": decay, "weight_decay": weight_decay}},
            {{"params": no_decay, "weight_decay": 0.0}}]
'''

PARAM_GROUPS_MISTAKES = [
    Mistake("param_groups_by_dimension", "param_groups", BY_NAME.format(rule="p.dim() >= 2"),
            says="embeddings do not decay"),
    Mistake("param_groups_by_name", "param_groups", BY_NAME.format(rule='name.endswith("weight")'),
            says="norms do not decay"),
    Mistake("param_groups_tied_weight_twice", "param_groups", edited(
        PARAM_GROUPS, ("            if id(p) in seen:\n                continue\n", "")),
        says="A tied weight is ONE parameter"),
    Mistake("param_groups_decays_biases", "param_groups", edited(
        PARAM_GROUPS, ('isinstance(module, nn.Linear) and name == "weight"', "isinstance(module, nn.Linear)")),
        says="biases do not decay"),
    Mistake("param_groups_hard_coded_decay", "param_groups", edited(
        PARAM_GROUPS, ('{"params": decay, "weight_decay": weight_decay}', '{"params": decay, "weight_decay": 0.1}')),
        says="the decaying group uses that value"),
]

# ------------------------------------------------------------------------------ lr_at

LR_AT = '''def lr_at(step, *, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
'''

LR_AT_MISTAKES = [
    Mistake("lr_at_warmup_from_zero", "lr_at", edited(LR_AT, ("(step + 1) / warmup_steps", "step / warmup_steps")),
            says="The warm-up starts at 0"),
    Mistake("lr_at_decays_to_zero", "lr_at", edited(
        LR_AT, ("return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)",
                "return 0.5 * (1 + math.cos(math.pi * progress)) * max_lr")), says="decays to 0 instead of min_lr"),
    Mistake("lr_at_progress_from_step_zero", "lr_at", edited(
        LR_AT, ("progress = (step - warmup_steps) / (total_steps - warmup_steps)", "progress = step / total_steps")),
        says="progress is counted from step 0"),
    Mistake("lr_at_no_floor_after_the_end", "lr_at", edited(
        LR_AT, ("    if step >= total_steps:\n        return min_lr\n", "")), says="follows the cosine back up"),
    Mistake("lr_at_cosine_without_half", "lr_at", edited(LR_AT, ("min_lr + 0.5 * (1", "min_lr + (1")),
            says="lacks its 1/2"),
]

# --------------------------------------------------------------------- clip_grad_norm

CLIP = '''def clip_grad_norm(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + 1e-6))
    return total.item()
'''

CLIP_MISTAKES = [
    Mistake("clip_per_tensor", "clip_grad_norm", '''def clip_grad_norm(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    for g in grads:
        norm = g.norm()
        if norm > max_norm:
            g.mul_(max_norm / (norm + 1e-6))
    return total.item()
''', says="clipped on its own"),
    Mistake("clip_returns_norm_after_clipping", "clip_grad_norm", edited(
        CLIP, ("    return total.item()\n", "    return torch.sqrt(sum((g ** 2).sum() for g in grads)).item()\n")),
        says="the norm AFTER clipping"),
    Mistake("clip_returns_nothing", "clip_grad_norm", edited(CLIP, ("    return total.item()\n", "")),
            says="returned None"),
    Mistake("clip_always_rescales", "clip_grad_norm", edited(CLIP, ("    if total > max_norm:\n", "    if True:\n")),
            says="Clip only when the norm is above the threshold"),
    Mistake("clip_reads_the_generator_twice", "clip_grad_norm", '''def clip_grad_norm(parameters, max_norm):
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in parameters if p.grad is not None))
    if total > max_norm:
        for p in parameters:
            if p.grad is not None:
                p.grad.mul_(max_norm / (total + 1e-6))
    return total.item()
''', says="model.parameters() is a generator"),
    Mistake("clip_sum_of_norms", "clip_grad_norm", edited(
        CLIP, ("torch.sqrt(sum((g ** 2).sum() for g in grads))", "sum(g.norm() for g in grads)")),
        says="the sum of the tensors' norms"),
]

# -------------------------------------------------------------------------- get_batch

GET_BATCH = '''def get_batch(tokens, batch_size, block_size, generator):
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    x = torch.stack([tokens[s:s + block_size] for s in starts])
    y = torch.stack([tokens[s + 1:s + block_size + 1] for s in starts])
    return x, y
'''

GET_BATCH_MISTAKES = [
    Mistake("get_batch_windows_overrun", "get_batch", edited(
        GET_BATCH, ("len(tokens) - block_size,", "len(tokens) - block_size + 1,")), says="run past the end"),
    Mistake("get_batch_last_window_unreachable", "get_batch", edited(
        GET_BATCH, ("len(tokens) - block_size,", "len(tokens) - block_size - 1,")), says="never drawn"),
    Mistake("get_batch_y_not_shifted", "get_batch", edited(
        GET_BATCH, ("tokens[s + 1:s + block_size + 1]", "tokens[s:s + block_size]")), says="y equals x"),
    Mistake("get_batch_global_random_numbers", "get_batch", edited(
        GET_BATCH, ("(batch_size,), generator=generator)", "(batch_size,))")),
        says="not from torch's global random numbers"),
    Mistake("get_batch_separate_draws_for_y", "get_batch", edited(
        GET_BATCH, ("    y = torch.stack([tokens[s + 1:s + block_size + 1] for s in starts])\n",
                    "    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)\n"
                    "    y = torch.stack([tokens[s + 1:s + block_size + 1] for s in starts])\n")),
        says="with the same start s"),
]

# --------------------------------------------------------------------------- evaluate

EVALUATE = '''@torch.no_grad()
def evaluate(model, tokens, block_size, batch_size=64):
    mode_before = model.training
    model.eval()
    n = (len(tokens) - 1) // block_size
    x = tokens[:n * block_size].view(n, block_size)
    y = tokens[1:n * block_size + 1].view(n, block_size)
    total = 0.0
    for i in range(0, n, batch_size):
        _, loss = model(x[i:i + batch_size], y[i:i + batch_size])
        total += loss.item() * len(x[i:i + batch_size])
    model.train(mode_before)
    return total / n
'''

EVALUATE_MISTAKES = [
    Mistake("evaluate_leaves_eval_mode", "evaluate", edited(EVALUATE, ("    model.train(mode_before)\n", "")),
            says="left it in eval mode"),
    Mistake("evaluate_always_back_to_training", "evaluate", edited(
        EVALUATE, ("model.train(mode_before)", "model.train()")), says="The model came in eval mode"),
    Mistake("evaluate_dropout_on", "evaluate", edited(EVALUATE, ("    model.eval()\n", "")),
            says="dropout zeroed activations"),
    Mistake("evaluate_records_gradients", "evaluate", edited(EVALUATE, ("@torch.no_grad()\n", "")),
            says="gradient tracking on"),
    Mistake("evaluate_mean_of_batch_means", "evaluate", edited(
        EVALUATE, ("total += loss.item() * len(x[i:i + batch_size])", "total += loss.item()"),
        ("return total / n", "return total / math.ceil(n / batch_size)")), says="plain mean of the batches"),
    Mistake("evaluate_last_window_overruns", "evaluate", edited(
        EVALUATE, ("n = (len(tokens) - 1) // block_size", "n = len(tokens) // block_size")),
        says="needs one more token"),
]

# ------------------------------------------------------------------------ checkpoint

CHECKPOINT = '''def save_checkpoint(path, model, optimizer, step, generator, config, history):
    torch.save({
        "model": model.state_dict(),
        "model_config": model_config(model),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "generator": generator.get_state(),
        "rng": torch.get_rng_state(),
        "config": asdict(config),
        "history": history,
    }, path)


def restore_checkpoint(path, model, optimizer, generator, config):
    state = torch.load(path, weights_only=True)
    differences = config_differences(state["config"], asdict(config))
    if differences:
        raise ValueError("cannot resume with another configuration: " + "; ".join(differences))
    load_state(model, state["model"])
    differences = config_differences(state["model_config"], model_config(model))
    if differences:
        raise ValueError("the model differs from the checkpoint's: " + "; ".join(differences))
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["rng"])
    return state["step"], state["history"]
'''

CHECKPOINT_MISTAKES = [
    Mistake("checkpoint_without_generator", "checkpoint", edited(
        CHECKPOINT, ('    generator.set_state(state["generator"])\n', "")), says="batch generator was not restored"),
    Mistake("checkpoint_without_torch_rng", "checkpoint", edited(
        CHECKPOINT, ('    torch.set_rng_state(state["rng"])\n', "")), says="dropout masks"),
    Mistake("checkpoint_without_optimizer", "checkpoint", edited(
        CHECKPOINT, ('    optimizer.load_state_dict(state["optimizer"])\n', "")),
        says="optimizer's state was not restored"),
    Mistake("checkpoint_fresh_history", "checkpoint", edited(
        CHECKPOINT, ('return state["step"], state["history"]',
                     'return state["step"], {"step": [], "loss": [], "lr": [], "eval_step": [], "eval_loss": [], '
                     '"eval_seconds": [], "train_seconds": 0.0}')), says="did not return the history"),
    Mistake("checkpoint_step_not_restored", "checkpoint", edited(
        CHECKPOINT, ('return state["step"], state["history"]', 'return 0, state["history"]')),
        says="continues the learning-rate schedule"),
    Mistake("checkpoint_config_not_compared", "checkpoint", edited(
        CHECKPOINT, ('''    differences = config_differences(state["config"], asdict(config))
    if differences:
        raise ValueError("cannot resume with another configuration: " + "; ".join(differences))
''', "")), says="did not raise"),
    Mistake("checkpoint_config_error_says_nothing", "checkpoint", edited(
        CHECKPOINT, ('"cannot resume with another configuration: " + "; ".join(differences)',
                     '"cannot resume with another configuration"')), says="Say what differs"),
    Mistake("checkpoint_loads_before_comparing", "checkpoint", edited(
        CHECKPOINT, ('''    load_state(model, state["model"])
    differences = config_differences(state["model_config"]''', '''    differences = config_differences(state["model_config"]'''),
        ('''    differences = config_differences(state["config"], asdict(config))''',
         '''    load_state(model, state["model"])
    differences = config_differences(state["config"], asdict(config))''')), says="only after changing the model"),
    Mistake("checkpoint_model_config_not_compared", "checkpoint", edited(
        CHECKPOINT, ('''    differences = config_differences(state["model_config"], model_config(model))
    if differences:
        raise ValueError("the model differs from the checkpoint's: " + "; ".join(differences))
''', "")), says="only the configurations can tell"),
]

ALL = (ADAMW_MISTAKES + PARAM_GROUPS_MISTAKES + LR_AT_MISTAKES + CLIP_MISTAKES
       + GET_BATCH_MISTAKES + EVALUATE_MISTAKES + CHECKPOINT_MISTAKES)

# Each of these runs the whole notebook in-process and through real nbgrader (seconds each),
# so the graded set keeps the most common mistakes, four to six per cell. The others are
# still diagnosed: tests/test_12_pretrain.py runs them against their check directly.
CHECKED_DIRECTLY = {
    "adamw_decay_after_update", "adamw_moments_not_kept", "adamw_crashes_without_grad",
    "param_groups_hard_coded_decay", "lr_at_cosine_without_half", "clip_returns_nothing",
    "clip_sum_of_norms", "get_batch_separate_draws_for_y", "evaluate_records_gradients",
    "checkpoint_fresh_history", "checkpoint_step_not_restored", "checkpoint_loads_before_comparing",
}
# Library shortcuts: the right numbers from torch, the exercise done for it. Last, so that
# the mistakes graded through real nbgrader (the first three per cell) stay the same.
SHORTCUT_MISTAKES = [
    Mistake("adamw_is_torchs", "AdamW", "class AdamW(torch.optim.AdamW):\n    pass\n",
            says="uses torch.optim.AdamW"),
    Mistake("clip_by_torch", "clip_grad_norm", "def clip_grad_norm(parameters, max_norm):\n"
            "    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))\n",
            says="uses torch.nn.utils.clip_grad_norm_"),
]
MISTAKES = [m for m in ALL if m.name not in CHECKED_DIRECTLY] + SHORTCUT_MISTAKES
EXTRA = [m for m in ALL if m.name in CHECKED_DIRECTLY]
