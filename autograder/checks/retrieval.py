"""Checks for exercise 17_retrieval: BM25 and its tokenizer, cosine top-k, reciprocal rank
fusion, recall@k and the reciprocal rank, and the learner's hybrid on the course's question set.

Every check compares the learner's function with the course's reference (:mod:`llmref.retrieval`)
on seeded inputs. The reference is itself tested against independent implementations in
tests/test_llmref_retrieval.py: ``rank_bm25.BM25Okapi`` (with Lucene's idf put in place of its
own, the one place the two formulas differ) and a brute-force cosine ranking. On a mismatch a
check recomputes the result the way each known mistake would and names the one the learner's
result matches.
"""
from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

from llmref import retrieval as ref
from llmref.book_pages import load_chunks, load_embeddings, load_questions

from ._core import (CheckFailure, refuse_shortcuts, as_float_array, call_learner, fail, fail_from, passed, seeded,
                    worst_mismatch)

# Libraries that score, rank or measure for the learner (rank_bm25 is the checks' reference).
SHORTCUTS = {"rank_bm25": "rank_bm25", "sklearn": "scikit-learn", "bm25s": "bm25s",
             "sentence_transformers": "sentence-transformers"}
WHY_BY_HAND = ("Write the formula yourself: term and document frequencies, the saturation by k1 "
               "and the length normalisation by b (and the ranks and metrics) are the exercise, "
               "and what you tune when retrieval fails.")

# float64 on both sides differs by ~1e-15; a learner computing in float32 is off by ~1e-7 of
# the score. 1e-6 of max(1, |score|) accepts both; the closest known mistakes (classic idf, no
# length normalisation) move some score by more than 1e-2 on every case below.
SCORE_TOL = 1e-6
# Cosines lie in [-1, 1]; float32 rounding is ~1e-7, mistakes (no normalisation) move them by > 1e-1.
COSINE_TOL = 1e-6
# Fused scores are sums of two or three fractions 1/(k + rank): float64 rounding ~1e-17.
FUSION_TOL = 1e-12
# What the learner's hybrid must reach on the course's question set; the reference reaches
# 0.914 (benchmarks/results/retrieval.json, checked by tests/test_benchmark_retrieval.py),
# BM25 alone 0.845. 0.85 of 58 questions is 50: the reference clears it by 3 questions.
RECALL_AT_5_TARGET = 0.85

TOKEN_CASES = [
    "Don't use float16!",
    "Attention(Q, K, V) = softmax(QK^T / sqrt(d_k)) V",
    "The CAFÉ in Zürich: naïve über-cool ideas, 3.14 and x2",
    "held_out_nats_per_char, top-k, n-gram",
    "  \t\n ",
    "ΑΘΗΝΑ и Москва 2024",
]

# A small vocabulary of the book's words; "the" goes into every document, "attention" into
# most of them (a term in more than half the documents: its classic idf is negative).
WORDS = ["softmax", "query", "key", "value", "token", "layer", "norm", "gradient", "loss",
         "tensor", "batch", "mask", "position", "embedding", "vector", "cosine"]


def _documents(seed: int, n_docs: int) -> list[list[str]]:
    rng = seeded(seed)
    weights = 1.0 / np.arange(1, len(WORDS) + 1)           # Zipf-like: a few words are frequent
    weights /= weights.sum()
    docs = []
    for i in range(n_docs):
        length = int(rng.integers(2, 16))
        doc = list(rng.choice(WORDS, size=length, p=weights))
        doc.insert(int(rng.integers(0, len(doc) + 1)), "the")
        if rng.random() < 0.75 or i == 0:
            doc.append("attention")
        docs.append([str(w) for w in doc])
    docs.append([])                                           # an empty document: length 0
    return docs


