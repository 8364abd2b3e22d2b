"""Text generation with ONNX Runtime alone: no torch.

The export chapter (book/04-applications/07-export.md) writes the course GPT as ONNX files
with ``llmref.export``; this module runs them. It imports ``onnxruntime``, ``numpy``, the
NumPy-only sampling of Part IV (``llmref.sampling``) and the character tokenizer
(``llmref.corpus.CharTokenizer``), and never ``torch``: a deployed model needs neither
PyTorch nor the course's training code (tests/test_onnx_generate.py checks, in a fresh
process, that ``torch`` is never imported).

Two kinds of exported model are run:

* **without a cache**: one input ``input_ids`` (B, T) int64, one output ``logits``
  (B, T, V). Each new token costs a forward pass over the whole context.
* **with a cache**: inputs ``input_ids`` (B, T_new), ``past_keys`` and ``past_values``
  (n_layer, B, n_head, T_past, head_size) float32; outputs ``logits`` (B, T_new, V),
  ``present_keys`` and ``present_values`` (n_layer, B, n_head, T_past + T_new, head_size).
  The prompt runs once (prefill, with an empty past), then one token per step.

What an ONNX file does not say (the context length, the vocabulary) travels in a small
JSON *manifest* next to it (``model.onnx`` -> ``model.json``), written by
:func:`write_manifest`: the tokenizer's characters and the model's configuration.

Generation follows ``llmref.gpt.GPT.generate``: each step reads the last ``block_size``
tokens at most. With a cache, a sequence that reaches the context is recomputed from its
last ``block_size`` tokens (positions are absolute, so a cache cannot slide), which gives
exactly the tokens GPT.generate gives.

Providers: ``CUDAExecutionProvider`` when onnxruntime-gpu and a GPU are present,
``CPUExecutionProvider`` otherwise (:func:`pick_providers`); ``OnnxGPT.providers`` says which
actually run. On a GPU the cached step uses IO binding, so that the keys and values stay on
the device between steps instead of crossing PCIe every token.

Hand-written (not generated from a solution notebook); tests in tests/test_onnx_generate.py.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnxruntime as ort

from llmref.corpus import CharTokenizer

MANIFEST_FORMAT = "llmref-gpt-onnx/1"
PLAIN_INPUTS = ["input_ids"]
PLAIN_OUTPUTS = ["logits"]
CACHED_INPUTS = ["input_ids", "past_keys", "past_values"]
CACHED_OUTPUTS = ["logits", "present_keys", "present_values"]


# --------------------------------------------------------------------------- manifest

def manifest_path(onnx_path: str | Path) -> Path:
    """Where the manifest of an ONNX file lives: model.onnx -> model.json."""
    return Path(onnx_path).with_suffix(".json")


def write_manifest(onnx_path: str | Path, tokenizer: CharTokenizer, config: Any) -> Path:
    """Write the JSON manifest next to an exported model: the tokenizer's characters and the
    model's configuration (a GPTConfig or a dict with at least vocab_size and block_size)."""
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    for key in ("vocab_size", "block_size"):
        if key not in config:
            raise ValueError(f"the configuration has no {key!r}: pass the model's GPTConfig")
    if tokenizer.vocab_size != config["vocab_size"]:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} characters but the model's "
                         f"vocab_size is {config['vocab_size']}: they do not belong together")
    path = manifest_path(onnx_path)
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "chars": list(tokenizer.chars),
                                "config": config}, indent=1, ensure_ascii=False))
    return path


def read_manifest(onnx_path: str | Path) -> dict:
    path = manifest_path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it holds the tokenizer and the context length "
                                f"of {Path(onnx_path).name}; write it with "
                                "llmref.onnx_generate.write_manifest(onnx_path, tokenizer, config)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a manifest of this course (format "
                         f"{manifest.get('format')!r}, expected {MANIFEST_FORMAT!r})")
    return manifest


def load_tokenizer(onnx_path: str | Path) -> CharTokenizer:
    """The character tokenizer of an exported model, from its manifest (no torch, no corpus)."""
    return CharTokenizer(tuple(read_manifest(onnx_path)["chars"]))


# --------------------------------------------------------------------------- sessions

def pick_providers(device: str | None = None) -> list[str]:
    """CUDA first when onnxruntime-gpu sees a GPU (and device is not "cpu"), else the CPU.

    device "cuda" asks for the GPU and fails, saying why, if there is none.
    """
    available = ort.get_available_providers()
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be None, 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise RuntimeError("no CUDAExecutionProvider in this onnxruntime (available: "
                           f"{available}): install onnxruntime-gpu instead of onnxruntime "
                           "(never both) on a machine with an NVIDIA GPU, or use device='cpu'")
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def check_external_data(path: str | Path) -> list[Path]:
    """The external data files an ONNX model refers to; FileNotFoundError naming any missing.

    A model exported with external_data=True is two files, model.onnx (the graph) and
    model.onnx.data (the weights); the second must sit next to the first.
    """
    import onnx  # the graph's protobuf, read without the weights (onnx needs no torch)
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    files = []
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}["location"]
            if path.parent / location not in files:
                files.append(path.parent / location)
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: {path.name} keeps its weights in that "
                                    "external data file, which must sit next to it. Copy both "
                                    "files together, or export with external_data=False to get "
                                    "one self-contained file")
    return files


