"""Checks for exercise 12_pretrain: the pieces of a training loop that scales.

AdamW is compared with ``torch.optim.AdamW`` itself (float64, so that the comparison can be
tight); ``clip_grad_norm`` with ``torch.nn.utils.clip_grad_norm_``; ``evaluate`` with the
NumPy windows of :func:`llmref.corpus.windows`; the rest with :mod:`llmref.pretrain`, which
tests/test_llmref_pretrain.py compares with independent references. The model is always a
tiny :class:`llmref.gpt.GPT` (2 layers, width 32, context 16), so that every check takes a
fraction of a second. On a mismatch a check compares the learner's result with what each
common mistake computes and names the one it matches.

Every check runs on one thread with its own seeds; the learner's thread setting and torch's
global random state are restored afterwards.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.optim.adam as _adam_module    # the functional updates live there
import torch.optim.adamw as _adamw_module
from torch import nn

from llmref import pretrain as reference
from llmref.corpus import windows as numpy_windows
from llmref.gpt import GPT, GPTConfig

from ._core import (CheckFailure, call_learner, describe, fail, passed, refuse_shortcuts, scratch_folder,
                    set_inside, torch_isolated)

VOCAB = 23  # a vocabulary that is no power of two, so that shapes cannot be confused


def _gpt_config(**changes) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32,
                               dropout=0.0), **changes})


def _gpt(seed: int, dtype=torch.float32, **changes) -> GPT:
    """A tiny GPT with seeded weights; torch's global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(_gpt_config(**changes)).to(dtype)


