"""Retrieval over the book's own pages, and whether retrieved text helps the course GPT.

    .venv/bin/python benchmarks/retrieval.py              # about 40 s on 2 idle cores
    .venv/bin/python benchmarks/retrieval.py --recompute  # embed again even if the cache is fresh

The embeddings are recomputed whenever the cached ones do not match the passages or the
questions (their fingerprints differ), and reused otherwise.

1. Cuts Parts I to III of the book into passages (llmref.book_pages), embeds them and the
   course's question set (benchmarks/data/retrieval_questions.json) with all-MiniLM-L6-v2
   (llmref.encoder, inputs cut at 256 word pieces as sentence-transformers does), and caches
   the vectors in benchmarks/results/retrieval_embeddings.npz with the fingerprints of the
   passages and questions (the exercise and the chapter refuse a stale cache).
2. Ranks the passages for every question with BM25, dense cosine search and their reciprocal
   rank fusion (llmref.retrieval), and measures recall@1, recall@5 and MRR at the level of
   sections: a question's answer is one section, and a section counts at the rank of its best
   passage.
3. Grounding: the held-out bits per character of the course GPT (llmref.course_model) on a
   64-character stretch of each question's answer passage, read after 64 characters of context
   (the model's context is 128 characters, so context and target fill it exactly). The
   contexts: nothing but a newline; the start of a random passage from another page; the
   start of the passage the hybrid ranks first for the question, *excluding the target's own
   passage* (so the context can never contain the target text itself: what is measured is
   whether related text helps, not copying); and, as a ceiling, the 64 characters that
   really precede the target in its passage, and the target itself (what a model that can copy
   from its context gains when retrieval hands it the very text it must produce). The target is characters 64 to 128 of the first
   passage of the answer section with at least 128 characters (after mapping the text to the
   GPT's 103 characters: accents dropped, other unknown characters as spaces).

Writes benchmarks/results/retrieval.json and benchmarks/results/retrieval_embeddings.npz.
"""
from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llmref import book_pages, course_model, retrieval
from llmref.encoder import WordPieceTokenizer, embed_texts, load_encoder, minilm_folder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MAX_LENGTH = 256          # word pieces per input, sentence-transformers' setting for this model
CONTEXT = 64              # characters of context before the target
TARGET = 64               # characters scored; CONTEXT + TARGET = the GPT's 128
SEED = 0
RECALL_AT_5_TARGET = 0.85 # what the hybrid must reach (the exercise's graded threshold)


def embed(chunks, questions) -> tuple[np.ndarray, np.ndarray, float]:
    folder = minilm_folder()
    model, tokenizer = load_encoder(folder), WordPieceTokenizer.from_folder(folder)
    start = time.perf_counter()
    with torch.no_grad():
        passages = embed_texts(model, tokenizer, [c.indexed_text for c in chunks], max_length=MAX_LENGTH)
        asked = embed_texts(model, tokenizer, [q["question"] for q in questions], max_length=MAX_LENGTH)
    return passages.numpy(), asked.numpy(), time.perf_counter() - start


@torch.no_grad()
def bits_per_char(gpt, tokenizer, context: str, target: str) -> float:
    """Mean -log2 p of target's characters, each read after context and the target before it."""
    ids = torch.from_numpy(tokenizer.encode(context + target))[None]
    logits, _ = gpt(ids[:, :-1])
    logp = torch.log_softmax(logits[0, len(context) - 1:], dim=-1)
    nats = -logp.gather(1, ids[0, len(context):, None]).mean()
    return float(nats) / math.log(2)


