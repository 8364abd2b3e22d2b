"""Checks for exercise 11_gpt: the decoder-only GPT, its loss, sampling and parameter count.

Each forward check builds :class:`llmref.gpt.GPT` for a small config, overwrites every
parameter with seeded random values (biases and LayerNorm parameters included, so that a
forgotten one shows), loads that ``state_dict`` into the learner's ``GPT`` and compares the
learner's float32 result with the reference's, run in float64 on the same weights. The
reference is itself tested against a forward pass assembled from torch built-ins
(``nn.MultiheadAttention``, ``F.layer_norm``, ...) in tests/test_llmref_gpt.py.

The sampling check runs the learner's ``generate`` on the reference's forward pass (a
subclass of the reference carrying the learner's methods), so that it grades the sampling
loop alone, and compares the tokens exactly: both draw from identically seeded
``torch.Generator`` objects. The count check compares the learner's formula with the
number of parameters of the reference model (for sizes too big to build, with the
reference's formula, itself tested against built models).

On a mismatch a check recomputes the answer the way each common mistake would (positions
not added, no final norm, targets shifted twice, top-k masking with 0, no crop, ...) and
names the one the learner's answer matches, so a failure says what to fix.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmref.gpt import GPT as Reference
from llmref.gpt import GPTConfig
from llmref.gpt import count_parameters as reference_count

from ._core import (CheckFailure, as_float_array, call_learner, describe, expect_class, fail, find_bad_values,
                    passed, watch_calls, with_methods_of, worst_mismatch)

NAME = "GPT"

# The checks' model: every size distinct (V=23, block_size=12, C=16, and the batches and
# lengths the checks use), so that a tensor built from the wrong size cannot broadcast by luck.
SMALL = dict(vocab_size=23, block_size=12, n_layer=2, n_head=2, n_embd=16)

# The learner's model runs in float32, the reference in float64 on the same float32 weights
# and inputs. Through two blocks the reference run in float32 differs from float64 by at most
# 4e-6 on logits of order 10 (measured on these configs), so 1e-4 leaves a margin of 25; the
# known mistakes move logits by more than 1e-1.
RTOL = 1e-4
ATOL = 1e-4
# The mean of B*T cross-entropies of order 5: float32 rounding costs < 5e-7 (measured).
LOSS_TOL = 1e-5
# Causality compares the learner's own model with itself on inputs that differ only at
# position t: the earlier positions go through the same operations on the same numbers, so
# they agree to rounding (normally exactly); a position that sees the future moves by ~1e-1.
CAUSAL_TOL = 1e-5
# A fresh model with GPT-2's std-0.02 initialisation has logits within about +-0.3 of each
# other (the tied head gives each position's own input token a slightly higher one), so its
# loss on uniformly random targets is ln V + 0.00 to 0.07 (measured for C <= 256, several
# seeds). A tenth of a nat is a comfortable margin; PyTorch's default initialisation gives a
# first loss above 40, an init of std 0.1 about 1 nat too much.
INITIAL_LOSS_MARGIN = 0.1
# The sample std of n >= 2,000 normal numbers is within ~1/sqrt(2n) < 2 % of the true std; a
# wrong initialisation (PyTorch's default, or c_proj not scaled down) is off by 40 % or more.
INIT_STD_RTOL = 0.1


def _config(**overrides) -> GPTConfig:
    unknown = set(overrides) - {f.name for f in fields(GPTConfig)}
    assert not unknown, f"not GPTConfig fields: {unknown}"
    return GPTConfig(**{**SMALL, **overrides})


def _describe_config(config: GPTConfig) -> str:
    return (f"GPTConfig(vocab_size={config.vocab_size}, block_size={config.block_size}, "
            f"n_layer={config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}"
            + ("" if config.bias else ", bias=False") + ")")


def _fail_from(exc: BaseException, message: str) -> None:
    """Fail, keeping `exc` as the cause so the learner's own frames are shown above the message."""
    __tracebackhide__ = True
    raise CheckFailure(message) from exc


# ----------------------------------------------------------------------------- weights

def _random_state(config: GPTConfig, seed: int) -> dict:
    """A state_dict of the reference's layout holding seeded random float32 values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # building a module draws from the global RNG: not the learner's
        model = Reference(config)
    with torch.no_grad():
        for name, p in model.named_parameters():  # the tied matrix once, as transformer.wte.weight
            noise = torch.randn(p.shape, generator=gen)
            if name.startswith(("transformer.wte", "transformer.wpe")):
                # std 0.5: the tied head then gives logits of order sqrt(C) * 0.5 ~ 2, a softmax
                # that is neither uniform nor one-hot, so that a mistake shows.
                p.copy_(0.5 * noise)
            elif p.dim() == 2:
                p.copy_(noise / math.sqrt(p.shape[1]))  # each layer's output of order 1
            elif ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * noise)  # LayerNorm gains away from 1: a missing norm shows
            else:
                p.copy_(0.3 * noise)  # biases away from 0: a missing bias shows
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _reference(config: GPTConfig, state: dict, dtype=torch.float64) -> Reference:
    with torch.random.fork_rng(devices=[]):
        model = Reference(config).to(dtype)
    model.load_state_dict(state)
    return model.eval()


def _built(config: GPTConfig) -> Reference:
    with torch.random.fork_rng(devices=[]):
        return Reference(config)


# Models up to this size are built to count their parameters (~40 ms for the course's 0.8M).
# Beyond it, the reference's formula stands in for the count: tests/test_llmref_gpt.py checks
# that formula against the numel of models built on the meta device, GPT-2's sizes included.
# (The meta device is not used here: its first use costs seconds of imports per grading kernel.)
BUILD_LIMIT = 5_000_000


def _numel(config: GPTConfig) -> int:
    """The number of parameters of GPT(config), each shared Parameter once."""
    if reference_count(config) > BUILD_LIMIT:
        return reference_count(config)
    return sum(p.numel() for p in _built(config).parameters())


def _layout(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The reference's state_dict names and shapes."""
    return {k: tuple(v.shape) for k, v in _built(config).state_dict().items()}