def _queries(seed: int) -> list[list[str]]:
    rng = seeded(seed + 1000)
    random_queries = [[str(w) for w in rng.choice(WORDS[:10], size=int(rng.integers(1, 4)), replace=False)]
                      for _ in range(3)]
    return [["the"],                                          # a term in every document
            ["zebra"],                                        # a term in no document: all zeros
            ["attention", "softmax"],                         # a term in most documents
            ["softmax", "softmax", "query"],                  # a repeated query term
            ["gradient", "zebra", "the"],
            *random_queries]


def _variant_scores(docs, query, k1, b, variant: str) -> np.ndarray:
    """BM25 scores as the reference computes them, or as a known mistake would."""
    N = len(docs)
    lengths = np.array([len(d) for d in docs], dtype=np.float64)
    avgdl = max(lengths.mean(), 1e-12)
    if variant == "occurrences":
        df = Counter(t for d in docs for t in d)
    else:
        df = Counter(t for d in docs for t in set(d))
    terms = list(dict.fromkeys(query)) if variant == "set_query" else query
    total = np.zeros(N)
    for t in terms:
        n = df.get(t, 0)
        if variant == "classic_idf":
            idf = math.log((N - n + 0.5) / (n + 0.5))
        else:
            idf = math.log(1 + (N - n + 0.5) / (n + 0.5))
        f = np.array([d.count(t) for d in docs], dtype=np.float64)
        norm = k1 * (1 - b + b * lengths / avgdl) if variant != "no_length_norm" else np.full(N, k1)
        numerator = f * (k1 + 1) if variant != "no_k1_plus_1" else f
        total += idf * numerator / np.maximum(f + norm, 1e-12)
    return total


def _rank_bm25_scores(docs, query, k1, b) -> np.ndarray | None:
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        return None
    if not any(docs):
        return None
    return np.asarray(BM25Okapi([d if d else [""] for d in docs], k1=k1, b=b).get_scores(query))


MISTAKE_MESSAGES = {
    "classic_idf": "the idf looks like ln((N - n + 0.5) / (n + 0.5)), without the 1 inside the log: "
                   "a term in more than half the documents then gets a negative idf, and containing "
                   "it lowers a document's score. Use ln(1 + (N - n + 0.5) / (n + 0.5)).",
    "no_length_norm": "the scores ignore the documents' lengths: the length normalisation "
                      "k1 (1 - b + b |d| / avgdl) is missing (as if b were 0). Divide by "
                      "f + k1 (1 - b + b |d| / avgdl).",
    "set_query": "a repeated query term counts only once in your scores; it must count each time "
                 "it appears in the query (loop over the query, not over set(query)).",
    "occurrences": "the document frequency n counts occurrences, not documents: count each document "
                   "once per term (a set of its terms), however often the term appears in it.",
    "no_k1_plus_1": "the numerator is f instead of f (k1 + 1).",
}


def _close(actual: np.ndarray, expected: np.ndarray, tol: float) -> bool:
    return bool(np.all(np.abs(actual - expected) <= tol * np.maximum(1.0, np.abs(expected))))


