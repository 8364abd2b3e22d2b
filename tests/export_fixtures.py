"""Exported models shared by the export tests: each exported once per test process.

An export costs seconds (torch.export traces the model, then the graph is translated and
optimised), so tests/test_onnx_generate.py, test_serve.py and test_llmref_export.py share
these files instead of exporting their own. They live in a temporary folder removed at exit.
"""
from __future__ import annotations

import atexit
import functools
import logging
import shutil
import string
import tempfile
from pathlib import Path

import torch

from llmref import course_model, onnx_generate
from llmref.corpus import CharTokenizer
from llmref.export import export_gpt, export_gpt_with_cache
from llmref.gpt import GPT, GPTConfig

logging.getLogger("torch.onnx").setLevel(logging.ERROR)
FOLDER = Path(tempfile.mkdtemp(prefix="llm-course-onnx-"))
atexit.register(shutil.rmtree, FOLDER, ignore_errors=True)

# A small random GPT with a 12-character context, so that generation runs past it quickly.
SMALL = GPTConfig(vocab_size=23, block_size=12, n_layer=2, n_head=2, n_embd=16)
SMALL_TOKENIZER = CharTokenizer(tuple(string.ascii_lowercase[:23]))


@functools.lru_cache(maxsize=None)
def small_model() -> GPT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT(SMALL)
        with torch.no_grad():                       # logits of order 1, not 0.02: ties are rare
            model.transformer.wte.weight.normal_(0, 0.5)
    return model.eval()


@functools.lru_cache(maxsize=None)
def small_onnx(cached: bool) -> Path:
    path = FOLDER / ("small_cached.onnx" if cached else "small.onnx")
    (export_gpt_with_cache if cached else export_gpt)(small_model(), path)
    onnx_generate.write_manifest(path, SMALL_TOKENIZER, SMALL)
    return path


@functools.lru_cache(maxsize=None)
def course() -> course_model.CourseModel:
    return course_model.load()


@functools.lru_cache(maxsize=None)
def course_onnx(cached: bool = True) -> Path:
    loaded = course()
    path = FOLDER / ("course_cached.onnx" if cached else "course.onnx")
    (export_gpt_with_cache if cached else export_gpt)(loaded.model, path)
    onnx_generate.write_manifest(path, loaded.tokenizer, loaded.model.config)
    return path
