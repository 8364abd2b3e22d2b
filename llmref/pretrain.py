# GENERATED from solutions/12_pretrain/12_pretrain.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Pretraining at scale: AdamW, parameter groups, the learning-rate schedule, gradient clipping, random windows, the held-out loss, and checkpoints that resume exactly: the reference for exercise 12_pretrain."""
import math
import os
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), computing what torch.optim.AdamW does.

    params: the model's parameters, or parameter groups: dicts with "params" and any of lr,
    betas, eps, weight_decay, which then replace the defaults given here for that group.
    For each parameter p with a gradient g, with its group's hyperparameters read at every
    step and t the number of steps p has taken (1 on its first):
        p <- p - lr * weight_decay * p                    (decay, not through the gradient)
        m <- beta1 * m + (1 - beta1) * g,   v <- beta2 * v + (1 - beta2) * g**2
        p <- p - lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - beta1**t), v_hat = v / (1 - beta2**t)
    self.state[p] keeps "step" (t), "exp_avg" (m) and "exp_avg_sq" (v), torch's names, so
    state_dict() saves them with the rest of the optimizer.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if not lr >= 0 or not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0, got lr={lr}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()  # the update is not part of any graph; in-place changes to parameters are allowed
    def step(self, closure=None):
        """One AdamW update of every parameter that has a gradient. Returns closure() if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Read on every step: a learning-rate schedule writes group["lr"] before each one.
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, weight_decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:  # not used by this loss: no update, no decay (as torch)
                    continue
                g, state = p.grad, self.state[p]
                if not state:  # the parameter's first step
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                # Decoupled decay: shrink the weight itself, with the value it had before this
                # step. Added to g instead, it would be divided by sqrt(v_hat) like the gradient.
                p.mul_(1 - lr * weight_decay)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1 ** t)  # m and v start at 0: undo their pull towards it
                v_hat = v / (1 - beta2 ** t)
                p.addcdiv_(m_hat, v_hat.sqrt().add_(eps), value=-lr)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups: the weights of nn.Linear layers decay; biases, norms and
    embeddings do not.

    Returns [{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]
    with every parameter of the model in exactly one of them. A tied weight (GPT's output
    head is its token embedding) is one parameter: it belongs to the module that has it
    first in model.modules() order, the embedding.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay, no_decay = [], []
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue  # a tied weight belongs to the module that owns it first
            seen.add(id(p))
            if isinstance(module, nn.Linear) and name == "weight":
                decay.append(p)
            else:
                no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of step `step` (0 for the first): linear warm-up to max_lr over
    warmup_steps, then cosine decay to min_lr at total_steps, and min_lr after that.

        step < warmup_steps:                max_lr * (step + 1) / warmup_steps
        warmup_steps <= step < total_steps: min_lr + (1 + cos(pi * progress)) / 2 * (max_lr - min_lr),
                                            progress = (step - warmup_steps) / (total_steps - warmup_steps)
        step >= total_steps:                min_lr
    """
    if step < 0:
        raise ValueError(f"step must be >= 0 (the first step is 0), got {step}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps  # step 0 trains too; step warmup_steps - 1 is at max_lr
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most max_norm.

    The global norm is that of all gradients' entries as one long vector. If it exceeds
    max_norm, every gradient is multiplied by max_norm / (norm + 1e-6), as
    torch.nn.utils.clip_grad_norm_ does; otherwise none changes. Parameters without a
    gradient are skipped. `parameters` may be a generator such as model.parameters().
    Returns the norm before clipping, as a Python float.
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}; to switch clipping off, do not call it")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]  # a generator can be read only once
    if not grads:
        return 0.0
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # 1 (no change) below the threshold
    for g in grads:
        g.mul_(scale)  # one factor for all: the update keeps its direction, only shorter
    return float(total)