def _tokens(seed: int, n: int) -> torch.Tensor:
    return torch.randint(VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def _names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its name; a tied weight gets both names."""
    names: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names[id(p)] = f"{names[id(p)]} (also {name}: tied)" if id(p) in names else name
    return names


def _relative_gap(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to the largest |expected| of the tensor."""
    actual, expected = actual.detach().double(), expected.detach().double()
    scale = float(expected.abs().max()) or 1.0
    return float((actual - expected).abs().max()) / scale


# =========================================================================== AdamW

# Both sides run in float64. Two correct implementations differ only in the order of
# roundings (torch uses lerp for m and folds the bias corrections into the step size):
# ~1e-16 relative per step. Over the few open-loop steps of check_adamw_steps that stays
# below 1e-14; STEPS_TOL = 1e-10 leaves four orders of margin. In check_adamw_gpt the
# gradients come from the parameters, so training amplifies those differences: after 100
# steps on the tiny GPT, 1e-11 .. 6e-11 relative to each tensor's largest entry (seeds 0-5,
# lr 3e-3 and 1e-2, measured); GPT_TOL = 1e-7 leaves three orders. Every mistake named
# below moves some value by more than 1e-5 relative within the steps checked.
STEPS_TOL = 1e-10
GPT_TOL = 1e-7


def _adamw_simulation(kind: str, init, spec, defaults, schedule, grads) -> list[list[torch.Tensor]]:
    """Parameters after each step of an AdamW variant: the right one ("right") or a mistake.

    spec: list of (indices, weight_decay) per group; schedule[k][j]: lr of group j at step k;
    grads[k][i]: gradient of parameter i at step k (None: no gradient).
    """
    params = [p.clone() for p in init]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    t = [0] * len(params)
    shared_t = 0
    beta1, beta2 = defaults["betas"]
    eps = defaults["eps"]
    history = []
    for lrs, step_grads in zip(schedule, grads):
        for (indices, group_decay), lr in zip(spec, lrs):
            lr = defaults["lr"] if kind == "lr_fixed" else lr
            decay = defaults["weight_decay"] if kind == "group_decay_ignored" else group_decay
            for i in indices:
                g = step_grads[i]
                if g is None:
                    if kind == "decays_without_grad":
                        params[i] = params[i] * (1 - lr * decay)
                    continue
                if kind == "no_state":
                    m[i], v[i], t[i] = torch.zeros_like(g), torch.zeros_like(g), 0
                if kind == "l2":
                    g = g + decay * params[i]
                t[i] += 1
                shared_t += 1
                step = shared_t if kind == "t_per_parameter" else t[i]
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                if kind == "no_bias_correction":
                    m_hat, v_hat = m[i], v[i]
                else:
                    m_hat, v_hat = m[i] / (1 - beta1**step), v[i] / (1 - beta2**step)
                update = (m_hat / ((v_hat + eps).sqrt() if kind == "eps_inside_sqrt"
                                   else v_hat.sqrt() + eps))
                p = params[i]
                if kind == "decay_after_update":
                    params[i] = (p - lr * update) * (1 - lr * decay)
                elif kind == "decay_without_lr":
                    params[i] = p * (1 - decay) - lr * update
                elif kind == "l2":
                    params[i] = p - lr * update
                elif kind == "update_not_applied":
                    params[i] = p * (1 - lr * decay)
                else:
                    params[i] = p * (1 - lr * decay) - lr * update
        history.append([p.clone() for p in params])
    return history


ADAMW_MISTAKES = {
    "l2": "The weight decay went into the gradient (g + weight_decay * p), which is Adam with L2 "
          "regularisation, what torch.optim.Adam(weight_decay=...) does. Adam then divides it by "
          "sqrt(v_hat) like the rest of the gradient, so weights with large gradients are hardly "
          "decayed. AdamW decouples it: shrink the parameter itself, p <- p - lr * weight_decay * p, "
          "and take the Adam step on the loss gradient alone.",
    "decay_without_lr": "The decay is not scaled by the learning rate: p <- p - weight_decay * p "
                        "shrinks every weight by weight_decay (10 % for 0.1) at every step. AdamW "
                        "decays by lr * weight_decay: p <- p - lr * weight_decay * p.",
    "group_decay_ignored": "Every parameter is decayed with the weight_decay given to AdamW(...), "
                           "not with its group's group['weight_decay']: the no-decay group (0.0) was "
                           "decayed too. Read each hyperparameter from the group.",
    "lr_fixed": "The learning rate does not follow group['lr']: the parameters moved as if lr "
                "stayed at the value given to AdamW(...). A schedule writes the learning rate into "
                "each group before every step; read group['lr'] inside step(), not a value kept "
                "from __init__.",
    "no_bias_correction": "The update has no bias correction. m and v start at 0 and are pulled "
                          "towards it for the first ~1/(1 - beta) steps: use m_hat = m / (1 - beta1**t) "
                          "and v_hat = v / (1 - beta2**t), t the parameter's step count (1 on its first).",
    "decay_after_update": "The decay is applied after the Adam step, to the updated parameter. "
                          "torch.optim.AdamW decays the parameter as it was before this step: "
                          "p <- p - lr * weight_decay * p first, then the Adam update.",
    "eps_inside_sqrt": "eps is inside the square root: add it outside, to sqrt(v_hat), as torch does.",
    "t_per_parameter": "The step count t grows once per parameter instead of once per step: keep "
                       "one count per parameter in self.state[p] and add 1 to it when p is updated.",
    "no_state": "m and v start from zero on every call of step(): keep them between steps in "
                "self.state[p] (create them on a parameter's first step only).",
    "update_not_applied": "Only the decay reached the parameters; the Adam update did not. Update "
                          "the parameters in place (p.sub_(...), p.addcdiv_(...)): `p = p - ...` makes a "
                          "new tensor and leaves the model's parameter as it was.",
    "decays_without_grad": "A parameter without a gradient (p.grad is None) was decayed. Like "
                           "torch.optim.AdamW, skip such a parameter entirely: no decay, no update.",
}


# torch's own optimizers, their functional update and fused kernels: the update written for
# the learner. A subclass of torch.optim.AdamW, or one built inside step(), runs their code.
ADAMW_SHORTCUTS = {torch.optim.Adam: "torch.optim.Adam", torch.optim.AdamW: "torch.optim.AdamW",
                   _adam_module.adam: "torch.optim.Adam's update"}
if hasattr(_adamw_module, "adamw"):
    ADAMW_SHORTCUTS[_adamw_module.adamw] = "torch.optim.AdamW's update"
for _fused in ("_fused_adam_", "_fused_adamw_"):
    if hasattr(torch, _fused):
        ADAMW_SHORTCUTS[getattr(torch, _fused)] = f"torch.{_fused}"
WHY_ADAMW = ("Write the update yourself, with tensor operations on each parameter, its gradient "
             "and its state: the moments, the bias correction and the decoupled decay are the "
             "exercise.")
CLIP_SHORTCUTS = {f: f"torch.nn.utils.{name}" for name in
                  ("clip_grad_norm_", "clip_grad_norm", "clip_grads_with_norm_", "get_total_norm")
                  if (f := getattr(torch.nn.utils, name, None)) is not None}
WHY_CLIP = ("Compute the global norm of all the gradients and scale them yourself: the check "
            "compares you with torch.nn.utils.clip_grad_norm_, and one norm over every "
            "parameter (not one per tensor) is the point.")
SCHEDULE_SHORTCUTS = {"torch.optim.lr_scheduler": "torch.optim.lr_scheduler"}
WHY_SCHEDULE = ("Write the warm-up and the cosine decay as a formula of the step: the schedule "
                "is the exercise.")


def _make_adamw(cls, groups, defaults) -> torch.optim.Optimizer:
    __tracebackhide__ = True
    if not isinstance(cls, type):
        fail(f"Expected `AdamW` to be a class, but it is {describe(cls)}. Did a later cell reassign "
             "the name? Re-run the cell that defines it.")
    with refuse_shortcuts(ADAMW_SHORTCUTS, "AdamW", WHY_ADAMW, learner=cls) as watch:
        optimizer = call_learner(cls, groups, name="AdamW", **defaults)
        watch.look_at(optimizer)
    if not isinstance(optimizer, torch.optim.Optimizer):
        fail("AdamW should be a subclass of torch.optim.Optimizer (class AdamW(torch.optim.Optimizer)) "
             "whose __init__ calls super().__init__(params, defaults), as the given code does.")
    return optimizer


def _learner_step(optimizer) -> None:
    __tracebackhide__ = True
    with refuse_shortcuts(ADAMW_SHORTCUTS, "AdamW.step", WHY_ADAMW):
        try:
            call_learner(optimizer.step, name="AdamW.step")
        except CheckFailure as failure:
            gradless = any(p.grad is None for group in optimizer.param_groups for p in group["params"])
            if gradless and isinstance(failure.__cause__, (TypeError, AttributeError, RuntimeError)):
                raise CheckFailure(f"{failure}\nOne parameter had no gradient in this step (p.grad is "
                                   "None: the loss did not use it). Like torch, skip it: no decay, "
                                   "no update.") from failure.__cause__
            raise


def check_adamw_steps(AdamW, *, seed: int = 0, steps: int = 5, lr: float = 0.02,
                      betas=(0.8, 0.95), eps: float = 1e-6, weight_decay: float = 0.3,
                      group_decay: float = 0.1, missing_grad: bool = False) -> None:
    """`steps` calls of step() on three float64 tensors in two parameter groups (weight decay
    group_decay and 0.0; the constructor's weight_decay is a default neither group uses), with
    the learning rate changed before every step, against torch.optim.AdamW on copies."""
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (2, 3)]
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    # Gradients whose sizes span 1e-6 .. 1, so that eps matters for the small ones.
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64)
              * 10.0 ** (-6 * torch.rand(s, generator=gen, dtype=torch.float64)) for s in shapes]
             for _ in range(steps)]
    if missing_grad:  # parameter 1 is not used by the loss of step 2
        grads[min(1, steps - 1)][1] = None
    spec = [([0, 1], group_decay), ([2], 0.0)]
    # The schedule moves both groups' learning rates, and the second group's differs.
    schedule = [(lr * (0.5 + k / steps), 0.5 * lr * (1.5 - k / steps)) for k in range(steps)]
    defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def groups(params):
        return [{"params": [params[i] for i in indices], "weight_decay": decay}
                for indices, decay in spec]

    mine = [p.clone().requires_grad_() for p in init]
    theirs = [p.clone().requires_grad_() for p in init]
    optimizer = _make_adamw(AdamW, groups(mine), defaults)
    torch_optimizer = torch.optim.AdamW(groups(theirs), foreach=False, **defaults)
    history = []
    for k in range(steps):
        for params, opt in ((mine, optimizer), (theirs, torch_optimizer)):
            for p, g in zip(params, grads[k]):
                p.grad = None if g is None else g.clone()
            for i, group_lr in enumerate(schedule[k]):
                set_inside(opt, ("param_groups", i, "lr"), group_lr)
        before = [p.detach().clone() for p in mine]
        _learner_step(optimizer)
        torch_optimizer.step()
        history.append([p.detach().clone() for p in mine])
        gaps = [_relative_gap(a, e) for a, e in zip(history[-1], theirs)]
        if max(gaps) <= STEPS_TOL:
            continue
        if all(torch.equal(a, b) for a, b in zip(history[-1], before)):
            fail(f"step() number {k + 1} left every parameter unchanged. Update the parameters in "
                 "place (p.mul_, p.add_, p.addcdiv_, ...): the model holds these very tensors, so "
                 "assigning a new tensor to a name changes nothing.")
        for kind, message in ADAMW_MISTAKES.items():
            simulated = _adamw_simulation(kind, init, spec, defaults, schedule[:k + 1], grads[:k + 1])
            if all(_relative_gap(a, e) <= STEPS_TOL
                   for learner, sim in zip(history, simulated) for a, e in zip(learner, sim)):
                fail(message)
        i = int(np.argmax(gaps))
        fail(f"After step() number {k + 1}, parameter {i} (shape {tuple(shapes[i])}, in group "
             f"{0 if i < 2 else 1}) differs from torch.optim.AdamW's by {gaps[i]:.3g} relative to "
             "its largest entry. Compare your update with the four lines of the rule: decay with "
             "lr * group['weight_decay'], m and v, bias correction with the parameter's own t, "
             "then p -= lr * m_hat / (sqrt(v_hat) + eps), all read from the parameter's group.")
    passed(f"AdamW follows torch.optim.AdamW for {steps} steps: two parameter groups (weight decay "
           f"{group_decay} and 0), a learning rate that changes every step, betas={tuple(betas)}, "
           f"eps={eps}" + (", a parameter without a gradient" if missing_grad else ""))


