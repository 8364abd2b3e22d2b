"""Decode speed of the course GPT: PyTorch eager and ONNX Runtime, with and without a KV cache,
and ONNX Runtime int8; plus the int8 model's size and held-out loss, and the batch-1 bound.

    .venv/bin/python benchmarks/decode.py       # a few minutes on 2 cores; one run

writes benchmarks/results/decode.json, read by the export chapter
(book/04-applications/07-export.md) and checked by tests/test_benchmark_decode.py.

Every variant decodes greedily, 2 threads (torch.set_num_threads(2), ONNX Runtime's
intra-op threads 2), batch 1 and 8, prompts of 32 and 256 characters. The course GPT's
context is 128 characters, so the prompt-256 rows use a second GPT of the course's shape
(4 layers, 4 heads, width 192, the same 103 characters) with a context of 512 and random
weights: speed depends on the shapes, not on what the weights learned. "ms per new token" is
the decode phase alone: the median time of one decode step (the prompt's prefill excluded),
over up to three runs of 16 steps; the median, since the machine is shared and a step that
waited for another process measures that process, not the code.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmref import course_model, onnx_generate  # noqa: E402
from llmref.export import export_gpt, export_gpt_with_cache  # noqa: E402
from llmref.gpt import GPT, GPTConfig  # noqa: E402
from llmref.kvcache import forward_with_cache  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "decode.json"
THREADS = 2
BATCHES = (1, 8)
PROMPTS = (32, 256)
NEW_TOKENS = 16                 # decode steps timed per measurement
REPEATS = 3
REPEAT_BUDGET_S = 6.0           # stop repeating a row once it has taken this long
VARIANTS = ["pytorch eager, no cache", "pytorch eager, KV cache", "onnxruntime, no cache",
            "onnxruntime, KV cache", "onnxruntime int8, KV cache"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_times(steps) -> list[float]:
    """Seconds between the decode steps of an iterator that yields once per new token; the
    first yield (the prompt's prefill and the first token) is not counted."""
    times, last = [], None
    for _ in steps:
        now = time.perf_counter()
        if last is not None:
            times.append(now - last)
        last = now
    return times


def ms_per_token(steps_of, prompt: np.ndarray) -> float:
    """Median decode-step time in ms over up to REPEATS runs of NEW_TOKENS + 1 tokens.

    The median, not the mean: on a shared machine a step that waited for a neighbour's
    process measures the neighbour."""
    list(steps_of(prompt, 2))                             # warm-up: allocations, first calls
    times, spent = [], 0.0
    for _ in range(REPEATS):
        start = time.perf_counter()
        times += step_times(steps_of(prompt, NEW_TOKENS + 1))
        spent += time.perf_counter() - start
        if spent > REPEAT_BUDGET_S:
            break
    return 1000 * float(np.median(times))


def memory_bandwidth_gb_s() -> float:
    """Copy bandwidth (read + write) of a 256 MB array, best of 5: an upper bound's scale."""
    a = np.ones(32 * 2**20, np.float64)
    b = np.empty_like(a)
    best = min(timed(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best / 1e9


def held_out_loss(model: onnx_generate.OnnxGPT, tokens: np.ndarray, block_size: int) -> float:
    """Mean cross-entropy over the non-overlapping windows of llmref.pretrain.evaluate."""
    n = (len(tokens) - 1) // block_size
    x = tokens[: n * block_size].reshape(n, block_size)
    y = tokens[1: n * block_size + 1].reshape(n, block_size)
    total = 0.0
    for i in range(0, n, 32):
        logits = model.logits(x[i:i + 32]).astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total += -np.take_along_axis(logp, y[i:i + 32, :, None], -1).sum()
    return total / (n * block_size)


def main() -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.set_num_threads(THREADS)
    started = time.time()
    load_before = os.getloadavg()
    loaded = course_model.load()
    course = loaded.model
    c = course.config
    torch.manual_seed(0)
    long_config = GPTConfig(**{**c.__dict__, "block_size": 512})
    long = GPT(long_config).eval()
    folder = Path(tempfile.mkdtemp(prefix="decode-bench-"))

    sessions = {}
    for name, model in (("course", course), ("long", long)):
        for cached, export in ((False, export_gpt), (True, export_gpt_with_cache)):
            path = folder / f"{name}{'_cached' if cached else ''}.onnx"
            export(model, path)
            onnx_generate.write_manifest(path, loaded.tokenizer, model.config)
            sessions[name, cached] = path
        int8 = onnx_generate.quantize_int8(sessions[name, True], folder / f"{name}_int8.onnx")
        sessions[name, "int8"] = int8
    ort_models = {key: onnx_generate.OnnxGPT(path, threads=THREADS) for key, path in sessions.items()}

    # ---- int8: size and held-out loss on the Part III split (course model)
    import onnx
    held = loaded.data.held_out
    fp32_bytes = onnx_generate.model_bytes(sessions["course", True])
    int8_bytes = onnx_generate.model_bytes(sessions["course", "int8"])
    graph = onnx.load(str(sessions["course", "int8"])).graph
    int8_info = {
        "model": "the course GPT, exported with a KV cache",
        "fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes,
        "size_ratio": fp32_bytes / int8_bytes,
        "matmuls_quantized": sum(n.op_type == "MatMulInteger" for n in graph.node),
        "matmuls_float": sum(n.op_type == "MatMul" for n in graph.node),
        "linear_layers": 4 * c.n_layer + 1,            # 4 per block and the tied head
        "held_out_nats_per_char_fp32": held_out_loss(ort_models["course", True], held, c.block_size),
        "held_out_nats_per_char_int8": held_out_loss(ort_models["course", "int8"], held, c.block_size),
        "held_out_nats_per_char_recorded": loaded.held_out_nats_per_char,
    }
    int8_info["loss_change"] = (int8_info["held_out_nats_per_char_int8"]
                                - int8_info["held_out_nats_per_char_fp32"])
    print(json.dumps(int8_info, indent=1))

    # ---- speed
    def runners(name: str, model: GPT) -> dict:
        """Per variant, a function (prompt, n) -> an iterator yielding once per new token,
        decoding greedily as GPT.generate(top_k=1) and generate_with_cache(top_k=1) do."""
        block = model.config.block_size

        @torch.no_grad()
        def torch_plain(p, n):
            idx = torch.from_numpy(p)
            for _ in range(n):
                logits = model(idx[:, -block:])[0][:, -1, :]
                idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
                yield

        @torch.no_grad()
        def torch_cached(p, n):
            logits, past = forward_with_cache(model, torch.from_numpy(p))
            for _ in range(n):
                token = logits[:, -1, :].argmax(-1, keepdim=True)
                yield
                logits, past = forward_with_cache(model, token, past)

        def ort(key):
            return lambda p, n: onnx_generate.stream(ort_models[key], p, n, greedy=True)
        return dict(zip(VARIANTS, [torch_plain, torch_cached, ort((name, False)), ort((name, True)),
                                   ort((name, "int8"))]))

    rng = np.random.default_rng(0)
    rows = []
    for prompt_len in PROMPTS:
        name, model = ("course", course) if prompt_len + NEW_TOKENS + 1 <= c.block_size else ("long", long)
        run = runners(name, model)
        for batch in BATCHES:
            start = rng.integers(0, len(held) - prompt_len, size=batch)
            prompt = np.stack([held[s:s + prompt_len] for s in start]).astype(np.int64)
            for variant in VARIANTS:
                ms = ms_per_token(run[variant], prompt)
                row = {"variant": variant, "batch": batch, "prompt": prompt_len,
                       "model": "course GPT (context 128)" if name == "course" else
                                "random GPT of the course's shape, context 512",
                       "ms_per_token": ms, "tokens_per_s": 1000 * batch / ms}
                rows.append(row)
                print(f"{variant:28s} batch {batch} prompt {prompt_len:3d}: {ms:8.3f} ms/token "
                      f"{row['tokens_per_s']:9.0f} tokens/s", flush=True)

    def at(variant, batch=1, prompt=32):
        return next(r for r in rows if r["variant"] == variant and r["batch"] == batch
                    and r["prompt"] == prompt)["tokens_per_s"]

    speedups = {
        "ort_cache_over_eager_no_cache": at("onnxruntime, KV cache") / at("pytorch eager, no cache"),
        "ort_cache_over_eager_cache": at("onnxruntime, KV cache") / at("pytorch eager, KV cache"),
        "ort_int8_cache_over_ort_cache": at("onnxruntime int8, KV cache") / at("onnxruntime, KV cache"),
    }

    # ---- the batch-1 bound: every weight read once per token
    params = sum(p.numel() for p in course.parameters())
    bandwidth = memory_bandwidth_gb_s()
    kv_bytes = 2 * c.n_layer * (32 + NEW_TOKENS) * c.n_embd * 4   # keys and values, float32
    bound = {
        "parameters": params,
        "weight_bytes_fp32": 4 * params, "weight_bytes_int8": int8_bytes,
        "kv_cache_bytes_at_48_positions": kv_bytes,
        "memory_bandwidth_gb_s": bandwidth,
        "bound_tokens_per_s_fp32": bandwidth * 1e9 / (4 * params + kv_bytes),
        "bound_tokens_per_s_int8": bandwidth * 1e9 / (int8_bytes + kv_bytes),
        "measured_tokens_per_s_ort_cache": at("onnxruntime, KV cache"),
        "measured_tokens_per_s_ort_int8_cache": at("onnxruntime int8, KV cache"),
    }
    result = {
        "command": ".venv/bin/python benchmarks/decode.py",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "onnxruntime": onnx_generate.ort.__version__,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "note": ("One run on a shared 2-core machine (other processes were running: see the load "
                 "averages); each row is the median decode step of up to three runs. The prompt-256 rows use a "
                 "random-weight GPT of the course's shape with a 512-character context, since the "
                 "course GPT's context is 128."),
        "threads": THREADS, "new_tokens_timed": NEW_TOKENS,
        "providers": ort_models["course", True].providers,
        "gpu": None,
        "gpu_note": ("No GPU on the machine that ran this benchmark: onnx_generate picks "
                     "CUDAExecutionProvider (with IO binding for the cache) only where "
                     "onnxruntime-gpu and a GPU are present."),
        "rows": rows, "speedups_batch1_prompt32": speedups,
        "targets": {"ort_cache_over_eager_no_cache": 3.0, "ort_cache_over_eager_cache": 2.0},
        "int8": int8_info, "batch1_bound": bound,
        "seconds": time.time() - started,
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"speedups": speedups, "bound": bound}, indent=1))
    print(f"wrote {RESULTS.relative_to(ROOT)} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