def grounding(chunks, questions, hybrid) -> dict:
    torch.set_num_threads(1)   # 128-character windows of a 1.8M-parameter model: one thread suffices
    course = course_model.load()
    gpt, tok = course.model, course.tokenizer
    text = [book_pages.for_char_model(c.text, tok.chars) for c in chunks]
    rng = np.random.default_rng(SEED)
    rows = []
    for q, ranking in zip(questions, hybrid):
        section = f"{q['page']}#{q['heading']}"
        candidates = [c.index for c in chunks if c.section == section and len(text[c.index]) >= CONTEXT + TARGET]
        if not candidates:
            continue
        own = candidates[0]
        target = text[own][CONTEXT:CONTEXT + TARGET]
        retrieved = next(int(i) for i in ranking if int(i) != own and len(text[int(i)]) >= CONTEXT)
        others = [c.index for c in chunks if c.page != q["page"] and len(text[c.index]) >= CONTEXT]
        random_chunk = int(rng.choice(others))
        contexts = {"none": "\n", "random": text[random_chunk][:CONTEXT],
                    "retrieved": text[retrieved][:CONTEXT], "preceding": text[own][:CONTEXT],
                    "verbatim": target}
        row = {"question": q["question"], "target_chunk": own, "retrieved_chunk": retrieved,
               "retrieved_same_section": chunks[retrieved].section == section,
               "random_chunk": random_chunk}
        row.update({f"bpc_{name}": bits_per_char(gpt, tok, ctx, target) for name, ctx in contexts.items()})
        rows.append(row)
    conditions = ("none", "random", "retrieved", "preceding", "verbatim")
    mean = {name: float(np.mean([r[f"bpc_{name}"] for r in rows])) for name in conditions}
    diff = np.array([r["bpc_retrieved"] - r["bpc_random"] for r in rows])
    same = [r for r in rows if r["retrieved_same_section"]]
    other = [r for r in rows if not r["retrieved_same_section"]]
    split = {label: {"n": len(group),
                     **{name: float(np.mean([r[f"bpc_{name}"] for r in group])) for name in conditions}}
             for label, group in (("retrieved_from_answer_section", same),
                                  ("retrieved_from_elsewhere", other)) if group}
    return {"context_chars": CONTEXT, "target_chars": TARGET, "n": len(rows),
            "mean_bits_per_char": mean,
            "retrieved_minus_random": {"mean": float(diff.mean()),
                                       "standard_error": float(diff.std(ddof=1) / math.sqrt(len(diff))),
                                       "questions_where_retrieved_is_better": int((diff < 0).sum())},
            "by_retrieved_section": split,
            "gpt_held_out_bits_per_char": course.held_out_nats_per_char / math.log(2),
            "rows": rows}


def main() -> None:
    torch.set_num_threads(2)
    wall = time.perf_counter()
    chunks = book_pages.load_chunks()
    questions = book_pages.load_questions(chunks=chunks)
    try:
        if "--recompute" in sys.argv:
            raise ValueError("asked to recompute")
        cached = book_pages.load_embeddings(chunks, questions)
        passage_vectors, question_vectors = cached.chunks, cached.questions
        embed_seconds = json.loads((RESULTS / "retrieval.json").read_text())["seconds"]["embed"]
        print("reusing the cached embeddings (their fingerprints match); --recompute to embed again")
    except (FileNotFoundError, ValueError, KeyError):
        passage_vectors, question_vectors, embed_seconds = embed(chunks, questions)
        book_pages.save_embeddings(book_pages.EMBEDDINGS, passage_vectors, question_vectors, chunks, questions)

    passages = [c.indexed_text for c in chunks]
    sections = [c.section for c in chunks]
    gold = [f"{q['page']}#{q['heading']}" for q in questions]
    start = time.perf_counter()
    rankings = {"bm25": retrieval.bm25_rankings(passages, [q["question"] for q in questions])}
    bm25_seconds = time.perf_counter() - start
    rankings["dense"] = retrieval.dense_rankings(passage_vectors, question_vectors)
    rankings["hybrid"] = retrieval.hybrid_rankings(rankings["bm25"], rankings["dense"])
    metrics = {name: retrieval.evaluate(r, sections, gold) for name, r in rankings.items()}
    first = {name: [retrieval.rank_sections(r, sections).index(g) + 1 for r, g in zip(rs, gold)]
             for name, rs in rankings.items()}
    result = {
        "passages": len(chunks), "sections": len(set(sections)), "questions": len(questions),
        "chunks_fingerprint": book_pages.fingerprint(chunks),
        "questions_fingerprint": book_pages.fingerprint(questions),
        "max_chars": book_pages.MAX_CHARS, "encoder": "all-MiniLM-L6-v2", "max_length": MAX_LENGTH,
        "bm25": {"k1": 1.5, "b": 0.75, "idf": "ln(1 + (N - n + 0.5) / (n + 0.5))"}, "rrf_k": 60,
        "recall_at_5_target": RECALL_AT_5_TARGET,
        "metrics": metrics,
        "answer_section_rank": first,
        "seconds": {"embed": embed_seconds, "bm25_all_questions": bm25_seconds},
        "grounding": grounding(chunks, questions, rankings["hybrid"]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
    }
    result["seconds"]["wall"] = time.perf_counter() - wall
    (RESULTS / "retrieval.json").write_text(json.dumps(result, indent=1) + "\n")
    for name, m in metrics.items():
        print(f"{name:7}", "  ".join(f"{k} {v:.3f}" for k, v in m.items()))
    g = result["grounding"]
    print("grounding, bits/char:", {k: round(v, 3) for k, v in g["mean_bits_per_char"].items()},
          "retrieved - random:", g["retrieved_minus_random"])


if __name__ == "__main__":
    main()