def check_adamw_gpt(AdamW, *, seed: int = 0, steps: int = 100, lr: float = 3e-3,
                    weight_decay: float = 0.1, betas=(0.9, 0.99)) -> None:
    """A tiny GPT (float64) trained `steps` steps by the learner's AdamW and by torch.optim.AdamW
    from the same weights, with the course's parameter groups, warm-up and cosine schedule and
    the same batches: the losses and the final weights must agree."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        start = _gpt(seed, torch.float64)
        tokens = _tokens(seed + 1, 400)
        runs = {}
        for who in ("yours", "torch"):
            model = copy.deepcopy(start)
            groups = reference.param_groups(model, weight_decay)
            if who == "yours":
                optimizer = _make_adamw(AdamW, groups, dict(lr=lr, betas=betas))
            else:
                optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=False)
            generator = torch.Generator().manual_seed(seed + 2)
            losses = []
            for step in range(steps):
                step_lr = reference.lr_at(step, max_lr=lr, min_lr=lr / 10, warmup_steps=10,
                                          total_steps=steps)
                for i in range(len(optimizer.param_groups)):
                    set_inside(optimizer, ("param_groups", i, "lr"), step_lr)
                x, y = reference.get_batch(tokens, 8, 16, generator)
                _, loss = model(x, y)
                optimizer.zero_grad()
                loss.backward()
                if who == "yours":
                    _learner_step(optimizer)
                else:
                    optimizer.step()
                losses.append(loss.item())
            runs[who] = (model, losses)
    (model, losses), (torch_model, torch_losses) = runs["yours"], runs["torch"]
    gaps = [abs(a - b) / abs(b) for a, b in zip(losses, torch_losses)]
    names = dict(model.named_parameters())
    worst = max(((_relative_gap(p, q), name) for (name, p), q in
                 zip(names.items(), torch_model.parameters())), key=lambda pair: pair[0])
    if max(gaps) > GPT_TOL or worst[0] > GPT_TOL:
        first = next((k for k, gap in enumerate(gaps) if gap > GPT_TOL), None)
        where = (f"the losses part at step {first} ({losses[first]:.10g} against {torch_losses[first]:.10g})"
                 if first is not None else "the losses agree")
        fail(f"Trained {steps} steps on a small GPT, your AdamW ends with weights that differ from "
             f"torch.optim.AdamW's: {where}, and {worst[1]} differs by {worst[0]:.3g} relative to its "
             "largest entry. If check_adamw_steps passes, look at what a real model adds: many "
             "tensors in two groups, a weight shared by two modules (the tied head), a learning "
             "rate set in every group before each step.")
    passed(f"AdamW trains a small GPT for {steps} steps exactly as torch.optim.AdamW does (loss "
           f"{losses[0]:.3f} -> {losses[-1]:.3f}; largest difference {max(worst[0], max(gaps)):.1e}, "
           f"tolerance {GPT_TOL:g})")


# ==================================================================== param_groups

class _Other(nn.Module):
    """A model that is not a GPT, with other names: the rule must go by module type."""

    def __init__(self):
        super().__init__()
        self.vocab = nn.Embedding(11, 8)
        self.scale = nn.LayerNorm(8)
        self.mix = nn.Linear(8, 8)
        self.gate = nn.Linear(8, 8, bias=False)
        self.readout = nn.Linear(8, 11)
        self.embedding_like = nn.Parameter(torch.zeros(3))  # a bare parameter: no Linear, no decay


def _why(model: nn.Module, p: nn.Parameter) -> str:
    """What kind of parameter p is, and why it should or should not decay."""
    for module in model.modules():
        for name, q in module.named_parameters(recurse=False):
            if q is p:
                if isinstance(module, nn.Embedding):
                    return ("an embedding: a token's row gets a gradient only when the token occurs, "
                            "but decay would pull it towards 0 at every step; embeddings do not decay")
                if isinstance(module, nn.LayerNorm):
                    return (f"a LayerNorm's {'gain' if name == 'weight' else 'shift'}: its natural "
                            f"value is {'1' if name == 'weight' else '0'} and a few numbers per layer "
                            "cannot overfit; norms do not decay")
                if isinstance(module, nn.Linear) and name == "bias":
                    return "a bias: a few numbers per layer that cannot overfit; biases do not decay"
                if isinstance(module, nn.Linear):
                    return "the weight matrix of an nn.Linear, which decays"
                return "not the weight of an nn.Linear, so it does not decay"
    return "a parameter of the model"


def check_param_groups(param_groups, *, model: str = "gpt", weight_decay: float = 0.1,
                       bias: bool = True) -> None:
    """The learner's groups for a tiny GPT (model="gpt", with or without biases) or a model with
    other names (model="other"): every parameter once, nn.Linear weights at weight_decay, all
    others at 0, checked by membership, with messages that name each misplaced parameter."""
    __tracebackhide__ = True
    net = _gpt(0, bias=bias) if model == "gpt" else _Other()
    names = _names(net)
    expected = reference.param_groups(net, weight_decay)
    should_decay = {id(p) for p in expected[0]["params"]}
    result = call_learner(param_groups, net, weight_decay, name="param_groups")
    if result is None:
        fail("`param_groups` returned None. It should end with `return [decay_group, no_decay_group]`.")
    if isinstance(result, dict) or not isinstance(result, (list, tuple)):
        fail(f"`param_groups` should return a list of two dicts, but returned {describe(result)}.")
    seen: dict[int, int] = {}
    decayed: set[int] = set()
    for j, group in enumerate(result):
        if not isinstance(group, dict) or "params" not in group or "weight_decay" not in group:
            fail(f"Group {j} should be a dict with the keys 'params' and 'weight_decay', but it is "
                 f"{group if isinstance(group, dict) else describe(group)}.")
        value = group["weight_decay"]
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            fail(f"Group {j}'s weight_decay is {describe(value)}; it should be a number.")
        if value not in (0, weight_decay):
            fail(f"Group {j} has weight_decay={value}, but param_groups was called with "
                 f"weight_decay={weight_decay}: the decaying group uses that value, the other 0.0.")
        params = group["params"]
        if isinstance(params, torch.Tensor) or not hasattr(params, "__iter__"):
            fail(f"Group {j}'s 'params' should be a list of parameters, but it is {describe(params)}.")
        params = list(params)
        for p in params:
            if id(p) not in names:
                fail(f"Group {j} holds {describe(p)} that is not a parameter of the model: put the "
                     "model's own parameters (from module.named_parameters) in the groups, not copies.")
            if id(p) in seen:
                place = "twice in one group" if seen[id(p)] == j else f"in groups {seen[id(p)]} and {j}"
                fail(f"{names[id(p)]} appears {place}. A tied weight is ONE parameter that two "
                     "modules share: count it once (remember which parameters you have placed), "
                     "where its first owner in model.modules() order puts it. torch.optim "
                     "refuses a parameter in two groups.")
            seen[id(p)] = j
            if value > 0:
                decayed.add(id(p))
    missing = [names[i] for i in names if i not in seen]
    if missing:
        fail(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} in no group, so the "
             "optimizer would never update it: every parameter of the model goes in one of the "
             "two groups.")
    params = {id(p): p for p in net.parameters()}
    wrong_in = [i for i in names if i in decayed and i not in should_decay]  # in the model's order
    wrong_out = [i for i in names if i in should_decay and i not in decayed]
    if wrong_in:
        reasons: dict[str, str] = {}  # one example of each kind of mistake
        for i in wrong_in:
            reasons.setdefault(_why(net, params[i]), names[i])
        shown = "; ".join(f"{name} is {why}" for why, name in reasons.items())
        fail(f"{len(wrong_in)} parameter{'s are' if len(wrong_in) > 1 else ' is'} decayed that should "
             f"not be: {shown}. Decide by the module that owns the parameter (isinstance(module, "
             "nn.Linear) and the parameter's own name 'weight'), not by shape or by name.")
    if wrong_out:
        shown = ", ".join(names[i] for i in wrong_out[:3])
        fail(f"{shown} {'is' if len(wrong_out) == 1 else 'are'} the weight matrix of an nn.Linear "
             "and should be in the decaying group: decay is meant for the matrices that mix "
             "features, which hold nearly all the parameters.")
    n_decay = sum(params[i].numel() for i in should_decay)
    n_all = sum(p.numel() for p in params.values())
    passed(f"param_groups puts each of the {len(params)} parameters of "
           f"{'a GPT' if model == 'gpt' else 'a model with other names'} in one group: "
           f"{len(should_decay)} Linear weights decay ({n_decay / n_all:.0%} of the numbers), "
           "biases, norms and embeddings do not")


# ========================================================================== lr_at

# The schedule is a formula in float64; rearranging it changes the last bit or two:
# ~1e-16 relative. LR_RTOL = 1e-9 is far above that, and every mistake below moves some
# value by more than 1e-3 relative.
LR_RTOL = 1e-9


def _lr_variant(kind: str, step: int, max_lr, min_lr, warmup_steps, total_steps) -> float:
    right = reference.lr_at
    if kind == "warmup_from_zero" and step < warmup_steps:
        return max_lr * step / warmup_steps
    if kind == "decay_to_zero":
        return right(step, max_lr=max_lr, min_lr=0.0, warmup_steps=warmup_steps,
                     total_steps=total_steps)
    if kind == "progress_from_zero" and warmup_steps <= step < total_steps:
        return min_lr + 0.5 * (1 + math.cos(math.pi * step / total_steps)) * (max_lr - min_lr)
    if kind == "no_floor_after_end" and step >= total_steps:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    if kind == "cosine_without_half" and warmup_steps <= step < total_steps:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr + (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    return right(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps)


LR_MISTAKES = {
    "warmup_from_zero": "The warm-up starts at 0: the first step (step 0) would not train at all, "
                        "and the peak comes one step late. Use max_lr * (step + 1) / warmup_steps.",
    "decay_to_zero": "The cosine decays to 0 instead of min_lr: min_lr + (1 + cos(pi * progress)) / 2 "
                     "* (max_lr - min_lr).",
    "progress_from_zero": "The cosine's progress is counted from step 0; it starts after the warm-up: "
                          "progress = (step - warmup_steps) / (total_steps - warmup_steps), so that "
                          "the decay begins at max_lr.",
    "no_floor_after_end": "After total_steps the learning rate should stay at min_lr; yours follows "
                          "the cosine back up.",
    "cosine_without_half": "The cosine term lacks its 1/2: (1 + cos(pi * progress)) runs from 2 to 0, "
                           "so halve it to go from max_lr to min_lr.",
}


def check_lr_at(lr_at, *, max_lr: float = 6e-3, min_lr: float = 4e-4, warmup_steps: int = 10,
                total_steps: int = 110) -> None:
    """lr_at point by point: warm-up start, middle and peak, the start of the decay, its
    quarter, middle and three quarters, the last step, the end and beyond."""
    __tracebackhide__ = True
    decay = total_steps - warmup_steps
    points = {0: "the first step", warmup_steps // 2: "the middle of the warm-up",
              warmup_steps - 1: "the last warm-up step (the peak)", warmup_steps: "the start of the decay",
              warmup_steps + decay // 4: "a quarter of the decay", warmup_steps + decay // 2: "the midpoint",
              warmup_steps + 3 * decay // 4: "three quarters of the decay",
              total_steps - 1: "the last step", total_steps: "total_steps (the end)",
              total_steps + 25: "beyond the end"}
    points = {s: what for s, what in sorted(points.items()) if s >= 0}
    hyper = dict(max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps)
    got = {}
    for step in points:
        with refuse_shortcuts(SCHEDULE_SHORTCUTS, "lr_at", WHY_SCHEDULE):
            value = call_learner(lr_at, step, name="lr_at", **hyper)
        if value is None:
            fail("`lr_at` returned None. It should end with `return` and the learning rate.")
        if isinstance(value, torch.Tensor) or isinstance(value, bool) or not isinstance(value, numbers.Real):
            fail(f"`lr_at` should return a Python float, but returned {describe(value)} for step {step}.")
        got[step] = float(value)

    def same(a, b):
        return abs(a - b) <= LR_RTOL * abs(b) + 1e-300

    wrong = [s for s in points if not same(got[s], reference.lr_at(s, **hyper))]
    if not wrong:
        passed(f"lr_at is right at {len(points)} points: warm-up from {got[0]:.2e} to {max_lr:g}, "
               f"cosine to {min_lr:g} at step {total_steps}, flat after (warmup_steps={warmup_steps}, "
               f"total_steps={total_steps})")
        return
    for kind, message in LR_MISTAKES.items():  # the mistake that explains every wrong value
        if all(same(got[s], _lr_variant(kind, s, **hyper)) for s in wrong):
            fail(message)
    s = wrong[0]
    fail(f"lr_at({s}) is {got[s]:.6g} at {points[s]} (max_lr={max_lr}, min_lr={min_lr}, warmup_steps="
         f"{warmup_steps}, total_steps={total_steps}); it should be {reference.lr_at(s, **hyper):.6g}. "
         "Follow the three cases of the docstring.")


# ================================================================= clip_grad_norm

# float32 gradients, as in training. Two correct sums of squares in another order differ by
# ~1e-7 relative; with or without torch's 1e-6 guard in max_norm / (norm + 1e-6) the factor
# differs by 1e-6 / norm <= 1e-7 for the norms used here (>= 10). CLIP_RTOL = 1e-5 covers
# both; every mistake below moves the norm or some gradient by more than 1e-2 relative.
CLIP_RTOL = 1e-5


def _grad_model(seed: int, scale: float) -> nn.Module:
    """Three layers with gradients of very different sizes, and one parameter without any."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3, bias=False))
    sizes = iter([5.0, 0.3, 0.05, 0.01])  # one tensor dominates: per-tensor clipping differs
    for p in list(model.parameters())[:-1]:
        p.grad = scale * next(sizes) * torch.randn(p.shape, generator=gen)
    list(model.parameters())[-1].grad = None  # an unused parameter
    return model