@dataclass
class Case:
    """One seeded problem: a config, its weights, a batch and the reference's answers."""
    config: GPTConfig
    state: dict                   # the reference's state_dict, float32
    idx: torch.Tensor             # (B, T) int64
    targets: torch.Tensor         # (B, T) int64
    reference: Reference          # float64, the state loaded
    expected_logits: np.ndarray   # (B, T, V) float64
    expected_loss: float

    @property
    def shape(self) -> tuple[int, int, int]:
        B, T = self.idx.shape
        return B, T, self.config.vocab_size


def _make_case(seed: int, *, batch: int, length: int, **overrides) -> Case:
    config = _config(**overrides)
    assert 1 <= length <= config.block_size
    state = _random_state(config, seed)
    gen = torch.Generator().manual_seed(seed + 7919)
    # As a caller cuts a batch: T + 1 consecutive tokens, inputs the first T, targets the last T.
    tokens = torch.randint(config.vocab_size, (batch, length + 1), generator=gen)
    idx, targets = tokens[:, :-1].clone(), tokens[:, 1:].clone()
    reference = _reference(config, state)
    with torch.no_grad():
        logits, loss = reference(idx, targets)
    return Case(config, state, idx, targets, reference, logits.numpy(), float(loss))


# --------------------------------------------------------------- building and calling

def _instantiate(cls: Any, config: GPTConfig, seed: int) -> nn.Module:
    __tracebackhide__ = True
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        fail(f"Expected `{NAME}` to be a class that subclasses nn.Module, but got {describe(cls)}. "
             "Pass the class itself (not an instance), and re-run the cell that defines it.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the learner's initialisation draws from the global generator
        return call_learner(cls, config, name=cls.__name__)


def _layout_hints(expected: dict, actual: dict, config: GPTConfig) -> list[str]:
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    hints = []
    if any(f"transformer.{k}" in expected for k in extra):
        hints.append("Keep wte, wpe, drop, h and ln_f inside self.transformer = "
                     "nn.ModuleDict(dict(wte=..., wpe=..., drop=..., h=..., ln_f=...)).")
    if "lm_head.bias" in extra:
        hints.append("The head has no bias: nn.Linear(n_embd, vocab_size, bias=False).")
    if "transformer.wpe.weight" in missing and "transformer.wpe.weight" not in extra:
        hints.append("The position embedding transformer.wpe, nn.Embedding(block_size, n_embd), "
                     "is missing.")
    if any(k.startswith("transformer.ln_f") for k in missing):
        hints.append("The final LayerNorm transformer.ln_f, nn.LayerNorm(n_embd, bias=bias), is missing.")
    if not config.bias and any(k.endswith(".bias") for k in extra):
        hints.append("With bias=False no layer has a bias, the LayerNorms included: pass "
                     "bias=config.bias to nn.LayerNorm and to Block.")
    blocks = {k.split(".")[2] for k in actual if k.startswith("transformer.h.")}
    if blocks and len(blocks) != config.n_layer:
        hints.append(f"transformer.h should hold n_layer = {config.n_layer} Blocks, not {len(blocks)}.")
    if actual.get("transformer.wpe.weight") == (config.vocab_size, config.n_embd) != \
            expected["transformer.wpe.weight"]:
        hints.append("wpe has one row per position: nn.Embedding(block_size, n_embd).")
    return hints


def _check_layout(module: nn.Module, config: GPTConfig, expected: dict) -> None:
    """The learner's state_dict has exactly the reference's names and shapes."""
    __tracebackhide__ = True
    name = type(module).__name__
    try:
        actual = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    except Exception as exc:  # e.g. __init__ never called super().__init__()
        _fail_from(exc, f"`{name}(config).state_dict()` raised {type(exc).__name__}: {exc}. "
                   "Does __init__ start with super().__init__()?")
    if actual == expected:
        return
    lines = [f"The modules of {name}({_describe_config(config)}) do not have GPT-2's names and "
             "shapes, so the reference's weights cannot be loaded into it."]
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    reshaped = [k for k in expected if k in actual and actual[k] != expected[k]]
    if missing:
        lines.append("Missing: " + ", ".join(f"{k} {expected[k]}" for k in missing) + ".")
    if extra:
        lines.append("Not expected: " + ", ".join(f"{k} {actual[k]}" for k in extra) + ".")
    for k in reshaped:
        lines.append(f"{k} has shape {actual[k]}, expected {expected[k]}.")
    lines += _layout_hints(expected, actual, config)
    if any(k.endswith(("pos", "mask", "positions")) for k in extra):
        lines.append("A buffer you registered is saved with the model: compute it in forward "
                     "instead, or register it with persistent=False.")
    fail(" ".join(lines))


def _build(cls: Any, config: GPTConfig, state: dict, *, seed: int = 0) -> nn.Module:
    """The learner's model for `config`, with the weights `state` loaded, in eval mode."""
    __tracebackhide__ = True
    module = _instantiate(cls, config, seed)
    _check_layout(module, config, {k: tuple(v.shape) for k, v in state.items()})
    try:
        module.load_state_dict(state)
    except Exception as exc:
        _fail_from(exc, f"Loading the reference's weights into {type(module).__name__} failed: "
                   f"{type(exc).__name__}: {exc}")
    return module.eval()  # dropout is 0 in every check; eval() also covers one hard-coded


def _forward_hint(exc: BaseException, config: GPTConfig) -> str:
    text = str(exc)
    if isinstance(exc, IndexError) and "out of range" in text:
        return (f"An embedding was indexed beyond its table: wte has vocab_size = "
                f"{config.vocab_size} rows, one per token id; wpe has block_size = "
                f"{config.block_size} rows, one per position. Look up the positions "
                "torch.arange(T), not the token ids.")
    if "must match the size" in text or "broadcast" in text:
        return ("Shapes do not match: wte(idx) is (B, T, C) and wpe(torch.arange(T)) is (T, C) "
                "for T = idx.shape[1], which broadcasts over the batch.")
    if "view size is not compatible" in text:
        return ("The targets are a slice of a longer batch (tokens[:, 1:]), not contiguous in "
                "memory, which .view cannot flatten: use .reshape(B * T).")
    if "Expected target size" in text or "Expected input batch_size" in text:
        return ("F.cross_entropy wants logits (N, V) and targets (N,): flatten both, "
                "logits.reshape(B * T, V) and targets.reshape(B * T).")
    return ""


def _as_slice(targets: torch.Tensor) -> torch.Tensor:
    """A copy of `targets` laid out as a slice tokens[:, 1:] of a (B, T + 1) batch, the way a
    caller cuts inputs and targets from one window: not contiguous, so .view(-1) refuses it."""
    window = torch.zeros(targets.shape[0], targets.shape[1] + 1, dtype=targets.dtype)
    window[:, 1:] = targets
    return window[:, 1:]


def _call_forward(model: nn.Module, config: GPTConfig, idx: torch.Tensor,
                  targets: torch.Tensor | None = None) -> tuple[Any, Any]:
    """forward(idx[, targets]) -> (logits, loss), or a failure naming the likely cause."""
    __tracebackhide__ = True
    args = (idx.clone(),) if targets is None else (idx.clone(), _as_slice(targets))
    try:
        result = call_learner(model, *args, name=f"{type(model).__name__}.forward")
    except CheckFailure as failure:
        hint = _forward_hint(failure.__cause__, config) if failure.__cause__ else ""
        if not hint:
            raise
        _fail_from(failure.__cause__, f"{failure}\n{hint}")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"forward should return a pair (logits, loss), but returned {describe(result)}. "
             "End it with `return logits, loss`, with loss = None when targets is None.")
    return result[0], result[1]


