"""Checks for exercise 20_export: the GPT exported to ONNX, with and without a KV cache.

Each check builds :class:`llmref.gpt.GPT` for a small config with seeded random weights
(embeddings of std 0.5 and layer weights of order 1, as the 11_gpt checks draw them, so that
logits are of order 1 and a wrong graph shows), calls the learner's export function on it,
validates the file with ``onnx.checker``, runs it with ONNX Runtime (the independent
implementation here: its own kernels, not PyTorch's) on the CPU, and compares with the
reference run in float64 on the same weights: the whole-sequence forward pass of
``llmref.gpt.GPT`` for logits, and ``llmref.kvcache.forward_with_cache`` for the cache.

An export costs a few seconds (torch.export traces the model, then the graph is translated
and optimised), so each check exports once and then runs many shapes on the one file.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from llmref.gpt import GPT as Reference
from llmref.gpt import GPTConfig
from llmref.kvcache import forward_with_cache

from ._core import call_learner, fail, fail_from, passed, scratch_folder, torch_isolated, worst_mismatch
from .gpt import _random_state

# Every size distinct (V=23, block_size=12, C=16, 2 heads of 8, 2 layers; batches 1 and 3),
# so that a tensor stacked along the wrong axis cannot have the right shape by luck.
SMALL = dict(vocab_size=23, block_size=12, n_layer=2, n_head=2, n_embd=16)

# ONNX Runtime runs float32 with its own kernels (fused MatMul+Add, its own Softmax and
# LayerNorm); the reference runs float64. On these models, logits of order 1-10, the two
# differ by at most 2e-6 (measured, ten seeds and the configs below): 1e-4, the tolerance the
# course states for an export, leaves a margin of 50. Every mistake named below moves some
# logit by more than 1e-3 or stops the run.
ATOL = 1e-4
RTOL = 1e-4

INPUTS = ["input_ids"]
OUTPUTS = ["logits"]
CACHED_INPUTS = ["input_ids", "past_keys", "past_values"]
CACHED_OUTPUTS = ["logits", "present_keys", "present_values"]

SPECIALISED = ("torch.export replaces a dimension whose example size is 0 or 1 by a constant "
               "(it cannot tell a size-1 axis from a broadcast one), even when you declared it "
               "dynamic: use example sizes of at least 2 on every dynamic axis")


def _config(**overrides) -> GPTConfig:
    return GPTConfig(**{**SMALL, **overrides})


def _model(config: GPTConfig, seed: int, dtype=torch.float32) -> Reference:
    with torch.random.fork_rng(devices=[]):
        model = Reference(config).to(dtype)
    model.load_state_dict(_random_state(config, seed))
    return model.eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's warnings and log lines (deprecations inside torch, optional libraries it
    does not find) silenced while the learner's export runs: nbgrader scores a test cell that
    writes anything to stderr as failed, and they say nothing about the learner's code."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4          # failures come back as exceptions; no log spam
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(export_fn: Callable, model: Reference, folder: Path, name: str):
    """Call the learner's export into a fresh folder; validate the file; open a session."""
    __tracebackhide__ = True
    import onnx

    path = folder / "model.onnx"
    fn_name = getattr(export_fn, "__name__", name)
    with _quiet_exporter():
        call_learner(export_fn, model, path, name=fn_name)
    if not path.is_file():
        fail(f"`{fn_name}(model, path)` wrote no file at `path`. Pass `path` to torch.onnx.export "
             "as its `f` argument.")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        fail_from(exc, f"onnx.checker rejects the file `{fn_name}` wrote: {exc}")
    try:
        return _session(path)
    except Exception as exc:
        fail_from(exc, f"ONNX Runtime cannot load the file `{fn_name}` wrote: {exc}")


def _names(session) -> tuple[list[str], list[str]]:
    return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]


def _static_axes(node, axes: dict[int, str]) -> list[str]:
    """The axes (by name) that the exported graph fixed to a number."""
    return [f"{name} (fixed to {node.shape[axis]})" for axis, name in axes.items()
            if isinstance(node.shape[axis], int)]


def _reference_logits(config: GPTConfig, seed: int, idx: np.ndarray) -> np.ndarray:
    model = _model(config, seed, torch.float64)
    with torch.no_grad():
        return model(torch.from_numpy(idx))[0].numpy()


def _tokens(config: GPTConfig, seed: int, batch: int, length: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed + 7919)
    return torch.randint(config.vocab_size, (batch, length), generator=gen).numpy()


# ------------------------------------------------------------------ export_gpt

