"""The committed retrieval results (benchmarks/results/retrieval.json): well-formed, about the
passages and questions of this checkout, reproducible from the cached embeddings, and meeting
the stated target. `.venv/bin/python benchmarks/retrieval.py` regenerates them."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from llmref import book_pages, retrieval

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "retrieval.json"


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(RESULT.read_text())


@pytest.fixture(scope="module")
def corpus():
    chunks = book_pages.load_chunks()
    questions = book_pages.load_questions(chunks=chunks)
    return chunks, questions


def test_the_result_is_about_these_passages_and_questions(result, corpus):
    chunks, questions = corpus
    assert result["chunks_fingerprint"] == book_pages.fingerprint(chunks), \
        "the book's pages changed: rerun .venv/bin/python benchmarks/retrieval.py"
    assert result["questions_fingerprint"] == book_pages.fingerprint(questions)
    assert (result["passages"], result["questions"]) == (len(chunks), len(questions))
    assert result["questions"] >= 40


def test_the_figures_are_reproduced_from_the_cached_embeddings(result, corpus):
    chunks, questions = corpus
    cached = book_pages.load_embeddings(chunks, questions)
    sections = [c.section for c in chunks]
    gold = [f"{q['page']}#{q['heading']}" for q in questions]
    bm25 = retrieval.bm25_rankings([c.indexed_text for c in chunks], [q["question"] for q in questions])
    dense = retrieval.dense_rankings(cached.chunks, cached.questions)
    hybrid = retrieval.hybrid_rankings(bm25, dense, k=result["rrf_k"])
    for name, rankings in (("bm25", bm25), ("dense", dense), ("hybrid", hybrid)):
        assert retrieval.evaluate(rankings, sections, gold) == pytest.approx(result["metrics"][name], abs=1e-12)


def test_the_figures_are_consistent_and_meet_the_target(result):
    for name, m in result["metrics"].items():
        assert 0 <= m["recall@1"] <= m["mrr"] <= 1 and m["recall@1"] <= m["recall@5"] <= 1
        ranks = np.array(result["answer_section_rank"][name])
        assert m["recall@1"] == pytest.approx(np.mean(ranks == 1))
        assert m["recall@5"] == pytest.approx(np.mean(ranks <= 5))
        assert m["mrr"] == pytest.approx(np.mean(1 / ranks))
    assert result["metrics"]["hybrid"]["recall@5"] >= result["recall_at_5_target"] == 0.85
    from autograder.checks.retrieval import RECALL_AT_5_TARGET
    assert RECALL_AT_5_TARGET == result["recall_at_5_target"]
    # the hybrid is at least as good as either retriever alone on the headline figure
    assert result["metrics"]["hybrid"]["mrr"] >= max(result["metrics"][n]["mrr"] for n in ("bm25", "dense"))


def test_the_grounding_measurement_is_consistent(result):
    g = result["grounding"]
    rows = g["rows"]
    assert g["n"] == len(rows) >= 40 and g["context_chars"] + g["target_chars"] == 128
    for name, mean in g["mean_bits_per_char"].items():
        assert mean == pytest.approx(np.mean([r[f"bpc_{name}"] for r in rows]))
    assert all(r["retrieved_chunk"] != r["target_chunk"] for r in rows)    # never the target's own text
    diff = [r["bpc_retrieved"] - r["bpc_random"] for r in rows]
    assert g["retrieved_minus_random"]["mean"] == pytest.approx(np.mean(diff))
    record = json.loads((ROOT / "benchmarks" / "results" / "pretrain.json").read_text())
    assert g["gpt_held_out_bits_per_char"] == pytest.approx(
        record["checkpoint"]["held_out_nats_per_char"] / math.log(2))


def test_a_grounding_row_is_reproduced_by_the_course_gpt(result, corpus):
    chunks, _ = corpus
    spec = importlib.util.spec_from_file_location("benchmark_retrieval", ROOT / "benchmarks" / "retrieval.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from llmref import course_model
    course = course_model.load()
    row = result["grounding"]["rows"][0]
    text = {i: book_pages.for_char_model(chunks[i].text, course.tokenizer.chars)
            for i in (row["target_chunk"], row["retrieved_chunk"])}
    target = text[row["target_chunk"]][64:128]
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)         # as the benchmark measured it; one 128-character window
    try:
        got = bench.bits_per_char(course.model, course.tokenizer, text[row["retrieved_chunk"]][:64], target)
    finally:
        torch.set_num_threads(threads)
    assert got == pytest.approx(row["bpc_retrieved"], abs=1e-4)
