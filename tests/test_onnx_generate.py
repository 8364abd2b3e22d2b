"""llmref.onnx_generate: ONNX Runtime generation without torch equals PyTorch's greedy
decoding, past the context too; bad input is refused in words."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export_fixtures import course, course_onnx, small_model, small_onnx
from llmref import onnx_generate
from llmref.kvcache import generate_with_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_generation_in_a_fresh_process_never_imports_torch_and_equals_pytorch_greedy():
    path = course_onnx(cached=True)
    prompt = "def main():\n    "
    script = (
        "import json, sys\n"
        "from llmref import onnx_generate\n"
        f"model, tokenizer = onnx_generate.load({str(path)!r}, threads=1)\n"
        f"ids = tokenizer.encode({prompt!r})[None, :]\n"
        "out = onnx_generate.generate(model, ids, 40, greedy=True)\n"
        "print(json.dumps({'ids': out[0].tolist(), 'torch': 'torch' in sys.modules,\n"
        "                  'providers': model.providers}))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert result["providers"][-1] == "CPUExecutionProvider"
    loaded = course()
    idx = torch.from_numpy(loaded.tokenizer.encode(prompt)[None, :])
    expected = loaded.model.generate(idx, 40, top_k=1)[0].tolist()
    assert result["ids"] == expected
    assert generate_with_cache(loaded.model, idx, 40, top_k=1)[0].tolist() == expected


@pytest.mark.parametrize("cached", [False, True], ids=["no cache", "cache"])
def test_greedy_generation_past_the_context_equals_gpt_generate(cached):
    model = onnx_generate.OnnxGPT(small_onnx(cached), threads=1)
    assert model.cached is cached
    prompt = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])        # 5 + 20 > context of 12
    got = onnx_generate.generate(model, prompt, 20, greedy=True)
    expected = small_model().generate(torch.from_numpy(prompt), 20, top_k=1).numpy()
    np.testing.assert_array_equal(got, expected)


def test_logits_equal_pytorch_and_both_exports_agree():
    ids = np.array([[1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        expected = small_model()(torch.from_numpy(ids))[0].numpy()
    for cached in (False, True):
        got = onnx_generate.OnnxGPT(small_onnx(cached), threads=1).logits(ids)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)  # float32, two engines


def test_sampling_is_reproducible_with_a_seeded_generator():
    model = onnx_generate.OnnxGPT(small_onnx(True), threads=1)
    prompt = np.array([[1, 2, 3]])
    runs = [onnx_generate.generate(model, prompt, 15, temperature=1.5, top_k=10,
                                   rng=np.random.default_rng(seed)) for seed in (7, 7, 8)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    with pytest.raises(ValueError, match="rng"):
        onnx_generate.generate(model, prompt, 3)


def test_complete_returns_the_continuation_only():
    model, tokenizer = onnx_generate.load(small_onnx(True), threads=1)
    text = onnx_generate.complete(model, tokenizer, "abc", 6, greedy=True)
    ids = onnx_generate.generate(model, tokenizer.encode("abc")[None, :], 6, greedy=True)
    assert text == tokenizer.decode(ids[0, 3:])


@pytest.mark.parametrize("ids, error, phrase", [
    (np.array([[1.0, 2.0]]), TypeError, "must be integers"),
    (np.array([1, 2]), ValueError, "ids\\[None, :\\]"),
    (np.array([[1, 99]]), ValueError, "token id 99 is outside the vocabulary"),
    (np.zeros((1, 13), np.int64), ValueError, "13 new tokens = 13 positions, more than the model's context of 12"),
], ids=["float ids", "no batch axis", "unknown id", "longer than the context"])
def test_bad_input_is_refused_in_words(ids, error, phrase):
    model = onnx_generate.OnnxGPT(small_onnx(False), threads=1)
    with pytest.raises(error, match=phrase):
        model.logits(ids)


def test_a_missing_external_data_file_is_named(tmp_path):
    source = small_onnx(False)
    data = source.with_name(source.name + ".data")
    assert data.exists()                        # the exporter's default: the weights apart
    for file in (source, source.with_suffix(".json")):
        shutil.copy(file, tmp_path / file.name)
    with pytest.raises(FileNotFoundError, match=rf"{data.name} is missing.*must sit next to it"):
        onnx_generate.OnnxGPT(tmp_path / source.name)
    shutil.copy(data, tmp_path / data.name)
    onnx_generate.OnnxGPT(tmp_path / source.name)           # with it, the model loads


def test_a_missing_manifest_or_model_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="export the model first"):
        onnx_generate.OnnxGPT(tmp_path / "nothing.onnx")
    source = small_onnx(False)
    for name in (source.name, source.name + ".data"):
        shutil.copy(source.parent / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="write_manifest"):
        onnx_generate.OnnxGPT(tmp_path / source.name)


def test_providers_fall_back_to_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(onnx_generate.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_generate.pick_providers() == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        onnx_generate.pick_providers("cuda")
    monkeypatch.setattr(onnx_generate.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_generate.pick_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_generate.pick_providers("cpu") == ["CPUExecutionProvider"]


def test_the_modules_never_import_torch():
    import ast

    for name in ("onnx_generate", "serve"):
        tree = ast.parse((ROOT / "llmref" / f"{name}.py").read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert "torch" not in imported, name