def check_clip_grad_norm(clip_grad_norm, *, seed: int = 0, max_norm: float = 1.0) -> None:
    """Against torch.nn.utils.clip_grad_norm_, with model.parameters() (a generator) as the
    argument: once above the threshold (returned norm and clipped gradients), once below
    (gradients unchanged)."""
    __tracebackhide__ = True
    for scale, below in ((10.0, False), (max_norm / 1000, True)):
        model, theirs = _grad_model(seed, scale * max_norm), _grad_model(seed, scale * max_norm)
        before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        with torch_isolated(seed), refuse_shortcuts(CLIP_SHORTCUTS, "clip_grad_norm", WHY_CLIP):
            result = call_learner(clip_grad_norm, model.parameters(), max_norm, name="clip_grad_norm")
        expected = float(torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm))
        grads = [p.grad for p in model.parameters()]
        want = [p.grad for p in theirs.parameters()]
        if any(g is None for g, b in zip(grads, before) if b is not None):
            fail("clip_grad_norm set a gradient to None: scale the gradients in place (g.mul_(factor)).")
        if grads[-1] is not None:
            fail("clip_grad_norm gave a gradient to a parameter that had none: skip parameters "
                 "whose .grad is None.")
        if result is None:
            fail("`clip_grad_norm` returned None. It should return the global norm of the gradients "
                 "BEFORE clipping, as a Python float: that is the number a training run logs.")
        if isinstance(result, torch.Tensor) and result.numel() == 1:
            result = result.item()
        if isinstance(result, bool) or not isinstance(result, numbers.Real):
            fail(f"`clip_grad_norm` should return a Python float, but returned {describe(result)}.")
        result = float(result)
        changed = [i for i, (g, b) in enumerate(zip(grads, before))
                   if b is not None and not torch.equal(g, b)]
        if not below and not changed:
            if abs(result - expected) <= CLIP_RTOL * expected:
                fail("The gradients were not changed although their global norm "
                     f"({expected:.4g}) is above max_norm={max_norm}. If you loop over `parameters` "
                     "twice, note that model.parameters() is a generator: it is empty the second "
                     "time. Make a list of the gradients first.")
            fail(f"The gradients were not changed although their global norm ({expected:.4g}) is "
                 f"above max_norm={max_norm}: multiply each by max_norm / (norm + 1e-6).")
        norms = [float(b.norm()) for b in before if b is not None]
        if abs(result - expected) > CLIP_RTOL * expected:
            if not below and abs(result - max_norm) <= 1e-3 * max_norm:
                fail(f"clip_grad_norm returned {result:.6g}, the norm AFTER clipping. Return the norm "
                     f"before clipping ({expected:.6g}): a training log wants to see how large the "
                     "gradient really was, spikes included.")
            if abs(result - sum(norms)) <= CLIP_RTOL * sum(norms):
                fail(f"clip_grad_norm returned {result:.6g}, the sum of the tensors' norms. The global "
                     "norm is that of all entries as one vector: sqrt of the sum of every tensor's "
                     f"squared norm ({expected:.6g}).")
            if abs(result - max(norms)) <= CLIP_RTOL * max(norms):
                fail(f"clip_grad_norm returned {result:.6g}, the norm of one tensor. Return the global "
                     f"norm of all of them together ({expected:.6g}).")
            fail(f"clip_grad_norm returned {result:.6g}; the global norm of the gradients is "
                 f"{expected:.6g}: sqrt of the sum of every tensor's squared norm, before clipping.")
        if below:
            if changed:
                fail(f"The global norm ({expected:.3g}) is below max_norm={max_norm}, but gradients "
                     "changed. Clip only when the norm is above the threshold: the factor is "
                     "min(1, max_norm / (norm + 1e-6)).")
            continue
        per_tensor = [b * min(1.0, max_norm / (float(b.norm()) + 1e-6)) for b in before if b is not None]
        if all(torch.allclose(g, w, rtol=CLIP_RTOL, atol=0) for g, w in zip(grads, per_tensor)):
            fail("Each tensor was clipped on its own to norm max_norm. Clip globally: ONE factor, "
                 "max_norm / (global norm + 1e-6), for all gradients, so that the update keeps its "
                 "direction. Clipping tensor by tensor changes the direction, and lets the whole "
                 "gradient be as large as max_norm times the number of tensors.")
        for i, (g, w) in enumerate(zip(grads[:-1], want[:-1])):
            if not torch.allclose(g, w, rtol=CLIP_RTOL, atol=0):
                ratio = float((g.norm() / w.norm()))
                fail(f"Gradient {i} after clipping has norm {float(g.norm()):.6g}, torch's "
                     f"{float(w.norm()):.6g} (ratio {ratio:.4g}). Multiply every gradient by the same "
                     "factor max_norm / (global norm + 1e-6).")
    passed(f"clip_grad_norm matches torch.nn.utils.clip_grad_norm_ with model.parameters(): returns "
           f"the norm before clipping, scales all gradients by one factor above max_norm={max_norm} "
           "and leaves them alone below it")