class OnnxGPT:
    """An exported GPT in an ONNX Runtime session, with or without a KV cache.

    path: the .onnx file, its manifest (model.json) and any external data next to it.
    device: None (GPU if available), "cpu" or "cuda". threads: intra-op threads (None:
    ONNX Runtime's default, one per core).
    """

    def __init__(self, path: str | Path, device: str | None = None, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: export the model first "
                                    "(llmref.export.export_gpt or export_gpt_with_cache)")
        check_external_data(path)
        manifest = read_manifest(path)
        self.path = path
        self.config = manifest["config"]
        self.block_size = int(self.config["block_size"])
        self.vocab_size = int(self.config["vocab_size"])
        options = ort.SessionOptions()
        options.log_severity_level = 3          # errors are raised as exceptions, not printed
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=pick_providers(device))
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs == PLAIN_INPUTS and outputs[:1] == PLAIN_OUTPUTS:
            self.cached = False
        elif inputs == CACHED_INPUTS and outputs == CACHED_OUTPUTS:
            self.cached = True
            shape = self.session.get_inputs()[1].shape   # [n_layer, batch, n_head, past, head_size]
            self.n_layer, self.n_head, self.head_size = shape[0], shape[2], shape[4]
        else:
            raise ValueError(f"{path.name} has inputs {inputs} and outputs {outputs}; expected "
                             f"{PLAIN_INPUTS} -> {PLAIN_OUTPUTS} (no cache) or {CACHED_INPUTS} -> "
                             f"{CACHED_OUTPUTS} (with a cache), as llmref.export writes them")
        self.providers = self.session.get_providers()
        self.on_gpu = self.providers[0] == "CUDAExecutionProvider"

    def __repr__(self) -> str:
        kind = "with a KV cache" if self.cached else "without a cache"
        return f"OnnxGPT({self.path.name}, {kind}, providers={self.providers})"

    # -- inputs
    def check_ids(self, ids: Any, past_length: int = 0) -> np.ndarray:
        """ids as a (B, T) int64 array, or a clear error: wrong dtype, shape, id or length."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers (int64), got dtype {ids.dtype}: pass the "
                            "tokenizer's ids, e.g. tokenizer.encode(text)[None, :]")
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"token ids must be a non-empty (batch, sequence) array, got shape "
                             f"{ids.shape}: add a batch axis with ids[None, :]")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(f"token id {bad} is outside the vocabulary (0 to {self.vocab_size - 1})")
        if past_length + ids.shape[1] > self.block_size:
            raise ValueError(f"{past_length} cached + {ids.shape[1]} new tokens = "
                             f"{past_length + ids.shape[1]} positions, more than the model's "
                             f"context of {self.block_size}: crop to the last {self.block_size} tokens")
        return ids.astype(np.int64, copy=False)

    # -- forward passes
    def logits(self, ids: Any) -> np.ndarray:
        """Logits (B, T, V) of a whole sequence, without a cache (any model)."""
        ids = self.check_ids(ids)
        if self.cached:
            return self.step(ids, self.empty_past(ids.shape[0]))[0]
        return self.session.run(["logits"], {"input_ids": ids})[0]

    def empty_past(self, batch: int):
        """The cache before the first token: keys and values with T_past = 0."""
        if not self.cached:
            raise ValueError(f"{self.path.name} was exported without a cache")
        zeros = np.zeros((self.n_layer, batch, self.n_head, 0, self.head_size), np.float32)
        if self.on_gpu:
            return tuple(ort.OrtValue.ortvalue_from_numpy(zeros, "cuda", 0) for _ in range(2))
        return zeros, zeros

    @staticmethod
    def past_length(past) -> int:
        shape = past[0].shape() if callable(getattr(past[0], "shape", None)) else past[0].shape
        return int(shape[3])

    def step(self, ids: Any, past):
        """One cached forward pass: (logits (B, T_new, V) on the CPU, present keys/values).

        On a GPU the keys and values stay there as OrtValues (IO binding); only the logits,
        which sampling needs, come back to the host.
        """
        ids = self.check_ids(ids, self.past_length(past))
        if not self.on_gpu:
            logits, keys, values = self.session.run(
                CACHED_OUTPUTS, {"input_ids": ids, "past_keys": past[0], "past_values": past[1]})
            return logits, (keys, values)
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_ortvalue_input("past_keys", past[0])
        binding.bind_ortvalue_input("past_values", past[1])
        binding.bind_output("logits", "cpu")
        binding.bind_output("present_keys", "cuda", 0)
        binding.bind_output("present_values", "cuda", 0)
        self.session.run_with_iobinding(binding)
        logits, keys, values = binding.get_outputs()
        return logits.numpy(), (keys, values)


def load(path: str | Path, device: str | None = None,
         threads: int | None = None) -> tuple[OnnxGPT, CharTokenizer]:
    """An exported model and its tokenizer, read from the model's manifest."""
    model = OnnxGPT(path, device=device, threads=threads)
    return model, load_tokenizer(path)