def _logits_array(logits: Any, shape: tuple[int, int, int]) -> np.ndarray:
    __tracebackhide__ = True
    B, T, V = shape
    if tuple(getattr(logits, "shape", ())) == (B * T, V):
        fail(f"The logits have shape {(B * T, V)}: return them as (B, T, V) = {(B, T, V)} and "
             "flatten copies only for the loss.")
    return as_float_array(logits, "The logits (first returned value)", shape)


# ----------------------------------------------------------------- forward and its mistakes

def _variant_logits(case: Case, *, positions: str | None = "arange", blocks: str = "all",
                    final_norm: bool = True) -> np.ndarray:
    """The reference's logits computed the way a mistake would compute them."""
    model = case.reference.transformer
    idx = case.idx
    B, T = idx.shape
    with torch.no_grad():
        x = model.wte(idx)
        if positions == "arange":
            x = x + model.wpe(torch.arange(T))
        elif positions == "batch":
            x = x + model.wpe(torch.arange(B))[:, None, :]
        elif positions == "tokens":
            x = x + model.wpe(idx)
        embedded = x
        if blocks == "all":
            for block in model.h:
                x = block(x)
        elif blocks == "last":
            x = model.h[-1](embedded)
        if final_norm:
            x = model.ln_f(x)
        return case.reference.lm_head(x).numpy()


def _logit_variants(case: Case):
    B, T = case.idx.shape
    yield {"positions": None}, ("the position embeddings are not added: add "
                                "wpe(torch.arange(T)) to the token embeddings")
    if B < case.config.block_size:
        yield {"positions": "batch"}, ("the position embeddings are indexed by the batch: every "
                                       "sequence gets positions torch.arange(T), 0 to T-1, the "
                                       "position of each token in its sequence")
    if int(case.idx.max()) < case.config.block_size:
        yield {"positions": "tokens"}, ("the position embeddings are looked up with the token ids: "
                                        "index wpe with the positions torch.arange(T)")
    yield {"final_norm": False}, ("the final LayerNorm is missing: apply self.transformer.ln_f "
                                  "to the last block's output, before lm_head")
    yield {"blocks": "none"}, ("the blocks are not applied: the loop must keep each block's "
                               "output, x = block(x)")
    if case.config.n_layer > 1:
        yield {"blocks": "last"}, ("only the last block is applied, to the embeddings: each block "
                                   "takes the previous block's output, x = block(x)")
    yield {"positions": None, "final_norm": False}, (
        "the position embeddings are not added and the final LayerNorm ln_f is missing")


def _compare_logits(case: Case, logits: np.ndarray) -> None:
    __tracebackhide__ = True
    bad = find_bad_values(logits)
    if bad is None and np.allclose(logits, case.expected_logits, rtol=RTOL, atol=ATOL):
        return
    for kwargs, description in _logit_variants(case):
        if np.allclose(logits, _variant_logits(case, **kwargs), rtol=RTOL, atol=ATOL):
            fail(f"Your logits match a GPT where {description}.")
    if bad:
        fail(f"The logits contain {bad} values. Look for a division by zero or a log of 0.")
    fail("The logits differ from the reference's on the same weights: "
         + worst_mismatch(logits, case.expected_logits)
         + ". Follow the forward table step by step: wte(idx) + wpe(torch.arange(T)), drop, "
         "x = block(x) for each block, ln_f, lm_head.")


def _check_too_long(model: nn.Module, config: GPTConfig, seed: int) -> None:
    """A sequence longer than block_size raises ValueError naming both lengths."""
    __tracebackhide__ = True
    T = config.block_size + 3
    idx = torch.randint(config.vocab_size, (2, T), generator=torch.Generator().manual_seed(seed))
    what = f"forward on a sequence of length {T} with block_size={config.block_size}"
    try:
        with torch.no_grad():
            model(idx)
    except ValueError as exc:
        message = str(exc)
        if str(T) not in message or str(config.block_size) not in message:
            _fail_from(exc, f"{what} raises ValueError({message!r}), which does not name both "
                       f"lengths. Say the sequence's length ({T}) and the block_size "
                       f"({config.block_size}), so the caller knows how much to crop.")
        return
    except NotImplementedError as exc:
        _fail_from(exc, "forward still raises NotImplementedError. Replace the "
                   "`raise NotImplementedError()` line with your implementation.")
    except Exception as exc:
        _fail_from(exc, f"{what} raised {type(exc).__name__}: {exc}. Check the length yourself "
                   "at the start of forward and raise a ValueError naming both lengths: an "
                   "error from inside the embedding names neither.")
    fail(f"{what} returned a result: it must raise a ValueError naming both lengths, since wpe "
         f"has no position vector beyond {config.block_size - 1} (and cropping silently would "
         "hide the caller's bug).")