# ====================================================================== get_batch

def _run_get_batch(get_batch, tokens, batch_size, block_size, generator):
    __tracebackhide__ = True
    try:
        result = call_learner(get_batch, tokens.clone(), batch_size, block_size, generator,
                              name="get_batch")
    except CheckFailure as failure:
        if isinstance(failure.__cause__, (IndexError, RuntimeError)):
            raise CheckFailure(
                f"{failure}\nWith only {len(tokens)} tokens and block_size={block_size}, do your "
                "windows run past the end? The last start is len(tokens) - block_size - 1: its "
                "target window ends at the last token, and torch.randint(high, ...) never draws "
                "high itself.") from failure.__cause__
        raise
    if result is None:
        fail("`get_batch` returned None. It should end with `return x, y`.")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"`get_batch` should return a tuple (x, y), but returned {describe(result)}.")
    x, y = result
    for what, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            fail(f"{what} should be a tensor, but it is {describe(t)}.")
        if tuple(t.shape) != (batch_size, block_size):
            fail(f"{what} has shape {tuple(t.shape)}, expected (batch_size, block_size) = "
                 f"{(batch_size, block_size)}.")
        if t.dtype != torch.int64:
            fail(f"{what} has dtype {t.dtype}: index the int64 token tensor, do not convert it.")
    return x, y


