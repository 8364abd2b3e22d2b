"""llmref.export: the exported course GPT and MiniLM encoder, run by ONNX Runtime, equal PyTorch
(and sentence-transformers for the encoder) to 1e-4; bad input is refused in words."""
from __future__ import annotations

import logging
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export_fixtures import FOLDER, course, course_onnx, small_model
from llmref import export, onnx_generate
from llmref.encoder import WordPieceTokenizer, load_encoder, minilm_folder

logging.getLogger("torch.onnx").setLevel(logging.ERROR)
# float32 in two engines (ONNX Runtime's kernels against PyTorch's), logits of order 10:
# measured differences are below 1e-5; 1e-4 is the course's stated tolerance for an export.
TOL = 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("cached", [False, True], ids=["no cache", "cache"])
def test_the_exported_course_gpt_equals_pytorch_on_held_out_text(cached):
    loaded = course()
    model = onnx_generate.OnnxGPT(course_onnx(cached), threads=1)
    held = loaded.data.held_out
    for batch, length in ((1, 1), (1, 128), (4, 57)):
        ids = np.stack([held[i * 200:i * 200 + length] for i in range(batch)]).astype(np.int64)
        with torch.no_grad():
            expected = loaded.model(torch.from_numpy(ids))[0].numpy()
        np.testing.assert_allclose(model.logits(ids), expected, atol=TOL, rtol=TOL)


def test_a_model_in_training_mode_is_refused(tmp_path):
    model = small_model()
    model.train()
    try:
        for fn in (export.export_gpt, export.export_gpt_with_cache):
            with pytest.raises(ValueError, match="training mode.*model.eval()"):
                fn(model, tmp_path / "model.onnx")
    finally:
        model.eval()
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
def test_the_int8_model_quantizes_the_tied_head_and_stays_close():
    import onnx

    source = course_onnx(True)
    target = onnx_generate.quantize_int8(source, FOLDER / "course_int8.onnx")
    nodes = [n.op_type for n in onnx.load(str(target)).graph.node]
    layers = 4 * course().model.config.n_layer + 1             # 4 per block and the head
    assert nodes.count("MatMulInteger") == layers              # the tied head included
    assert onnx_generate.model_bytes(target) < onnx_generate.model_bytes(source) / 3
    ids = course().data.held_out[None, :128].astype(np.int64)
    fp32 = onnx_generate.OnnxGPT(source, threads=1).logits(ids)
    int8 = onnx_generate.OnnxGPT(target, threads=1).logits(ids)
    # int8 weights move logits by a few hundredths, not more: the most likely character agrees
    # almost everywhere (measured: > 97 % of positions).
    assert np.abs(int8 - fp32).max() < 1.0
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() > 0.9


@pytest.mark.slow
def test_the_exported_encoder_equals_pytorch_and_sentence_transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = minilm_folder()
    encoder = load_encoder(folder)
    tokenizer = WordPieceTokenizer.from_folder(folder)
    path = export.export_encoder(encoder, FOLDER / "minilm.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    texts = ["Exporting a model to ONNX.", "The cat sat on the mat, quietly.", "x"]
    batch = tokenizer.encode(texts)
    got = session.run(["embeddings"], {"input_ids": batch["input_ids"].numpy(),
                                       "attention_mask": batch["attention_mask"].numpy()})[0]
    with torch.no_grad():
        expected = encoder.embed(batch["input_ids"], batch["attention_mask"]).numpy()
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=TOL)
    from sentence_transformers import SentenceTransformer
    independent = SentenceTransformer(str(folder), device="cpu").encode(texts)
    np.testing.assert_allclose(got, independent, atol=TOL, rtol=TOL)