def check_bm25(tokenize: Callable, BM25: Any, seed: int = 0, n_docs: int = 8,
               k1: float = 1.5, b: float = 0.75) -> None:
    __tracebackhide__ = True
    # 1. The tokenizer.
    for text in TOKEN_CASES:
        got = call_learner(tokenize, text, name="tokenize")
        expected = ref.tokenize(text)
        if not isinstance(got, list) or not all(isinstance(w, str) for w in got):
            fail(f"tokenize({text!r}) returned {type(got).__name__}: it must return a list of strings.")
        if got != expected:
            if got == text.lower().split() or got == text.split():
                why = ("it looks split on whitespace, so punctuation stays attached to the words "
                       "(\"float16!\"): a word is a run of letters and digits, everything else separates.")
            elif got == ref.WORD.findall(text):
                why = "the words are not lower-cased: \"The\" and \"the\" must be one word."
            elif got == [w for w in ref.WORD.findall(text.lower()) if w.isascii()] or \
                    any("_" in w for w in got):
                why = ("letters outside a-z or underscores are handled differently: a word is a maximal "
                       "run of characters for which str.isalnum() is True, in any script.")
            else:
                why = "compare it with the definition above."
            fail(f"tokenize({text!r}) returned {got}, expected {expected}: {why}")

    # 2. The index and its scores.
    docs = _documents(seed, n_docs)
    with refuse_shortcuts(SHORTCUTS, "BM25", WHY_BY_HAND):
        index = call_learner(BM25, docs, k1=k1, b=b, name="BM25")
    reference = ref.BM25(docs, k1=k1, b=b)
    for method in ("idf", "scores"):
        if not callable(getattr(index, method, None)):
            fail(f"your BM25 object has no method `{method}`: keep the methods of the contract "
                 "(idf(term) and scores(query)).")
    for term in ("the", "attention", "softmax", "zebra"):
        with refuse_shortcuts(SHORTCUTS, "BM25.idf", WHY_BY_HAND):
            got = call_learner(index.idf, term, name="BM25.idf")
        try:
            got = float(got)
        except (TypeError, ValueError):
            fail(f"BM25.idf({term!r}) returned {type(got).__name__}: it must return a number.")
        if not math.isclose(got, reference.idf(term), rel_tol=SCORE_TOL, abs_tol=SCORE_TOL):
            classic = math.log((len(docs) - reference.df.get(term, 0) + 0.5) / (reference.df.get(term, 0) + 0.5))
            if math.isclose(got, classic, rel_tol=1e-6, abs_tol=1e-9):
                fail(f"BM25.idf({term!r}) = {got:.6g}: {MISTAKE_MESSAGES['classic_idf']}")
            n_occ = sum(d.count(term) for d in docs)
            occurrence = math.log(1 + (len(docs) - n_occ + 0.5) / (n_occ + 0.5))
            if n_occ != reference.df.get(term, 0) and math.isclose(got, occurrence, rel_tol=1e-6):
                fail(f"BM25.idf({term!r}) = {got:.6g}: {MISTAKE_MESSAGES['occurrences']}")
            fail(f"BM25.idf({term!r}) = {got:.6g}, expected {reference.idf(term):.6g} with N = {len(docs)} "
                 f"documents, {reference.df.get(term, 0)} of them containing it: "
                 "idf = ln(1 + (N - n + 0.5) / (n + 0.5)).")
    for query in _queries(seed):
        with refuse_shortcuts(SHORTCUTS, "BM25.scores", WHY_BY_HAND):
            scores = call_learner(index.scores, query, name="BM25.scores")
        got = as_float_array(scores,
                             f"BM25.scores({query})", (len(docs),))
        expected = reference.scores(query)
        if _close(got, expected, SCORE_TOL):
            continue
        for variant, message in MISTAKE_MESSAGES.items():
            if _close(got, _variant_scores(docs, query, k1, b, variant), 1e-6):
                fail(f"BM25.scores({query}): {message}")
        okapi = _rank_bm25_scores(docs, query, k1, b)
        if okapi is not None and _close(got, okapi, 1e-6):
            fail(f"BM25.scores({query}) are rank_bm25's: its idf is the classic one with a floor "
                 "for negative values, not ln(1 + (N - n + 0.5) / (n + 0.5)). Write BM25 yourself.")
        fail(f"BM25.scores({query}) differ from the reference (k1={k1}, b={b}, {len(docs)} documents, "
             f"the last one empty): {worst_mismatch(got, expected)}.")

    # 3. Queries that cannot be answered.
    try:
        index.scores([])
    except ValueError:
        pass
    except Exception as error:
        fail_from(error, f"an empty query raised {type(error).__name__}; it must raise ValueError "
                         "saying the query has no words.")
    else:
        fail("BM25.scores([]) returned instead of raising: an empty query has no words to score "
             "with, so it must raise ValueError saying so (a row of zeros would look like an answer).")
    try:
        BM25([])
    except ValueError:
        pass
    except Exception as error:
        fail_from(error, f"BM25([]) raised {type(error).__name__}; an empty index must raise ValueError "
                         "(the given constructor code does: did you remove it?).")
    else:
        fail("BM25([]) built an empty index: searching it would answer nothing, so it must raise "
             "ValueError (the given constructor code does: did you remove it?).")
    passed(f"tokenize and BM25 (k1={k1}, b={b}) agree with the reference on {len(docs)} documents, "
           "edge cases included")