# ----------------------------------------------------------------------------- loss

def _variant_losses(case: Case, logits64: torch.Tensor):
    B, T, V = case.shape
    targets = case.targets
    flat = logits64.reshape(B * T, V)
    if T > 1:
        yield (F.cross_entropy(logits64[:, :-1].reshape(-1, V), targets[:, 1:].reshape(-1)),
               "the targets are shifted again: targets[:, t] already is the token after "
               "idx[:, t]; score logits[:, t] against targets[:, t] at every position")
        yield (F.cross_entropy(logits64[:, 1:].reshape(-1, V), targets[:, :-1].reshape(-1)),
               "logits and targets are offset by one position: the targets are already shifted, "
               "so score logits[:, t] against targets[:, t]")
    yield (F.cross_entropy(flat, targets.reshape(-1), reduction="sum"),
           "the cross-entropy is summed over the positions: the loss is their mean, "
           "F.cross_entropy's default reduction")
    yield (F.cross_entropy(flat, targets.reshape(-1), reduction="sum") / B,
           "the cross-entropy is averaged over the batch only: take the mean over all B*T positions")
    yield (F.cross_entropy(torch.softmax(flat, dim=-1), targets.reshape(-1)),
           "F.cross_entropy was given probabilities: it applies the log-softmax itself, so "
           "pass it the logits")
    yield (F.cross_entropy(logits64.transpose(1, 2).reshape(B * T, V), targets.reshape(-1)),
           "logits and targets are flattened in different orders: reshape the logits (B, T, V) "
           "to (B*T, V) and the targets (B, T) to (B*T,), without a transpose")
    if B > 1 and T > 1:
        yield (F.cross_entropy(flat, targets.transpose(0, 1).reshape(-1)),
               "logits and targets are flattened in different orders: reshape the targets "
               "(B, T) to (B*T,) as they are, without a transpose")
    yield (F.cross_entropy(logits64[:, -1], targets[:, -1]),
           "only the last position is scored: the loss is the mean over all B*T positions")


def check_structure(cls, *, seed: int = 0, **overrides) -> None:
    """GPT-2's module names and shapes; lm_head.weight IS transformer.wte.weight; the model's
    parameters, counted once each, number as many as the reference's; self.config is stored."""
    __tracebackhide__ = True
    config = _config(**overrides)
    module = _instantiate(cls, config, seed)
    _check_layout(module, config, _layout(config))
    head = getattr(getattr(module, "lm_head", None), "weight", None)
    wte = getattr(getattr(getattr(module, "transformer", None), "wte", None), "weight", None)
    if head is not wte:
        same = isinstance(head, torch.Tensor) and isinstance(wte, torch.Tensor) and \
            head.shape == wte.shape and torch.equal(head, wte)
        fail("model.lm_head.weight is not model.transformer.wte.weight: the head is not tied to "
             "the embedding. "
             + ("Their values are equal, but they are two tensors that the first optimiser step "
                "would pull apart. " if same else "")
             + "Make them one Parameter: after creating both modules, assign "
               "self.lm_head.weight = self.transformer.wte.weight.")
    count = sum(p.numel() for p in module.parameters())
    expected = _numel(config)
    if count != expected:
        fail(f"{type(module).__name__}({_describe_config(config)}) has {count:,} parameters, the "
             f"reference {expected:,}. Is a layer created that forward never uses, or one "
             "parameter registered twice?")
    stored = getattr(module, "config", None)
    if stored is not config:
        fail("The model does not keep its config as self.config: generate reads the context "
             "length from self.config.block_size. Keep the line self.config = config.")
    blocks = f"{config.n_layer} block" + ("" if config.n_layer == 1 else "s")
    passed(f"{type(module).__name__}: GPT-2's names and shapes, {blocks}, the head "
           f"tied to wte (one ({config.vocab_size}, {config.n_embd}) matrix), {count:,} parameters")


def check_forward(cls, *, seed: int = 1, batch: int = 3, length: int = 10, **overrides) -> None:
    """Logits (B, T, V) equal the reference's on its weights; the loss is None without targets;
    a sequence longer than block_size raises ValueError naming both lengths."""
    __tracebackhide__ = True
    case = _make_case(seed, batch=batch, length=length, **overrides)
    model = _build(cls, case.config, case.state, seed=seed)
    with torch.no_grad():
        logits, loss = _call_forward(model, case.config, case.idx)
    if loss is not None:
        fail(f"forward(idx) without targets returned {describe(loss)} as the loss: return None "
             "when targets is None (there is nothing to score against).")
    _compare_logits(case, _logits_array(logits, case.shape))
    _check_too_long(model, case.config, seed)
    passed(f"logits {case.shape} match the reference's for {_describe_config(case.config)}; "
           f"a sequence of {case.config.block_size + 3} > block_size is refused with a ValueError")