def check_get_batch(get_batch, *, seed: int = 0, n_tokens: int = 300, batch_size: int = 8,
                    block_size: int = 16) -> None:
    """x and y are windows of the tokens, y one token ahead; the windows are exactly the
    reference's for the same generator state, drawn from that generator only; in a tiny
    token array every start, the last one included, is drawn and none runs past the end."""
    __tracebackhide__ = True
    with torch_isolated(seed):
        # Positions as tokens: every value says where it came from.
        positions = torch.arange(n_tokens)
        x, y = _run_get_batch(get_batch, positions, batch_size, block_size,
                              torch.Generator().manual_seed(seed))
        starts = x[:, 0]
        if not torch.equal(x, starts[:, None] + torch.arange(block_size)):
            fail("The rows of x are not windows of consecutive tokens: x[b] should be "
                 "tokens[s : s + block_size] for its start s.")
        if torch.equal(y, x):
            fail("y equals x: y holds the targets, the tokens one position further, "
                 "tokens[s + 1 : s + block_size + 1].")
        if torch.equal(y, x - 1):
            fail("y is shifted the wrong way (one token back): the target of position t is the "
                 "token at t + 1, so y[b] = tokens[s + 1 : s + block_size + 1].")
        if not torch.equal(y, x + 1):
            fail("y should be x shifted one token ahead: y[b] = tokens[s + 1 : s + block_size + 1] "
                 "with the same start s as x[b].")

        # A tiny array: starts 0 and 1 only. Both must come up, neither may overrun.
        tiny = torch.arange(block_size + 2)
        seen = set()
        gen = torch.Generator().manual_seed(seed + 4)
        for _ in range(4):
            x, y = _run_get_batch(get_batch, tiny, 16, block_size, gen)
            seen |= set(x[:, 0].tolist())
        if 1 not in seen:
            fail(f"With {len(tiny)} tokens and block_size={block_size}, two windows fit (starts 0 and "
                 "1), but the last one was never drawn in 64 windows: the upper end of "
                 "torch.randint is exclusive, so use len(tokens) - block_size.")

        tokens = _tokens(seed, n_tokens)
        gen, ref_gen = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 1)
        torch.manual_seed(seed + 2)
        x, y = _run_get_batch(get_batch, tokens, batch_size, block_size, gen)
        ref_x, ref_y = reference.get_batch(tokens, batch_size, block_size, ref_gen)
        if not (torch.equal(x, ref_x) and torch.equal(y, ref_y)):
            again_gen = torch.Generator().manual_seed(seed + 1)
            torch.manual_seed(seed + 3)  # another global state: does the result change?
            x2, _ = _run_get_batch(get_batch, tokens, batch_size, block_size, again_gen)
            if not torch.equal(x, x2):
                fail("Two calls with generators in the same state gave different windows: draw the "
                     "starts from the generator you are given (generator=generator), not from "
                     "torch's global random numbers, which dropout also uses.")
            fail("The windows differ from the reference's for the same generator state. Draw all "
                 "starts with ONE call torch.randint(len(tokens) - block_size, (batch_size,), "
                 "generator=generator), so that a run's batches depend only on its seed (and a "
                 "resumed run gets the same ones).")
        if not torch.equal(gen.get_state(), ref_gen.get_state()):
            fail("The windows are right, but the generator advanced differently from one call of "
                 "torch.randint(len(tokens) - block_size, (batch_size,), generator=generator): "
                 "draw nothing else from it.")

    passed(f"get_batch draws the reference's windows ({batch_size} x {block_size}) from the given "
           "generator, y one token ahead of x; the last window is reachable and none overruns")


# ======================================================================= evaluate

# float32 losses, as in training. The mean over windows computed in other batches differs
# by ~1e-7 relative (float32 rounding of per-batch means); EVAL_RTOL = 1e-5 covers it,
# while weighing a smaller last batch like a full one moves the mean by > 1e-3 here.
EVAL_RTOL = 1e-5


def _numpy_windows_loss(model: nn.Module, tokens: torch.Tensor, block_size: int) -> float:
    """The same loss from llmref.corpus.windows (NumPy), all windows in one batch."""
    pairs = torch.from_numpy(numpy_windows(tokens.numpy(), block_size))  # (n, 2, T)
    was = model.training
    model.eval()
    with torch.no_grad():
        _, loss = model(pairs[:, 0], pairs[:, 1])
    model.train(was)
    return loss.item()