def check_export_gpt(export_gpt: Callable, seed: int = 0, batches=(1, 3), lengths=None,
                     **overrides) -> None:
    """ONNX Runtime's logits equal PyTorch's at several batch sizes and sequence lengths."""
    __tracebackhide__ = True
    config = _config(**overrides)
    lengths = lengths or (1, config.block_size // 2 - 1, config.block_size)
    with torch_isolated(seed), scratch_folder() as folder:
        model = _model(config, seed)
        session = _export(export_gpt, model, Path(folder), "export_gpt")
        inputs, outputs = _names(session)
        if inputs != INPUTS or outputs[:1] != OUTPUTS:
            fail(f"The exported model's inputs are named {inputs} and its outputs {outputs}; "
                 f"they should be named {INPUTS} and {OUTPUTS}: a program that runs the file finds "
                 "them by name. Pass input_names=['input_ids'], output_names=['logits'].")
        static = _static_axes(session.get_inputs()[0], {0: "batch", 1: "sequence"})
        if static:
            fail(f"The exported model has static shapes: its input's {' and '.join(static)} cannot "
                 "change, so it refuses any other batch size or sequence length. Declare both "
                 "axes dynamic: dynamic_shapes={'idx': {0: 'batch', 1: 'sequence'}}.")
        for batch in batches:
            for length in lengths:
                idx = _tokens(config, seed + length, batch, length)
                try:
                    got = session.run(["logits"], {"input_ids": idx})[0]
                except Exception as exc:
                    fail_from(exc, f"ONNX Runtime fails on the exported model with a batch of "
                              f"{batch} sequences of length {length}: {str(exc)[:300]}. The graph "
                              f"was specialised to its example's shape: {SPECIALISED}.")
                expected = _reference_logits(config, seed, idx)
                if got.shape != expected.shape:
                    fail(f"At batch {batch}, length {length} the exported logits have shape "
                         f"{got.shape}, expected {expected.shape}. {SPECIALISED}.")
                if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
                    fail(f"ONNX Runtime's logits differ from PyTorch's at batch {batch}, length "
                         f"{length}: {worst_mismatch(got.astype(np.float64), expected)}. If other "
                         f"shapes matched, the graph was specialised to the example's: "
                         f"{SPECIALISED}.")
    passed(f"export_gpt: ONNX Runtime's logits equal PyTorch's (to {ATOL:g}) at batch sizes "
           f"{' and '.join(map(str, batches))} and lengths {', '.join(map(str, lengths))}")


def check_export_refuses_training_mode(export_gpt: Callable, seed: int = 0, **overrides) -> None:
    """A model in training mode is refused with a ValueError that says so."""
    __tracebackhide__ = True
    config = _config(dropout=0.1, **overrides)
    with torch_isolated(seed), scratch_folder() as folder:
        model = _model(config, seed).train()
        try:
            with _quiet_exporter():
                export_gpt(model, Path(folder) / "model.onnx")
        except NotImplementedError:
            fail("`export_gpt` still raises NotImplementedError. Replace the "
                 "`raise NotImplementedError()` line with your implementation.")
        except ValueError as exc:
            words = str(exc).lower()
            if "train" not in words and "eval" not in words:
                fail(f"`export_gpt` refused a model in training mode with ValueError({str(exc)!r}), "
                     "which does not say why: name the problem (training mode) and the fix "
                     "(call model.eval() first).")
        except Exception as exc:
            fail_from(exc, f"Exporting a model in training mode should raise a ValueError that "
                      f"says so, but `export_gpt` raised {type(exc).__name__}: {exc}")
        else:
            fail("`export_gpt` exported a model in training mode (model.training is True): its "
                 "dropout would be traced into the graph, and every run of the exported model "
                 "would drop a random tenth of the activations. Refuse it: raise a ValueError "
                 "saying the model is in training mode and that model.eval() fixes it "
                 "(switching it to eval mode behind the caller's back hides their mistake).")
        if not model.training:
            fail("`export_gpt` switched the caller's model to eval mode: refuse a model in "
                 "training mode with a ValueError instead of changing it.")
    passed("export_gpt refuses a model in training mode, saying why")


# ------------------------------------------------------------------ export_gpt_with_cache

def _reference_steps(config: GPTConfig, seed: int, idx: np.ndarray, chunks: list[int]):
    """forward_with_cache in float64, chunk by chunk: [(logits, keys, values)] per chunk."""
    model = _model(config, seed, torch.float64)
    out, past, start = [], None, 0
    with torch.no_grad():
        for n in chunks:
            logits, past = forward_with_cache(model, torch.from_numpy(idx[:, start:start + n]), past)
            out.append((logits.numpy(), torch.stack([k for k, _ in past]).numpy(),
                        torch.stack([v for _, v in past]).numpy()))
            start += n
    return out


def _describe_chunks(chunks: list[int], step: int) -> str:
    if step == 0:
        return f"the prompt ({chunks[0]} tokens, an empty past)"
    return f"step {step + 1} ({chunks[step]} new token{'s' if chunks[step] > 1 else ''} after {sum(chunks[:step])} cached)"


def check_export_with_cache(export_gpt_with_cache: Callable, seed: int = 0, batches=(1, 3),
                            **overrides) -> None:
    """The cached model, run step by step with ONNX Runtime, equals forward_with_cache."""
    __tracebackhide__ = True
    config = _config(**overrides)
    L, H, hs = config.n_layer, config.n_head, config.n_embd // config.n_head
    chunks = [5, 1, 1, 1, config.block_size - 8]          # a prefill, single tokens, a chunk
    with torch_isolated(seed), scratch_folder() as folder:
        model = _model(config, seed)
        session = _export(export_gpt_with_cache, model, Path(folder), "export_gpt_with_cache")
        inputs, outputs = _names(session)
        if inputs == CACHED_INPUTS and outputs == ["logits"]:
            fail("The exported model returns the logits alone: the cache outputs present_keys and "
                 "present_values were dropped, so the next step has no past to read. Return all "
                 "three from the wrapper's forward and name them in output_names.")
        if inputs != CACHED_INPUTS or outputs != CACHED_OUTPUTS:
            fail(f"The exported model's inputs are named {inputs} and its outputs {outputs}; they "
                 f"should be {CACHED_INPUTS} and {CACHED_OUTPUTS}, in that order (input_names and "
                 "output_names name the forward's arguments and results by position).")
        static = _static_axes(session.get_inputs()[1], {1: "batch", 3: "past"})
        static += _static_axes(session.get_inputs()[0], {0: "batch", 1: "sequence"})
        if static:
            fail(f"The exported model has static axes: {', '.join(static)}. A cache grows by one "
                 "position a step, so past_keys and past_values need a dynamic past axis (3) and "
                 "batch axis (1), and input_ids dynamic batch and sequence axes.")
        for batch in batches:
            idx = _tokens(config, seed + batch, batch, config.block_size)
            expected = _reference_steps(config, seed, idx, chunks)
            full = _reference_logits(config, seed, idx)
            keys = values = np.zeros((L, batch, H, 0, hs), np.float32)
            start = 0
            for step, n in enumerate(chunks):
                where = f"batch {batch}, {_describe_chunks(chunks, step)}"
                try:
                    logits, keys, values = session.run(None, {"input_ids": idx[:, start:start + n],
                                                              "past_keys": keys,
                                                              "past_values": values})
                except Exception as exc:
                    fail_from(exc, f"ONNX Runtime fails on the cached model at {where}: "
                              f"{str(exc)[:300]}. If an example had size 1 on an axis (one "
                              f"new token, say): {SPECIALISED}.")
                want_logits, want_keys, want_values = expected[step]
                want_shape = (L, batch, H, start + n, hs)
                if keys.shape != want_shape or values.shape != want_shape:
                    hint = ""
                    if sorted(keys.shape) == sorted(want_shape):
                        hint = (" The axes are in another order: stack the layers' keys with "
                                "torch.stack(..., dim=0), so that axis 0 is the layer and each "
                                "layer's (B, n_head, T, head_size) follows.")
                    fail(f"At {where} present_keys has shape {keys.shape} and present_values "
                         f"{values.shape}; expected (n_layer, B, n_head, T_past + T_new, "
                         f"head_size) = {want_shape}.{hint}")
                if (np.allclose(keys, want_values, rtol=RTOL, atol=ATOL)
                        and np.allclose(values, want_keys, rtol=RTOL, atol=ATOL)):
                    fail(f"At {where} present_keys holds the values and present_values the keys: "
                         "the output names are matched to the forward's results by position, so "
                         "list them in the order forward returns them.")
                if not np.allclose(logits, want_logits, rtol=RTOL, atol=ATOL):
                    later = (f" The prompt's logits were right, so the graph was specialised to "
                             f"its example past: {SPECIALISED}." if step else "")
                    fail(f"ONNX Runtime's logits differ from forward_with_cache's at {where}: "
                         f"{worst_mismatch(logits.astype(np.float64), want_logits)}.{later}")
                for got, want, what in ((keys, want_keys, "present_keys"),
                                        (values, want_values, "present_values")):
                    if not np.allclose(got, want, rtol=RTOL, atol=ATOL):
                        fail(f"{what} differs from forward_with_cache's cache at {where}: "
                             f"{worst_mismatch(got.astype(np.float64), want)}. Stack each layer's "
                             "(k, v) of `present` in layer order.")
                if not np.allclose(logits, full[:, start:start + n], rtol=RTOL, atol=ATOL):
                    fail(f"At {where} the cached logits differ from the whole sequence's forward "
                         "pass: pass past_keys[i] and past_values[i] to layer i.")
                start += n
    passed(f"export_gpt_with_cache: step by step, ONNX Runtime's logits and cache equal "
           f"forward_with_cache's (to {ATOL:g}), batch sizes {' and '.join(map(str, batches))}, "
           f"past lengths 0 to {config.block_size - 1}")