# --------------------------------------------------------------------------- generation

def _choose(last: np.ndarray, greedy: bool, rng, temperature, top_k, top_p) -> np.ndarray:
    from llmref import sampling  # NumPy only (Part IV, exercise 15)

    if greedy:
        return np.asarray(sampling.greedy(last), dtype=np.int64).reshape(-1)
    return np.asarray(sampling.sample(last, rng, temperature=temperature, top_k=top_k, top_p=top_p),
                      dtype=np.int64).reshape(-1)


def stream(model: OnnxGPT, ids: Any, max_new_tokens: int, *, greedy: bool = False,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Yield the new tokens (B,) one step at a time, as GPT.generate would choose them.

    greedy=True takes the most likely token (llmref.sampling.greedy); otherwise
    llmref.sampling.sample draws with rng (a np.random.Generator; seeded for reproducible
    output), temperature, top_k and top_p.
    """
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not greedy and rng is None:
        raise ValueError("sampling needs rng=np.random.default_rng(seed), or pass greedy=True")
    ids = np.asarray(ids)
    if ids.ndim == 2 and ids.shape[1] > model.block_size:
        ids = ids[:, -model.block_size:]          # as GPT.generate: the last block_size tokens
    ids = model.check_ids(ids)
    past = None
    for step in range(max_new_tokens):
        context = ids[:, -model.block_size:]
        if not model.cached:
            last = model.logits(context)[:, -1, :]
        else:
            if past is None or OnnxGPT.past_length(past) + 1 > model.block_size:
                logits, past = model.step(context, model.empty_past(ids.shape[0]))  # (re)fill
            else:
                logits, past = model.step(ids[:, -1:], past)
            last = logits[:, -1, :]
        token = _choose(last, greedy, rng, temperature, top_k, top_p)
        ids = np.concatenate([ids, token[:, None]], axis=1)
        yield token


def generate(model: OnnxGPT, ids: Any, max_new_tokens: int, **options) -> np.ndarray:
    """ids (B, T) followed by max_new_tokens new tokens: (B, T + max_new_tokens) int64.

    options as for :func:`stream` (greedy, temperature, top_k, top_p, rng).
    """
    ids = np.asarray(ids)
    new = list(stream(model, ids, max_new_tokens, **options))  # checks ids first
    new = np.stack(new, axis=1) if new else np.zeros((ids.shape[0], 0), np.int64)
    return np.concatenate([ids.astype(np.int64), new], axis=1)


def complete(model: OnnxGPT, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int,
             **options) -> str:
    """The continuation (text only, without the prompt) of one prompt."""
    if not prompt:
        raise ValueError("the prompt is empty: give the model at least one character to continue")
    ids = tokenizer.encode(prompt)[None, :]
    return "".join(tokenizer.decode(t) for t in stream(model, ids, max_new_tokens, **options))


# --------------------------------------------------------------------------- int8

def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic int8 quantization of an exported model: weights stored as int8, activations
    quantized on the fly. Returns Path(target); its manifest is copied along.

    ONNX Runtime's basic graph optimisation runs first. The tied head reads the embedding's
    (V, C) matrix through a Transpose node; plain quantize_dynamic only quantizes a MatMul
    whose weight is a stored tensor, and would leave that, the largest MatMul of a small
    vocabulary model's decode step, in float32. Constant folding turns the Transpose of the
    stored matrix into a stored (C, V) matrix, which is then quantized like the others.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(source), Path(target)
    check_external_data(source)
    folded = source.with_name(f"{source.stem}.folded.onnx")   # next to its external data
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    try:
        quantize_dynamic(folded, target, op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8)
    finally:
        folded.unlink(missing_ok=True)
    if manifest_path(source).is_file():
        manifest_path(target).write_text(manifest_path(source).read_text())
    return target


def model_bytes(path: str | Path) -> int:
    """Bytes on disk of an ONNX model and the external data files it refers to."""
    path = Path(path)
    return path.stat().st_size + sum(f.stat().st_size for f in check_external_data(path))