def check_causal(cls, *, seed: int = 2, batch: int = 2, length: int = 10, **overrides) -> None:
    """Changing the token at position t changes no logits at positions before t (and does
    change those at t)."""
    __tracebackhide__ = True
    case = _make_case(seed, batch=batch, length=length, **overrides)
    model = _build(cls, case.config, case.state, seed=seed)
    with torch.no_grad():
        base = _logits_array(_call_forward(model, case.config, case.idx)[0], case.shape)
    gen = torch.Generator().manual_seed(seed)
    for t in sorted({1, length // 2, length - 1} - {0}):
        changed = case.idx.clone()
        changed[:, t] = (changed[:, t] + torch.randint(1, case.config.vocab_size, (batch,),
                                                       generator=gen)) % case.config.vocab_size
        with torch.no_grad():
            logits = _logits_array(_call_forward(model, case.config, changed)[0], case.shape)
        leak = float(np.abs(logits[:, :t] - base[:, :t]).max())
        if not leak <= CAUSAL_TOL:
            earliest = int(np.argmax(np.abs(logits[:, :t] - base[:, :t]).max(axis=(0, 2))))
            fail(f"Changing the token at position {t} changed the logits at position {earliest} "
                 f"(by up to {leak:.3g}): an earlier position sees the future. Everything outside "
                 "the blocks' attention must work on each position separately: no sums, means "
                 "or norms across the sequence axis.")
        if not float(np.abs(logits[:, t] - base[:, t]).max()) > CAUSAL_TOL:
            fail(f"Changing the token at position {t} did not change the logits at position {t}: "
                 "the model does not read its input tokens there. Add wte(idx) to the position "
                 "embeddings.")
    passed("causal: changing a token changes only the logits at its own and later positions")


def check_loss(cls, *, seed: int = 3, batch: int = 4, length: int = 9, **overrides) -> None:
    """With targets, the loss is the mean cross-entropy over all B*T positions of logits[:, t]
    against targets[:, t], a 0-dim tensor connected to the parameters."""
    __tracebackhide__ = True
    case = _make_case(seed, batch=batch, length=length, **overrides)
    model = _build(cls, case.config, case.state, seed=seed)
    logits, loss = _call_forward(model, case.config, case.idx, case.targets)
    logits = _logits_array(logits, case.shape)
    if not np.allclose(logits, case.expected_logits, rtol=RTOL, atol=ATOL):
        fail("With targets, the logits are not the reference's, so the loss cannot be either: "
             "the forward test says what to fix first. " + worst_mismatch(logits, case.expected_logits))
    if loss is None:
        fail("forward(idx, targets) returned None as the loss: with targets, return the mean "
             "cross-entropy.")
    if not isinstance(loss, torch.Tensor):
        fail(f"The loss is {describe(loss)}, not a tensor: return the tensor F.cross_entropy gives "
             "(loss.item() is for printing), so that loss.backward() can train the model.")
    if loss.dim() != 0:
        fail(f"The loss has shape {tuple(loss.shape)}: it should be one number, a 0-dim tensor, "
             "the mean over all B*T positions (F.cross_entropy's default reduction).")
    if loss.grad_fn is None:
        fail("The loss is not connected to the parameters: loss.backward() would train nothing. "
             "Compute it from the logits with torch operations (no .detach() or .item()).")
    value = float(loss.detach())
    if math.isclose(value, case.expected_loss, rel_tol=LOSS_TOL, abs_tol=LOSS_TOL):
        passed(f"loss {value:.5f}: the mean cross-entropy over {case.shape[0]}x{case.shape[1]} "
               "positions, as the reference's")
        return
    logits64 = torch.from_numpy(case.expected_logits)
    for wrong, description in _variant_losses(case, logits64):
        if math.isclose(value, float(wrong), rel_tol=LOSS_TOL, abs_tol=LOSS_TOL):
            fail(f"Your loss {value:.5f} matches a loss where {description}.")
    fail(f"The loss is {value:.6g}, the reference's {case.expected_loss:.6g} on the same logits. "
         "It is F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T)): the mean over "
         "all positions of -log softmax(logits[b, t])[targets[b, t]].")


# ------------------------------------------------------------------------ initialisation

def _expected_init(name: str, n_layer: int) -> tuple[str, float, str]:
    """(kind, value, why) for a parameter of a fresh GPT: kind "std" or "constant"."""
    if name.endswith("c_proj.weight"):
        return ("std", 0.02 / math.sqrt(2 * n_layer),
                f" = 0.02 / sqrt(2 * n_layer): the c_proj layers write into the residual stream")
    if ".ln_" in name:
        return ("constant", 1.0 if name.endswith("weight") else 0.0, " (LayerNorm, PyTorch's default)")
    if name.endswith("bias"):
        return "constant", 0.0, " (every Linear bias starts at 0)"
    return "std", 0.02, " (GPT-2's std 0.02)"


def _check_init(model: nn.Module, config: GPTConfig) -> None:
    __tracebackhide__ = True
    for name, p in model.named_parameters():
        kind, value, why = _expected_init(name, config.n_layer)
        p = p.detach().double()
        if kind == "constant":
            if not bool((p == value).all()):
                fail(f"{name} should start at {value:g}{why}, but its values lie between "
                     f"{float(p.min()):.3g} and {float(p.max()):.3g}. _init_weights sets every "
                     "nn.Linear bias to zero; leave the LayerNorms as PyTorch makes them.")
            continue
        std = float(p.std())
        if abs(std / value - 1) <= INIT_STD_RTOL:
            continue
        message = f"{name} has std {std:.4g}, expected {value:.4g}{why}."
        if name.endswith("c_proj.weight") and abs(std / 0.02 - 1) <= INIT_STD_RTOL:
            message += (" It is initialised like the other weights: after self.apply(...), "
                        "re-initialise the weights whose names end in c_proj.weight.")
        elif abs(std - 1) <= 0.1 or abs(std / (3 * p.shape[-1]) ** -0.5 - 1) <= 0.15:
            message += (" That is PyTorch's default initialisation: apply _init_weights to every "
                        "module with self.apply(self._init_weights), and let it cover nn.Linear "
                        "and nn.Embedding.")
        fail(message)


def check_initial_loss(cls, *, seed: int = 4, batch: int = 8, length: int = 64, **overrides) -> None:
    """A fresh GPT(config) (the course's default config unless overridden) has GPT-2's
    initialisation, and its loss on uniformly random targets is within 0.1 of ln V."""
    __tracebackhide__ = True
    config = GPTConfig(**overrides)
    model = _instantiate(cls, config, seed)
    _check_layout(model, config, _layout(config))
    length = min(length, config.block_size)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(config.vocab_size, (batch, length), generator=gen)
    targets = torch.randint(config.vocab_size, (batch, length), generator=gen)
    model.eval()
    with torch.no_grad():
        _, loss = _call_forward(model, config, idx, targets)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        fail(f"forward(idx, targets) returned {describe(loss)} as the loss: the loss test says "
             "what it should be.")
    value, ln_v = float(loss), math.log(config.vocab_size)
    if not abs(value - ln_v) <= INITIAL_LOSS_MARGIN:
        wte = model.transformer.wte.weight.detach().double()
        lines = [f"A fresh model's loss on uniformly random targets is {value:.3f}, but it should "
                 f"be within {INITIAL_LOSS_MARGIN} of ln V = ln {config.vocab_size} = {ln_v:.3f}, "
                 "the loss of a uniform prediction."]
        if value > ln_v and abs(float(wte.std()) / 0.02 - 1) <= INIT_STD_RTOL:
            lines.append("The embedding's std is GPT-2's 0.02, so the logits are small: the loss "
                         "itself is computed wrong (is it the mean over all B*T positions?). The "
                         "loss test says more.")
        elif value > ln_v:
            lines.append(f"Far above: the fresh model is confidently wrong, its logits are too "
                         f"large. transformer.wte.weight (also the head) has std "
                         f"{float(wte.std()):.3g}; GPT-2 initialises every nn.Linear and "
                         "nn.Embedding weight with std 0.02 (self.apply(self._init_weights)).")
        else:
            lines.append("Below ln V on random targets, which no model can predict: the loss "
                         "is computed on the wrong thing. The loss test says more.")
        fail(" ".join(lines))
    _check_init(model, config)
    passed(f"a fresh model: GPT-2's initialisation; first loss {value:.3f} on random targets, "
           f"ln V = {ln_v:.3f}")


# ----------------------------------------------------------------------------- sampling

class _ContextTooLong(Exception):
    """Raised by the checks' forward pass when generate passes more than block_size tokens."""

    def __init__(self, length: int, block_size: int):
        super().__init__(f"the model was given {length} tokens, more than block_size={block_size}")
        self.length = length


def _recording_reference(config: GPTConfig, state: dict) -> nn.Module:
    """The reference with `state`, whose forward notes the training mode of every call in
    `.calls` and refuses more than block_size tokens (noting how many in `.too_long`)."""

    class Recording(Reference):
        def forward(self, idx, targets=None):
            self.calls.append(bool(self.training))
            if idx.shape[1] > self.config.block_size:
                self.too_long = int(idx.shape[1])
                raise _ContextTooLong(idx.shape[1], self.config.block_size)
            return Reference.forward(self, idx, targets)

    with torch.random.fork_rng(devices=[]):
        model = Recording(config)
    model.load_state_dict(state)
    model.calls, model.too_long = [], None
    return model


def _sampler(cls: type, config: GPTConfig, state: dict) -> tuple[nn.Module, nn.Module]:
    """(model, recorder): the reference's model carrying the learner's methods (generate and
    any helper, except __init__, forward and _init_weights), for the learner's sampling on
    the reference's forward pass; and the reference itself, whose `.calls` that forward fills
    (the same object unless the grader runs the check)."""
    __tracebackhide__ = True
    cls = expect_class(cls, "GPT", base=nn.Module)
    recorder = _recording_reference(config, state)
    try:
        model = with_methods_of(recorder, cls, exclude=("forward", "_init_weights"), require=("generate",))
    except AttributeError:
        fail(f"`{cls.__name__}` has no generate method. Re-run the cell that defines the class.")
    return model, recorder


def _sample(model: nn.Module, idx: torch.Tensor, steps: int, temperature: float, top_k: int | None,
            seed: int, *, temperature_mode: str = "divide", top_k_mode: str = "right",
            crop: str = "last", position: int = -1, draw: str = "multinomial") -> torch.Tensor:
    """The sampling loop written out, with the switches that reproduce each known mistake."""
    gen = torch.Generator().manual_seed(seed)
    block_size, V = model.config.block_size, model.config.vocab_size
    with torch.no_grad():
        for _ in range(steps):
            context = idx[:, -block_size:] if crop == "last" else idx[:, :block_size]
            logits = Reference.forward(model, context)[0][:, position, :]
            if temperature_mode == "divide":
                logits = logits / temperature
            elif temperature_mode == "multiply":
                logits = logits * temperature
            if top_k is not None and top_k_mode != "ignore":
                k = min(top_k + (top_k_mode == "k+1"), V)
                kth = torch.topk(logits, k).values[:, -1:]
                logits = logits.masked_fill(logits < kth, 0.0 if top_k_mode == "zero" else float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            if draw == "argmax":
                token = probs.argmax(dim=-1, keepdim=True)
            else:
                token = torch.multinomial(probs, 1, generator=gen)
            idx = torch.cat([idx, token], dim=1)
    return idx


def _sampling_variants(temperature: float, top_k: int | None):
    if temperature != 1:
        yield {"temperature_mode": "ignore"}, (
            "the temperature has no effect: divide the logits by it before the softmax (dividing "
            "the probabilities after the softmax changes nothing, sampling renormalises them)")
        yield {"temperature_mode": "multiply"}, (
            "the logits are multiplied by the temperature: divide them by it")
    if top_k is not None:
        yield {"top_k_mode": "ignore"}, "top_k is ignored: keep only the top_k largest logits"
        yield {"top_k_mode": "k+1"}, (
            "top-k keeps k + 1 tokens: keep the top_k largest logits, those >= the k-th largest, "
            "torch.topk(logits, top_k).values[:, -1:]")
        yield {"top_k_mode": "zero"}, (
            "top-k masks the other logits with 0 instead of -inf: 0 is an ordinary score, often "
            "higher than the kept ones; -inf gives probability exactly 0")
    yield {"crop": "first"}, ("the context is cropped to the first block_size tokens: keep the "
                              "last ones, idx[:, -block_size:]")
    yield {"position": 0}, ("the next token is sampled from the first position's logits: use the "
                            "last position's, logits[:, -1, :]")
    yield {"draw": "argmax"}, ("every step takes the most likely token (argmax): draw from the "
                               "probabilities with torch.multinomial(probs, num_samples=1, "
                               "generator=generator)")


def _run_generate(model: nn.Module, recorder: nn.Module, prompt: torch.Tensor, steps: int,
                  temperature: float, top_k: int | None, seed: int) -> Any:
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(seed)
    recorder.too_long = None
    try:
        with torch.random.fork_rng(devices=[]):
            return call_learner(model.generate, prompt, steps, temperature=temperature, top_k=top_k,
                                generator=gen, name="GPT.generate")
    except CheckFailure as failure:
        if recorder.too_long is not None:
            _fail_from(failure.__cause__, (
                f"generate passed {recorder.too_long} tokens to the model, whose context is "
                f"block_size={model.config.block_size}: crop the sequence to its last block_size "
                "tokens before every forward pass, idx[:, -self.config.block_size:]."))
        raise


def _uses_global_generator(model: nn.Module, prompt: torch.Tensor, steps: int, temperature: float,
                           top_k: int | None, seed: int) -> bool:
    """Whether the tokens change with torch's global seed although the generator is the same."""
    runs = []
    for global_seed in (1, 2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            runs.append(model.generate(prompt.clone(), steps, temperature=temperature, top_k=top_k,
                                       generator=torch.Generator().manual_seed(seed)))
    return not torch.equal(runs[0], runs[1])


def _describe_setting(temperature: float, top_k: int | None) -> str:
    return f"temperature={temperature:g}, top_k={top_k}"


DEFAULT_SETTINGS = ((1.0, None), (0.7, 5), (1.8, None), (1.0, 1))


def check_generate(cls, *, seed: int = 5, batch: int = 2, prompt_length: int | None = None,
                   max_new_tokens: int = 6, settings=DEFAULT_SETTINGS, **overrides) -> None:
    """The learner's generate, on the reference's forward pass, gives exactly the reference's
    tokens for each (temperature, top_k) in `settings`, from identically seeded generators;
    the prompt grows past block_size, so the context must be cropped; the model samples in
    eval mode and is left in the mode it was in."""
    __tracebackhide__ = True
    config = _config(**overrides)
    state = _random_state(config, seed)
    reference = _reference(config, state, dtype=torch.float32)
    model, recorder = _sampler(cls, config, state)
    prompt_length = config.block_size - 2 if prompt_length is None else prompt_length
    prompt = torch.randint(config.vocab_size, (batch, prompt_length),
                           generator=torch.Generator().manual_seed(seed))
    total = prompt_length + max_new_tokens
    for i, (temperature, top_k) in enumerate(settings):
        setting = _describe_setting(temperature, top_k)
        draw_seed = 1000 * seed + i
        with torch.random.fork_rng(devices=[]):
            expected = reference.generate(prompt.clone(), max_new_tokens, temperature=temperature,
                                          top_k=top_k, generator=torch.Generator().manual_seed(draw_seed))
        model.train()
        recorder.calls.clear()
        given = prompt.clone()
        tokens = _run_generate(model, recorder, given, max_new_tokens, temperature, top_k, draw_seed)
        if not torch.equal(given, prompt):
            fail("generate changed the idx it was given: build the longer sequence with "
                 "torch.cat, which returns a new tensor, and return that.")
        if not isinstance(tokens, torch.Tensor):
            fail(f"generate returned {describe(tokens)}: return a tensor of token ids, "
                 f"(B, T + max_new_tokens).")
        if tuple(tokens.shape) == (batch, max_new_tokens) and max_new_tokens != total:
            fail(f"generate returned only the {max_new_tokens} new tokens, shape {tuple(tokens.shape)}: "
                 f"return the whole sequence, the prompt followed by them, ({batch}, {total}).")
        if tuple(tokens.shape) != (batch, total):
            fail(f"generate returned shape {tuple(tokens.shape)} for a prompt {(batch, prompt_length)} "
                 f"and max_new_tokens={max_new_tokens}: expected ({batch}, {total}), one new token "
                 "per row and step, appended with torch.cat along dim=1.")
        if tokens.dtype != torch.int64:
            fail(f"generate returned {tokens.dtype} tokens: token ids are int64, as "
                 "torch.multinomial returns them.")
        if not torch.equal(tokens[:, :prompt_length], prompt):
            fail("The first T columns of what generate returns are not the prompt: return "
                 "torch.cat([idx, new tokens], dim=1), step after step.")
        if not torch.equal(tokens, expected):
            _explain_tokens(model, reference, prompt, max_new_tokens, temperature, top_k,
                            draw_seed, tokens, expected, setting)
        if any(recorder.calls):
            fail("generate runs the model in training mode: call self.eval() before sampling, so "
                 "that dropout is off, and restore the mode at the end.")
        if not model.training:
            fail("generate left a model that was in training mode in eval mode: remember "
                 "self.training at the start and restore it with self.train(...) at the end.")
    model.eval()
    _run_generate(model, recorder, prompt.clone(), 1, 1.0, None, seed)
    if model.training:
        fail("generate switched a model that was in eval mode to training mode: restore the "
             "mode it found (self.train(was_training)), do not call self.train() unconditionally.")
    shown = "; ".join(_describe_setting(t, k) for t, k in settings)
    crop = f", cropped to block_size={config.block_size}" if total > config.block_size else ""
    passed(f"generate gives the reference's tokens for {shown}; prompt {prompt_length} + "
           f"{max_new_tokens} new tokens{crop}")


def _explain_tokens(model, reference, prompt, steps, temperature, top_k, seed, tokens, expected,
                    setting) -> None:
    __tracebackhide__ = True
    if _uses_global_generator(model, prompt, steps, temperature, top_k, seed):
        fail(f"With {setting}, your tokens change with torch's global seed although the generator "
             "is the same: the sampling draws from the global generator. Pass "
             "generator=generator to torch.multinomial.")
    for kwargs, description in _sampling_variants(temperature, top_k):
        wrong = _sample(reference, prompt.clone(), steps, temperature, top_k, seed, **kwargs)
        if torch.equal(tokens, wrong) and not torch.equal(wrong, expected):
            fail(f"With {setting}, your tokens match sampling where {description}.")
    T = prompt.shape[1]
    differ = (tokens != expected).nonzero()
    row, column = (int(v) for v in differ[0])
    fail(f"With {setting}, new token {column - T} of row {row} is {int(tokens[row, column])}, the "
         f"reference's {int(expected[row, column])} (from identically seeded generators). Each "
         "step: crop to the last block_size tokens, the last position's logits divided by the "
         "temperature, top-k with -inf, softmax, then exactly one torch.multinomial(probs, "
         "num_samples=1, generator=generator) for the whole batch.")


def check_generate_refuses_bad_arguments(cls, *, seed: int = 6, **overrides) -> None:
    """temperature <= 0 and top_k < 1 raise ValueError."""
    __tracebackhide__ = True
    config = _config(**overrides)
    model, _ = _sampler(cls, config, _random_state(config, seed))
    prompt = torch.randint(config.vocab_size, (2, 3), generator=torch.Generator().manual_seed(seed))
    for kwargs in ({"temperature": 0.0}, {"temperature": -1.0}, {"top_k": 0}):
        call = "generate(idx, 2, " + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"
        why = ("a temperature <= 0 divides by zero or turns the distribution upside down; greedy "
               "decoding is top_k=1" if "temperature" in kwargs else
               "top_k=0 would keep no token at all")
        try:
            with torch.random.fork_rng(devices=[]):
                model.generate(prompt.clone(), 2, generator=torch.Generator().manual_seed(seed), **kwargs)
        except ValueError:
            continue
        except NotImplementedError as exc:
            _fail_from(exc, "generate still raises NotImplementedError. Replace the "
                       "`raise NotImplementedError()` line with your implementation.")
        except Exception as exc:
            _fail_from(exc, f"{call} raised {type(exc).__name__}: {exc}. Refuse it yourself at the "
                       f"start of generate with a ValueError that says what is allowed: {why}.")
        fail(f"{call} returned tokens: refuse it with a ValueError at the start of generate, "
             f"saying what is allowed: {why}.")
    passed("generate refuses temperature <= 0 and top_k < 1 with a ValueError")


# ------------------------------------------------------------------------ parameter count

def _count_variants(config: GPTConfig, right: int):
    V, P, L, C, b = config.vocab_size, config.block_size, config.n_layer, config.n_embd, int(config.bias)
    norm = C + b * C
    if b:
        yield right - L * 9 * C - (2 * L + 1) * C, (
            "the biases are missing: with bias=True each block's Linear layers have 3C + C + 4C + C "
            "biases and every LayerNorm C")
        yield right - L * 9 * C, ("the Linear layers' biases are missing: 3C + C + 4C + C per "
                                  "block with bias=True")
    else:
        yield right + (2 * L + 1) * C, ("with bias=False the LayerNorms have no bias either: "
                                        "nn.LayerNorm(C, bias=False) has C parameters")
        yield right + L * 9 * C + (2 * L + 1) * C, ("biases are counted although bias=False")
    yield right + V * C, ("the tied head is counted twice: lm_head's weight is wte's, already "
                          "counted")
    yield right - P * C, "the position embedding wpe (block_size x C) is missing"
    yield right - norm, "the final LayerNorm ln_f is missing"
    yield right - 2 * L * norm, "the two LayerNorms of each block are missing"
    yield right - (2 * L + 1) * norm, "the LayerNorms are missing"
    yield right - L * (6 * C * C + 3 * b * C), ("the MLP is counted at width C: it widens to 4C, "
                                                "c_fc is (4C, C) and c_proj (C, 4C)")
    yield right - L * (2 * C * C + 2 * b * C), ("c_attn is counted as C x C: it maps C to 3C, "
                                                "the queries, keys and values at once")


DEFAULT_COUNT_CONFIGS = (
    {},                                                                       # the course's model
    dict(SMALL, bias=False),
    dict(vocab_size=50, block_size=64, n_layer=3, n_head=2, n_embd=32),
    dict(vocab_size=65, block_size=256, n_layer=1, n_head=4, n_embd=48, bias=False),
)


def check_count_parameters(fn, *, configs=DEFAULT_COUNT_CONFIGS) -> None:
    """count_parameters(config) returns, as an int and without torch, the number of
    parameters of GPT(config), for each config (GPTConfig's defaults overridden by each dict)."""
    __tracebackhide__ = True
    for overrides in configs:
        config = GPTConfig(**overrides)
        shown = _describe_config(config)
        expected = _numel(config)
        watch = watch_calls({"torch": None})  # every torch function, under its own name
        try:
            with watch:
                result = call_learner(fn, config, name="count_parameters")
        except CheckFailure:
            if not watch.used:
                raise
        if watch.used:
            fail(f"count_parameters({shown}) calls torch ({', '.join(watch.used[:3])}, ...): compute the "
                 "count from the config's numbers with Python arithmetic, without building a model "
                 "or tensors. The formula is the point, and it works for models too big to build.")
        if isinstance(result, bool) or not isinstance(result, numbers.Integral):
            fail(f"count_parameters({shown}) returned {result!r} ({type(result).__name__}): return "
                 "an int (integer arithmetic: // rather than /).")
        result = int(result)
        if result == expected:
            continue
        for wrong, description in _count_variants(config, expected):
            if wrong != expected and result == wrong:
                fail(f"count_parameters({shown}) returned {result:,}, but GPT(config) has "
                     f"{expected:,} parameters: {description}.")
        fail(f"count_parameters({shown}) returned {result:,}, but GPT(config) has {expected:,} "
             "parameters. Count wte, wpe, n_layer blocks (4 Linear layers, 2 LayerNorms) and ln_f; "
             "the tied head adds nothing.")
    passed(f"count_parameters equals the number of parameters of GPT(config) for {len(configs)} "
           "configurations")