def get_batch(tokens: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x (batch_size, block_size) and y, the same windows one token ahead.

    The starts come from ONE call torch.randint(len(tokens) - block_size, (batch_size,),
    generator=generator); x[b] = tokens[s : s + block_size], y[b] = tokens[s + 1 : s + block_size + 1]
    for the b-th start s. Every window fits, the last one (ending at the last token) included.
    """
    if tokens.dim() != 1 or len(tokens) < block_size + 1:
        raise ValueError(f"tokens must be 1-D with at least block_size + 1 = {block_size + 1} "
                         f"entries (a window and its last target), got shape {tuple(tokens.shape)}")
    # randint's upper end is exclusive: the last start is len - block_size - 1, whose target
    # window ends exactly at the last token.
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    positions = starts[:, None] + torch.arange(block_size)  # (B, T)
    return tokens[positions], tokens[positions + 1]


@torch.no_grad()
def evaluate(model: nn.Module, tokens: torch.Tensor, block_size: int, batch_size: int = 64) -> float:
    """Mean loss (nats per token) over the non-overlapping windows covering `tokens`.

    n = (len(tokens) - 1) // block_size windows; window i reads tokens[i*T : (i+1)*T] and
    predicts tokens[i*T + 1 : (i+1)*T + 1] (T = block_size). They run in batches of
    batch_size windows, in eval mode and without a graph; every window weighs the same (the
    last batch may be smaller). The model is left in the mode it came in. Returns a float.
    """
    n = (len(tokens) - 1) // block_size  # the last window needs one more token: its target
    if n < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for one window of {block_size} (+1 target)")
    mode_before = model.training
    model.eval()  # dropout off: the same model gives the same number every time
    x = tokens[: n * block_size].view(n, block_size)
    y = tokens[1: n * block_size + 1].view(n, block_size)
    total = 0.0
    for i in range(0, n, batch_size):
        _, loss = model(x[i:i + batch_size], y[i:i + batch_size])
        total += loss.item() * len(x[i:i + batch_size])  # a mean over this batch: weigh it by its size
    model.train(mode_before)
    return total / n


@dataclass
class TrainConfig:
    steps: int = 2000            # optimisation steps; the cosine schedule ends here
    batch_size: int = 32         # windows per step
    max_lr: float = 3e-3         # peak learning rate, reached at the end of warm-up
    min_lr: float = 3e-4         # floor of the cosine decay
    warmup_steps: int = 100      # linear warm-up: Adam's second-moment estimates start noisy
    weight_decay: float = 0.1    # AdamW's decoupled decay, Linear weights only
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0       # max global gradient norm (0 = no clipping)
    eval_every: int = 250        # steps between held-out evaluations (0 = only at the end)
    seed: int = 0                # fixes the batch order (the initial weights are the caller's)
    # "bfloat16": forward pass under torch.autocast, matrix products in bfloat16 (weights,
    # gradients and the optimizer stay float32). Twice as fast on CPUs with AVX-512 BF16 and
    # on recent GPUs; elsewhere it may be slower. Evaluation always runs in float32.
    precision: str = "float32"


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """torch.optim.AdamW over param_groups(model): the same numbers as the AdamW class above
    (tests/test_llmref_pretrain.py compares them), but on a GPU torch updates all tensors in
    a few fused kernel launches instead of several per tensor."""
    return torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.max_lr,
                             betas=config.betas)


def load_state(model: nn.Module, state: dict) -> None:
    """model.load_state_dict(state), with an error that names each missing, unexpected or
    mismatched tensor (and both shapes) before anything is copied."""
    own = model.state_dict()
    problems = [f"missing tensor {k} {tuple(v.shape)}" for k, v in own.items() if k not in state]
    problems += [f"unexpected tensor {k} {tuple(v.shape)}" for k, v in state.items() if k not in own]
    problems += [f"tensor {k} has shape {tuple(state[k].shape)} in the checkpoint but "
                 f"{tuple(v.shape)} in the model" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]
    if problems:
        raise ValueError("the checkpoint does not fit this model: " + "; ".join(problems)
                         + ". Build the model with the configuration the checkpoint was saved with.")
    model.load_state_dict(state)


def config_differences(saved: dict, current: dict) -> list[str]:
    """'field: saved value in the checkpoint, current value now' for every field that differs."""
    return [f"{k}: {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def model_config(model: nn.Module) -> dict | None:
    """The model's configuration as a dict (GPT keeps a dataclass in model.config), or None."""
    config = getattr(model, "config", None)
    return asdict(config) if is_dataclass(config) else None


def save_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    generator: torch.Generator, config: TrainConfig, history: dict) -> None:
    """Write to `path` everything a resumed run needs to continue exactly as if never
    stopped: `step` steps are done, `history` is the run's record so far."""
    state = {
        "model": model.state_dict(),
        "model_config": model_config(model),
        "optimizer": optimizer.state_dict(),   # Adam's m, v and step count for every parameter
        "step": step,                          # where the learning-rate schedule is
        "generator": generator.get_state(),    # which windows come next
        "torch_rng": torch.get_rng_state(),    # dropout's random numbers (on the CPU)
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "train_config": asdict(config),
        "history": history,
    }
    # Write a temporary file and rename it: a run killed while writing never leaves a
    # half-written checkpoint in place of the last good one.
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def restore_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer,
                       generator: torch.Generator, config: TrainConfig) -> tuple[int, dict]:
    """Put the run saved at `path` back into model, optimizer, generator and torch's random
    state; returns (step, history) as they were saved.

    Raises ValueError, before changing anything, if the checkpoint was trained with another
    TrainConfig (naming each field that differs); then if its tensors do not fit the model
    (naming each tensor and both shapes), or the model's configuration differs.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"no checkpoint at {path}: run train(..., checkpoint={str(path)!r}) "
                                "without resume=True first")
    # weights_only: read tensors and plain Python values only; a checkpoint is data, not code.
    state = torch.load(path, weights_only=True)
    differences = config_differences(state["train_config"], asdict(config))
    if differences:
        raise ValueError("cannot resume: the checkpoint was trained with another configuration ("
                         + "; ".join(differences) + "). Resume with the TrainConfig it was "
                         "saved with, or start a new run.")
    load_state(model, state["model"])
    # Shapes cannot tell everything apart (n_head, dropout): compare the configurations too.
    differences = config_differences(state["model_config"] or {}, model_config(model) or {})
    if differences:
        raise ValueError("cannot resume: the model differs from the checkpoint's ("
                         + "; ".join(differences) + ")")
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and len(state["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"], state["history"]


def train(model: nn.Module, train_tokens: torch.Tensor, config: TrainConfig, *,
          held_out: torch.Tensor | None = None, checkpoint: str | Path | None = None,
          resume: bool = False, stop_after: int | None = None, progress: bool = False,
          callback=None) -> dict:
    """Pretrain `model` on random windows of `train_tokens`; returns the history.

    history: "step" and "loss" (training loss of every step, before its update), "lr",
    "eval_step"/"eval_loss" (held-out loss at every eval_every steps and at the end),
    "eval_seconds" (training time when each was measured) and "train_seconds" (wall time of
    the optimisation steps, evaluation excluded).
    checkpoint: saved at every evaluation and at the end; with resume=True the run starts
    from it and continues exactly as the uninterrupted run would have. stop_after: stop
    (with a checkpoint) after this many steps in total, as an interruption would.
    callback(step, history, model): called after every evaluation.
    """
    if config.precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got {config.precision!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<the path the interrupted run saved to>")
    block_size = model.config.block_size
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    history = {"step": [], "loss": [], "lr": [], "eval_step": [], "eval_loss": [],
               "eval_seconds": [], "train_seconds": 0.0}
    start = 0
    if resume:
        start, history = restore_checkpoint(checkpoint, model, optimizer, generator, config)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    model.train()
    bar = tqdm(range(start, end), desc="pretraining", disable=not progress, initial=start,
               total=config.steps)
    tick = time.perf_counter()
    for step in bar:
        lr = lr_at(step, max_lr=config.max_lr, min_lr=config.min_lr,
                   warmup_steps=config.warmup_steps, total_steps=config.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_tokens, config.batch_size, block_size, generator)
        with torch.autocast(x.device.type, dtype=torch.bfloat16,
                            enabled=config.precision == "bfloat16"):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            clip_grad_norm(model.parameters(), config.grad_clip)
        optimizer.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["lr"].append(lr)
        done = step + 1
        if (config.eval_every and done % config.eval_every == 0) or done == end:
            history["train_seconds"] += time.perf_counter() - tick
            if held_out is not None:
                history["eval_step"].append(done)
                history["eval_loss"].append(evaluate(model, held_out, block_size))
                history["eval_seconds"].append(history["train_seconds"])
                bar.set_postfix(held_out=f"{history['eval_loss'][-1]:.3f}", refresh=False)
                model.train()
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, done, generator, config, history)
            if callback is not None:
                callback(done, history, model)
            tick = time.perf_counter()
    return history