def check_evaluate(evaluate, *, seed: int = 0, n_windows: int = 37, batch_size: int = 8,
                   block_size: int = 16, exact_fit: bool = False) -> None:
    """The held-out loss of a tiny GPT with dropout, over n_windows non-overlapping windows in
    batches of batch_size (the last one smaller), against the NumPy windows; no gradients, no
    dropout, and the model left in the mode it came in (train, then eval).
    exact_fit: len(tokens) = n_windows * block_size, so only n_windows - 1 windows fit."""
    __tracebackhide__ = True
    n_tokens = n_windows * block_size + (0 if exact_fit else 1 + block_size // 2)
    tokens = _tokens(seed, n_tokens)
    model = _gpt(seed, dropout=0.3, block_size=block_size)
    expected = _numpy_windows_loss(model, tokens, block_size)
    seen = {"training": [], "grad": []}

    def hook(module, args):
        seen["training"].append(any(m.training for m in model.modules()))
        seen["grad"].append(torch.is_grad_enabled())

    for start_mode in (True, False):
        model.train(start_mode)
        handle = model.register_forward_pre_hook(hook)
        seen = {"training": [], "grad": []}
        try:
            with torch_isolated(seed):
                try:
                    result = call_learner(evaluate, model, tokens.clone(), block_size, batch_size,
                                          name="evaluate")
                except CheckFailure as failure:
                    if isinstance(failure.__cause__, (RuntimeError, IndexError)):
                        raise CheckFailure(
                            f"{failure}\nWith {n_tokens} tokens and block_size={block_size}, do the "
                            "windows run past the end? The last window needs one more token for its "
                            "last target: n = (len(tokens) - 1) // block_size windows.") from failure.__cause__
                    raise
        finally:
            handle.remove()
        mode = "training" if start_mode else "eval"
        if not seen["training"]:
            fail("`evaluate` never ran the model it was given.")
        if any(seen["grad"]):
            fail("The model ran with gradient tracking on: evaluate needs no gradients. Decorate it "
                 "with @torch.no_grad() (or wrap the forward passes in `with torch.no_grad():`); a "
                 "graph for every held-out batch costs memory and time for nothing.")
        if any(seen["training"]):
            fail("The model ran in training mode, so dropout zeroed activations at random and the "
                 "held-out loss changes from call to call: call model.eval() before the forward passes.")
        if any(m.training != start_mode for m in model.modules()):
            fail(f"The model came in {mode} mode and `evaluate` left it in "
                 f"{'eval' if start_mode else 'training'} mode. Remember model.training before "
                 "switching to eval and put it back with model.train(mode_before): train() calls "
                 "evaluate in the middle of training and carries on with dropout on.")
        if result is None:
            fail("`evaluate` returned None. It should return the mean loss, a Python float.")
        if isinstance(result, torch.Tensor) or isinstance(result, bool) or not isinstance(result, numbers.Real):
            fail(f"`evaluate` should return a Python float, but returned {describe(result)}.")
        value = float(result)
        if abs(value - expected) > EVAL_RTOL * expected:
            n = (n_tokens - 1) // block_size
            sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
            with torch.no_grad():
                model.eval()
                pairs = torch.from_numpy(numpy_windows(tokens.numpy(), block_size))
                means = [model(pairs[i:i + batch_size, 0], pairs[i:i + batch_size, 1])[1].item()
                         for i in range(0, n, batch_size)]
                model.train(start_mode)
            if sizes[-1] != batch_size and abs(value - sum(means) / len(means)) <= EVAL_RTOL * expected:
                fail(f"`evaluate` returned {value:.6g}, the plain mean of the batches' losses. The last "
                     f"batch is smaller ({sizes[-1]} of {batch_size} windows here), so weigh each batch's "
                     f"mean loss by its number of windows, then divide by all {n} windows "
                     f"(expected {expected:.6g}).")
            fail(f"`evaluate` returned {value:.6g}, but the mean loss over the {n} non-overlapping "
                 f"windows of {n_tokens} tokens is {expected:.6g}. Window i reads tokens[i*T : (i+1)*T] "
                 "and predicts tokens[i*T + 1 : (i+1)*T + 1], for i < (len(tokens) - 1) // T.")
    passed(f"evaluate returns {value:.4f}, the mean loss over {(n_tokens - 1) // block_size} windows "
           f"in batches of {batch_size}, without gradients or dropout, and leaves the model's mode alone")


# =============================================================== checkpoint and resume

def _train_config(seed: int, **changes) -> Any:
    return reference.TrainConfig(**{**dict(steps=12, batch_size=4, max_lr=3e-3, min_lr=3e-4,
                                           warmup_steps=3, weight_decay=0.1, eval_every=4,
                                           seed=seed), **changes})


def _advance(model, optimizer, generator, tokens, config, steps: int) -> list[float]:
    """A few real training steps, so that the optimizer has state and the generators moved."""
    losses = []
    for _ in range(steps):
        x, y = reference.get_batch(tokens, config.batch_size, model.config.block_size, generator)
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _same_state(a, b) -> bool:
    """Whether two nested state dicts (tensors, numbers, lists, dicts) are equal, bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and torch.equal(a.float(), b.float()))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def _saved_run(save_checkpoint, folder: Path, seed: int, **model_changes):
    """Train a few steps with dropout, save with the learner's save_checkpoint; returns what
    was saved, as it was at that moment."""
    __tracebackhide__ = True
    config = _train_config(seed)
    model = _gpt(seed, dropout=0.2, **model_changes)
    optimizer = reference.make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    tokens = _tokens(seed, 300)
    torch.manual_seed(seed + 7)
    losses = _advance(model, optimizer, generator, tokens, config, 3)
    history = {"step": [0, 1, 2], "loss": losses, "lr": [1e-3, 2e-3, 3e-3], "eval_step": [],
               "eval_loss": [], "eval_seconds": [], "train_seconds": 0.5}
    path = folder / "run.pt"
    saved = dict(model=copy.deepcopy(model.state_dict()),
                 optimizer=copy.deepcopy(optimizer.state_dict()),
                 generator=generator.get_state(), torch_rng=torch.get_rng_state(),
                 history=copy.deepcopy(history), step=3, config=config, path=path)
    call_learner(save_checkpoint, path, model, optimizer, 3, generator, config, history,
                 name="save_checkpoint")
    if not path.exists():
        fail(f"save_checkpoint did not create the file it was given ({path.name}): write the "
             "checkpoint with torch.save(state, path).")
    return saved


def _fresh(seed: int, config, **model_changes):
    """Another model, optimizer and generator, and another global random state."""
    model = _gpt(seed + 100, dropout=0.2, **model_changes)
    optimizer = reference.make_optimizer(model, config)
    generator = torch.Generator().manual_seed(seed + 1000)
    torch.manual_seed(seed + 10_000)
    return model, optimizer, generator


def check_checkpoint(save_checkpoint, restore_checkpoint, *, seed: int = 0) -> None:
    """Save a run three steps in (tiny GPT with dropout, torch's AdamW with its moments), then
    restore it into a fresh model, optimizer and generator after scrambling torch's random
    state: every piece must come back exactly."""
    __tracebackhide__ = True
    with torch_isolated(seed), scratch_folder() as folder:
        saved = _saved_run(save_checkpoint, Path(folder), seed)
        model, optimizer, generator = _fresh(seed, saved["config"])
        result = call_learner(restore_checkpoint, saved["path"], model, optimizer, generator,
                              saved["config"], name="restore_checkpoint")
        torch_rng, generator_state = torch.get_rng_state(), generator.get_state()
    if result is None:
        fail("`restore_checkpoint` returned None. It should return (step, history) as they were saved.")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"`restore_checkpoint` should return a tuple (step, history), but returned {describe(result)}.")
    step, history = result
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    if step != saved["step"]:
        fail(f"restore_checkpoint returned step {step!r}, but the checkpoint was saved after "
             f"{saved['step']} steps: save the step and return it, so that the resumed run continues "
             "the learning-rate schedule where it stopped instead of warming up again.")
    if not isinstance(history, dict) or not _same_state(history, saved["history"]):
        fail("restore_checkpoint did not return the history that was saved: keep it in the "
             "checkpoint and return it, so that the resumed run's record (losses, evaluations) "
             "continues the interrupted one's instead of starting empty.")
    if not _same_state(model.state_dict(), saved["model"]):
        fail("The model's weights were not restored: save model.state_dict() and load it back "
             "with load_state(model, ...).")
    restored = optimizer.state_dict()
    if not restored["state"]:
        fail("The optimizer's state was not restored: it is empty, as in a new optimizer. Save "
             "optimizer.state_dict() and load it with optimizer.load_state_dict(...). Without "
             "Adam's moments m and v and its step count, the resumed run's first steps are like a "
             "new run's: bias correction from t = 1 and full-size updates in every direction.")
    if not _same_state(restored["state"], saved["optimizer"]["state"]):
        fail("The optimizer's state differs from the one saved: save optimizer.state_dict() and "
             "restore it with optimizer.load_state_dict(...), unchanged.")
    if not torch.equal(generator_state, saved["generator"]):
        fail("The batch generator was not restored, so the resumed run would draw other windows "
             "than the uninterrupted one (the batch order). Save generator.get_state() and restore "
             "it with generator.set_state(...).")
    if not torch.equal(torch_rng, saved["torch_rng"]):
        fail("torch's global random state was not restored, so the resumed run's dropout masks "
             "differ from those the uninterrupted run would have drawn. Save torch.get_rng_state() "
             "and restore it with torch.set_rng_state(...).")
    passed("restore_checkpoint brings back the weights, Adam's moments and step counts, the step, "
           "the history, the batch generator and torch's random state (dropout), bit for bit")


def _run_train(train, *args, **kwargs):
    __tracebackhide__ = True
    try:
        return call_learner(train, *args, name="train", **kwargs)
    except CheckFailure as failure:
        if isinstance(failure.__context__, NotImplementedError):
            fail("train calls the functions you write in this notebook, and one of them still "
                 "raises NotImplementedError: finish the cells above (the traceback of a run of "
                 "train in the 'Try it' section shows which).")
        raise


def check_resume(train, *, seed: int = 0, steps: int = 12, stop_after: int = 5,
                 eval_every: int = 4, dropout: float = 0.2) -> None:
    """The notebook's train: an uninterrupted run, and one stopped after `stop_after` steps and
    resumed into a fresh model after torch's random state was scrambled. With dropout on, the
    losses must be identical step for step, bit for bit, and so must the final weights."""
    __tracebackhide__ = True
    config = _train_config(seed, steps=steps, eval_every=eval_every)
    tokens, held_out = _tokens(seed, 400), _tokens(seed + 1, 70)
    with torch_isolated(seed), scratch_folder() as folder:
        path = Path(folder) / "run.pt"
        model = _gpt(seed, dropout=dropout)
        torch.manual_seed(seed + 1)
        whole = _run_train(train, model, tokens, config, held_out=held_out)
        first = _gpt(seed, dropout=dropout)
        torch.manual_seed(seed + 1)
        part = _run_train(train, first, tokens, config, held_out=held_out, checkpoint=path,
                          stop_after=stop_after)
        torch.manual_seed(seed + 99)  # whatever ran in between, the dropout masks must continue
        torch.rand(1000)
        resumed_model = _gpt(seed + 50, dropout=dropout)
        resumed = _run_train(train, resumed_model, tokens, config, held_out=held_out,
                             checkpoint=path, resume=True)
    for what, history in (("uninterrupted", whole), ("interrupted", part), ("resumed", resumed)):
        if not isinstance(history, dict) or "loss" not in history:
            fail(f"The {what} run of train returned {describe(history)} instead of its history dict.")
    if len(part["loss"]) != stop_after:
        fail(f"The run stopped after {stop_after} steps recorded {len(part['loss'])} losses.")
    losses, expected = resumed["loss"], whole["loss"]
    if losses[:stop_after] != expected[:stop_after]:
        fail(f"The resumed run's history does not begin with the {stop_after} losses recorded before "
             "the interruption: restore_checkpoint must return the saved history, which train "
             "continues.")
    if len(losses) != len(expected):
        fail(f"The resumed run recorded {len(losses)} losses in all; the uninterrupted one {len(expected)}. "
             "Return the saved step from restore_checkpoint: train continues from it.")
    if losses != expected:
        k = next(i for i, (a, b) in enumerate(zip(losses, expected)) if a != b)
        fail(f"The resumed run's loss at step {k} is {losses[k]!r}; the uninterrupted run's was "
             f"{expected[k]!r}. The steps before the interruption (at step {stop_after}) agree, so "
             "something the run depends on was not restored: the weights, the optimizer's state, "
             "the batch generator or torch's random state (dropout). check_checkpoint names which.")
    for (name, p), q in zip(resumed_model.named_parameters(), model.parameters()):
        if not torch.equal(p, q):
            fail(f"The losses agree but the final weights do not ({name}): the last update after "
                 "resuming differs from the uninterrupted run's.")
    passed(f"stopped after {stop_after} of {steps} steps and resumed into a fresh model, the run "
           f"reproduces the uninterrupted one's {steps} losses and final weights bit for bit, with "
           f"dropout {dropout}")


def _error_of(restore_checkpoint, *args) -> Exception | None:
    """The exception restore_checkpoint raises (None if it returns)."""
    try:
        restore_checkpoint(*args)
    except NotImplementedError:
        fail("`restore_checkpoint` still raises NotImplementedError. Replace the "
             "`raise NotImplementedError()` line with your implementation.")
    except Exception as error:  # the error the learner raises on purpose
        return error
    return None


def _shape_text(shape) -> str:
    return ", ".join(str(n) for n in shape)


def check_resume_errors(save_checkpoint, restore_checkpoint, *, seed: int = 0,
                        field: str = "max_lr", value: Any = 1e-2,
                        model_change: dict | None = None) -> None:
    """Resuming with a TrainConfig whose `field` differs must fail naming the field and both
    values, before the model changes; resuming into a model of another width must fail naming
    a tensor and both shapes. model_change (e.g. {"n_head": 4}): a model of the same shapes
    but another configuration must fail naming the field."""
    __tracebackhide__ = True
    with torch_isolated(seed), scratch_folder() as folder:
        saved = _saved_run(save_checkpoint, Path(folder), seed)
        config = saved["config"]
        old = getattr(config, field)
        other = dataclasses.replace(config, **{field: value})
        model, optimizer, generator = _fresh(seed, other)
        before = copy.deepcopy(model.state_dict())
        error = _error_of(restore_checkpoint, saved["path"], model, optimizer, generator, other)
        if error is None:
            fail(f"Resuming with a TrainConfig whose {field} is {value!r} (the checkpoint's is {old!r}) "
                 "did not raise. The run would silently mix two configurations: compare the saved "
                 "configuration with the new one and raise a ValueError naming what differs.")
        message = str(error)
        if field not in message or not (repr(old) in message or str(old) in message):
            fail(f"Resuming with another {field} raised {type(error).__name__}: {message!r}. Say what "
                 f"differs: the field ({field}) and both values ({old!r} and {value!r}); "
                 "config_differences(saved, asdict(config)) writes that for you.")
        if not _same_state(model.state_dict(), before):
            fail("Resuming with another configuration raised, but only after changing the model: "
                 "compare the configurations before loading anything.")

        wider = _fresh(seed, config, n_embd=48)
        error = _error_of(restore_checkpoint, saved["path"], *wider, config)
        if error is None:
            fail("Resuming into a model of another width (n_embd 48 instead of 32) did not raise.")
        message = str(error)
        saved_shapes = {k: tuple(v.shape) for k, v in saved["model"].items()}
        mismatched = [(k, saved_shapes[k], tuple(v.shape)) for k, v in wider[0].state_dict().items()
                      if k in saved_shapes and saved_shapes[k] != tuple(v.shape) and v.dim() >= 2]
        if not any(k in message and _shape_text(a) in message and _shape_text(b) in message
                   for k, a, b in mismatched):
            k, a, b = mismatched[0]
            fail(f"Resuming into a model of another width raised {type(error).__name__}: {message!r}. "
                 f"Name a tensor that does not fit and both shapes, e.g. {k}: {a} in the checkpoint, "
                 f"{b} in the model. load_state(model, state) does that: load the tensors with it "
                 "before comparing the model's configuration.")
        if model_change:
            (name, changed), = model_change.items()
            same_shapes = _fresh(seed, config, **model_change)
            error = _error_of(restore_checkpoint, saved["path"], *same_shapes, config)
            if error is None or name not in str(error):
                fail(f"Resuming into a model with another {name} ({changed}) "
                     + ("did not raise" if error is None else f"raised {str(error)!r}")
                     + f". Its tensors have the same shapes, so only the configurations can tell: "
                     "save model_config(model) and compare it with the model's, naming what differs.")
    passed(f"resuming with another {field} fails naming it and both values, before the model changes; "
           "a model of another width fails naming a tensor and both shapes"
           + (f"; another {next(iter(model_change))} is caught too" if model_change else ""))