def _dyadic(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Vectors with four entries of +-1: length 2, so normalising and every dot product are exact
    in floating point, whatever the order of the sums, and equal cosines are exactly equal."""
    out = np.zeros((n, dim))
    for row in out:
        row[rng.choice(dim, size=4, replace=False)] = rng.choice([-1.0, 1.0], size=4)
    return out


def _dense_variants(queries, docs, k) -> dict[str, np.ndarray]:
    q = np.atleast_2d(queries)
    raw = q @ docs.T
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cols = docs / np.linalg.norm(docs, axis=0, keepdims=True)
    stable = lambda s: np.argsort(-s, axis=1, kind="stable")[:, :k]
    cos = qn @ (docs / np.linalg.norm(docs, axis=1, keepdims=True)).T
    return {"normalise": stable(raw), "each row": stable(qn @ cols.T),
            "decreasing": np.argsort(cos, axis=1, kind="stable")[:, :k],
            "ties": np.argsort(cos, axis=1, kind="stable")[:, ::-1][:, :k]}


DENSE_MESSAGES = {
    "normalise": "the ranking is by raw dot products: long vectors win over well-aligned ones. "
                 "normalise every query and document vector to length 1 first (cosine similarity).",
    "each row": "the vectors look normalised along the wrong axis: normalise each row (each vector, "
                "axis=1), not each column of the matrix.",
    "decreasing": "the ranking is in increasing order of similarity: the best document comes first, "
                  "so sort by decreasing similarity.",
    "ties": "documents with equal similarity come out in the wrong order: ties go to the smaller "
            "index first (sort the negated similarities with kind=\"stable\"; reversing an ascending "
            "sort puts the larger index first).",
}


def _check_dense_case(dense_top_k, queries, docs, k, what):
    __tracebackhide__ = True
    single = queries.ndim == 1
    with refuse_shortcuts(SHORTCUTS, "dense_top_k", WHY_BY_HAND):
        result = call_learner(dense_top_k, queries, docs, k, name="dense_top_k")
    if not isinstance(result, tuple) or len(result) != 2:
        fail("dense_top_k should return a pair (indices, scores).")
    shape = (k,) if single else (len(queries), k)
    indices = as_float_array(result[0], "the indices dense_top_k returned", shape)
    scores = as_float_array(result[1], "the scores dense_top_k returned", shape)
    exp_indices, exp_scores = ref.dense_top_k(queries, docs, k)
    if not np.array_equal(indices, exp_indices):
        got2 = np.atleast_2d(indices)
        for name, variant in _dense_variants(queries, docs, k).items():
            if np.array_equal(got2, variant) and not np.array_equal(variant, np.atleast_2d(exp_indices)):
                fail(f"dense_top_k on {what}: {DENSE_MESSAGES[name]}")
        fail(f"dense_top_k on {what} returned indices {np.atleast_2d(indices)[0].astype(int).tolist()} for the "
             f"first query, expected {np.atleast_2d(exp_indices)[0].tolist()} (best first, ties by smaller index).")
    if not _close(scores, exp_scores, COSINE_TOL):
        fail(f"dense_top_k on {what}: the right documents, but the scores are not their cosine "
             f"similarities ({worst_mismatch(scores, exp_scores)}): normalise the queries too.")


def check_dense(dense_top_k: Callable, seed: int = 0, n_docs: int = 30, dim: int = 16, k: int = 5) -> None:
    __tracebackhide__ = True
    rng = seeded(seed)
    # Random directions, random lengths (0.1 to 10): an unnormalised dot product ranks differently.
    docs = rng.standard_normal((n_docs, dim)) * rng.uniform(0.1, 10.0, size=(n_docs, 1))
    queries = rng.standard_normal((3, dim)) * rng.uniform(0.1, 10.0, size=(3, 1))
    _check_dense_case(dense_top_k, queries, docs, k, "random vectors of random lengths")
    _check_dense_case(dense_top_k, queries[0], docs, k, "a single query of shape (d,)")
    # Exact ties: duplicates and copies three times as long have exactly equal cosines.
    base = _dyadic(rng, max(4, n_docs // 3), max(dim, 8))
    tied = np.concatenate([base, base[::-1] * 3.0, base[:2]])
    tie_queries = np.concatenate([base[:2], _dyadic(rng, 2, base.shape[1])])
    _check_dense_case(dense_top_k, tie_queries, tied, min(k + 3, len(tied)),
                      "documents that tie exactly (duplicates, copies of other lengths)")
    try:
        dense_top_k(queries, np.zeros((0, dim)), 1)
    except ValueError:
        pass
    except Exception as error:
        fail_from(error, "a query against an empty index must raise ValueError (the given code does: "
                         f"did you remove it?), not {type(error).__name__}.")
    else:
        fail("a query against an empty index returned instead of raising ValueError "
             "(the given code does: did you remove it?).")
    passed(f"dense_top_k ranks by cosine similarity, ties by index, on {n_docs} + {len(tied)} documents")


def _rr_from_zero(ranked, relevant):
    relevant = set(relevant)
    for rank, item in enumerate(ranked):
        if item in relevant:
            return 1.0 / rank if rank else math.inf
    return 0.0


def _number(value: Any, what: str) -> float:
    __tracebackhide__ = True
    if value is None:
        fail(f"{what} returned None. Does your function end with a `return` statement?")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        fail(f"{what} returned {type(value).__name__}: it must return a number.")
    return float(value)


def check_metrics(recall_at_k: Callable, reciprocal_rank: Callable, seed: int = 0) -> None:
    __tracebackhide__ = True
    cases = [([3, 1, 4, 5, 9], [1, 9], 1), ([3, 1, 4, 5, 9], [1, 9], 2), ([3, 1, 4, 5, 9], [1, 9], 4),
             ([3, 1, 4, 5, 9], [1, 9], 5), ([3, 1, 4], [1, 9], 10), ([3, 1, 4], [7], 3),
             (["a#x", "b#y", "c#z"], ["b#y"], 1), (["a#x", "b#y", "c#z"], ["b#y"], 2)]
    rng = seeded(seed)
    for _ in range(6):
        ranked = [int(i) for i in rng.permutation(20)[:int(rng.integers(1, 20))]]
        relevant = [int(i) for i in rng.choice(20, size=int(rng.integers(1, 4)), replace=False)]
        cases.append((ranked, relevant, int(rng.integers(1, 8))))
    for ranked, relevant, k in cases:
        got = _number(call_learner(recall_at_k, ranked, relevant, k, name="recall_at_k"),
                      f"recall_at_k({ranked}, {relevant}, k={k})")
        expected = ref.recall_at_k(ranked, relevant, k)
        if not math.isclose(got, expected, abs_tol=1e-12):
            found = len(set(ranked[:k]) & set(relevant))
            if math.isclose(float(got), ref.recall_at_k(ranked, relevant, k + 1), abs_tol=1e-12):
                why = "off by one: the first k results are ranked[:k], which holds k items."
            elif math.isclose(float(got), found / k, abs_tol=1e-12):
                why = ("that is precision@k (found / k): recall divides by the number of relevant "
                       "items, which is what it measures the fraction of.")
            else:
                why = "recall@k = (relevant items among the first k) / (number of relevant items)."
            fail(f"recall_at_k({ranked}, {relevant}, k={k}) returned {got}, expected {expected}: {why}")
    for ranked, relevant, _ in cases:
        try:
            got = reciprocal_rank(ranked, relevant)
        except ZeroDivisionError as error:
            fail_from(error, f"reciprocal_rank({ranked}, {relevant}) divided by zero: ranks count from 1 "
                             "(the first result has rank 1, reciprocal rank 1), not from 0.")
        except Exception:
            got = call_learner(reciprocal_rank, ranked, relevant, name="reciprocal_rank")
        got = _number(got, f"reciprocal_rank({ranked}, {relevant})")
        expected = ref.reciprocal_rank(ranked, relevant)
        if not math.isclose(got, expected, abs_tol=1e-12):
            hits = [i for i, item in enumerate(ranked, start=1) if item in set(relevant)]
            off_by_one = [1.0 / (hits[0] + 1)] + ([1.0 / (hits[0] - 1)] if hits and hits[0] > 1 else [])
            if expected and any(math.isclose(float(got), v, abs_tol=1e-12) for v in off_by_one):
                why = "ranks count from 1: the first result has rank 1, reciprocal rank 1."
            elif len(hits) > 1 and math.isclose(float(got), 1.0 / hits[-1], abs_tol=1e-12):
                why = "that is the rank of the last relevant result: use the first relevant one."
            else:
                why = "1 / (rank of the first relevant item, counted from 1), or 0 if none is ranked."
            fail(f"reciprocal_rank({ranked}, {relevant}) returned {got}, expected {expected}: {why}")
    passed(f"recall_at_k and reciprocal_rank agree with the reference on {len(cases)} rankings")


def _fusion_variant(rankings, k, variant):
    fused: dict[int, float] = {}
    start = 0 if variant == "from 1" else 1
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=start):
            fused[int(doc)] = fused.get(int(doc), 0.0) + 1.0 / ((0 if variant == "ignores k" else k) + rank)
    if variant == "missing from":
        fused = {d: s for d, s in fused.items() if all(d in set(map(int, r)) for r in rankings)}
    sign = -1 if variant == "ties" else 1
    order = sorted(fused, key=lambda d: (-fused[d], sign * d))
    return order, np.array([fused[d] for d in order])


FUSION_MESSAGES = {
    "from 1": "ranks count from 1: the best document of a ranking contributes 1 / (k + 1).",
    "missing from": "documents that are missing from one ranking are dropped: a ranking a document is "
                    "missing from adds nothing to its sum, but the document still counts.",
    "ignores k": "the fused scores ignore k: each ranking adds 1 / (k + rank), not 1 / rank.",
    "ties": "documents with equal fused scores come out in the wrong order: ties go to the smaller index.",
}


def check_fusion(reciprocal_rank_fusion: Callable, seed: int = 0, n_rankings: int = 2, k: float = 60) -> None:
    __tracebackhide__ = True
    rng = seeded(seed)
    cases = [([0, 5, 2], [5, 0, 7]),          # 0 and 5 tie exactly; 2 and 7 are each in one ranking
             ([4, 3], [3, 4], [9]),           # 4 and 3 tie; 9 only in the third ranking
             ([1, 2, 3],)]                    # one ranking: fusion keeps its order
    for _ in range(3):
        cases.append(tuple([int(d) for d in rng.permutation(15)[:int(rng.integers(3, 12))]]
                           for _ in range(n_rankings)))
    for rankings in cases:
        rankings = [list(r) for r in rankings]
        with refuse_shortcuts(SHORTCUTS, "reciprocal_rank_fusion", WHY_BY_HAND):
            result = call_learner(reciprocal_rank_fusion, rankings, k=k, name="reciprocal_rank_fusion")
        if not isinstance(result, tuple) or len(result) != 2:
            fail("reciprocal_rank_fusion should return a pair (indices, scores).")
        exp_indices, exp_scores = ref.reciprocal_rank_fusion(rankings, k=k)
        indices = np.asarray(result[0]).ravel().tolist()
        if indices != exp_indices.tolist():
            for variant, message in FUSION_MESSAGES.items():
                if indices == _fusion_variant(rankings, k, variant)[0] != exp_indices.tolist():
                    fail(f"reciprocal_rank_fusion({rankings}, k={k}): {message}")
            fail(f"reciprocal_rank_fusion({rankings}, k={k}) returned {indices}, expected "
                 f"{exp_indices.tolist()}: sum 1 / (k + rank) over the rankings, ranks from 1, "
                 "best first, ties by the smaller index.")
        scores = as_float_array(result[1], "the fused scores", exp_scores.shape)
        if not _close(scores, exp_scores, FUSION_TOL):
            for variant in ("from 1", "ignores k"):
                order, variant_scores = _fusion_variant(rankings, k, variant)
                if order == indices and _close(scores, variant_scores, 1e-9):
                    fail(f"reciprocal_rank_fusion({rankings}, k={k}), the scores: {FUSION_MESSAGES[variant]} "
                         f"({worst_mismatch(scores, exp_scores)})")
            fail(f"reciprocal_rank_fusion({rankings}, k={k}): the right order but the wrong scores, "
                 f"{worst_mismatch(scores, exp_scores)}: each ranking adds 1 / (k + rank), rank from 1.")
    passed(f"reciprocal_rank_fusion (k={k}) agrees with the reference on {len(cases)} sets of rankings")


@lru_cache(maxsize=1)
def question_set():
    """The passages, the question set and their cached MiniLM embeddings (refused if stale)."""
    chunks = load_chunks()
    questions = load_questions(chunks=chunks)
    return chunks, questions, load_embeddings(chunks, questions)


def check_question_set(tokenize: Callable, BM25: Any, dense_top_k: Callable,
                       reciprocal_rank_fusion: Callable) -> None:
    __tracebackhide__ = True
    try:
        chunks, questions, cached = question_set()
    except (FileNotFoundError, ValueError) as error:
        fail(f"the course's question set cannot be checked on this installation: {error}")
    passages = [c.indexed_text for c in chunks]
    sections = [c.section for c in chunks]
    gold = [f"{q['page']}#{q['heading']}" for q in questions]
    bm25 = call_learner(ref.bm25_rankings, passages, [q["question"] for q in questions],
                        tokenize=tokenize, BM25=BM25, name="your tokenize and BM25 on the question set")
    dense = call_learner(ref.dense_rankings, cached.chunks, cached.questions, dense_top_k=dense_top_k,
                         name="your dense_top_k on the question set")
    hybrid = call_learner(ref.hybrid_rankings, bm25, dense, reciprocal_rank_fusion=reciprocal_rank_fusion,
                          name="your reciprocal_rank_fusion on the question set")
    figures = {name: ref.evaluate(r, sections, gold) for name, r in
               (("BM25", bm25), ("dense", dense), ("hybrid", hybrid))}
    shown = "; ".join(f"{name} recall@5 {f['recall@5']:.3f}" for name, f in figures.items())
    if figures["hybrid"]["recall@5"] < RECALL_AT_5_TARGET:
        r_bm25 = ref.bm25_rankings(passages, [q["question"] for q in questions])
        r_dense = ref.dense_rankings(cached.chunks, cached.questions)
        reference = [ref.evaluate(r, sections, gold)["recall@5"]
                     for r in (r_bm25, r_dense, ref.hybrid_rankings(r_bm25, r_dense))]
        fail(f"your hybrid finds the right section among its first five for only "
             f"{figures['hybrid']['recall@5']:.3f} of the {len(questions)} questions, below the "
             f"{RECALL_AT_5_TARGET} needed ({shown}; the reference's: "
             f"{', '.join(f'{v:.3f}' for v in reference)}). "
             "The piece whose figure falls furthest below the reference's is the one to look at.")
    passed(f"on the {len(questions)} questions: {shown}, MRR {figures['hybrid']['mrr']:.3f} "
           f"(needed: hybrid recall@5 >= {RECALL_AT_5_TARGET})")
