"""The checks behind exercise 17_retrieval, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, and bad input fails in words, not tracebacks."""
from __future__ import annotations

import numpy as np
import pytest

from autograder.checks import CheckFailure
from autograder.checks import retrieval as checks
from llmref import retrieval as ref


def test_reference_passes_every_check(capsys):
    checks.check_bm25(ref.tokenize, ref.BM25)
    checks.check_bm25(ref.tokenize, ref.BM25, seed=8, n_docs=3, k1=2.0, b=0.0)
    checks.check_dense(ref.dense_top_k)
    checks.check_dense(ref.dense_top_k, seed=6, n_docs=5, dim=3, k=5)
    checks.check_metrics(ref.recall_at_k, ref.reciprocal_rank)
    checks.check_fusion(ref.reciprocal_rank_fusion, seed=4, n_rankings=3, k=10)
    checks.check_question_set(ref.tokenize, ref.BM25, ref.dense_top_k, ref.reciprocal_rank_fusion)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 7


def test_the_seeded_cases_hold_the_edge_cases_they_claim():
    docs = checks._documents(0, 8)
    assert all("the" in d for d in docs[:-1]) and docs[-1] == []
    assert sum("attention" in d for d in docs) > len(docs) / 2      # classic idf negative
    index = ref.BM25(docs)
    assert np.all(index.scores(["zebra"]) == 0)
    # the two closest mistakes move some score by far more than the tolerance
    for variant in ("classic_idf", "no_length_norm"):
        worst = max(np.abs(checks._variant_scores(docs, q, 1.5, 0.75, variant) - index.scores(q)).max()
                    for q in checks._queries(0))
        assert worst > 1e-2 > 1000 * checks.SCORE_TOL


def test_random_dense_case_has_no_near_ties():
    # Indices are compared exactly: the seeded random case must not have two cosines closer
    # than float32 rounding, or a float32 implementation could be failed unfairly.
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((30, 16)) * rng.uniform(0.1, 10.0, size=(30, 1))
    queries = rng.standard_normal((3, 16)) * rng.uniform(0.1, 10.0, size=(3, 1))
    _, scores = ref.dense_top_k(queries, docs, 30)
    assert np.abs(np.diff(scores[:, :6], axis=1)).min() > 1e-4


BAD_BM25 = {
    "tokenize returns a string": (lambda text: text, ref.BM25, "list of strings"),
    "no idf method": (ref.tokenize, type("NoIdf", (), {"__init__": lambda self, docs, k1=1.5, b=0.75: None}), "no method `idf`"),
    "scores of the wrong shape": (ref.tokenize, type("Short", (ref.BM25,), {"scores": lambda self, q: np.zeros(2)}), "has shape (2,)"),
    "empty query answered": (ref.tokenize, type("Zeros", (ref.BM25,), {
        "scores": lambda self, q: np.zeros(self.n_docs) if not q else ref.BM25.scores(self, q)}), "must raise ValueError"),
}


@pytest.mark.parametrize("case", BAD_BM25, ids=str)
def test_bad_bm25_gives_a_clear_failure(case):
    tokenize, bm25, phrase = BAD_BM25[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_bm25(tokenize, bm25)
    assert phrase in str(caught.value)


BAD_DENSE = {
    "returns one array": (lambda q, d, k: ref.dense_top_k(q, d, k)[0], "should return a pair"),
    "raises": (lambda q, d, k: {}["missing"], "raised KeyError"),
    "scores of a plain dot product": (lambda q, d, k: (ref.dense_top_k(q, d, k)[0],
                                                         np.take_along_axis(np.atleast_2d(q) @ d.T, np.atleast_2d(ref.dense_top_k(q, d, k)[0]), 1).reshape(np.shape(ref.dense_top_k(q, d, k)[0]))),
                                      "normalise the queries too"),
}


@pytest.mark.parametrize("case", BAD_DENSE, ids=str)
def test_bad_dense_gives_a_clear_failure(case):
    fn, phrase = BAD_DENSE[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_dense(fn)
    assert phrase in str(caught.value)


def test_bad_metrics_and_fusion_give_clear_failures():
    with pytest.raises(CheckFailure, match="returned None"):
        checks.check_metrics(lambda r, rel, k: None, ref.reciprocal_rank)
    with pytest.raises(CheckFailure, match="should return a pair"):
        checks.check_fusion(lambda rankings, k=60: ref.reciprocal_rank_fusion(rankings, k)[0])


def test_a_weak_retriever_misses_the_recall_target():
    # BM25 ranking every passage in index order: far below recall@5 = 0.85, said in figures.
    class Useless(ref.BM25):
        def scores(self, query):
            return np.zeros(self.n_docs)

    with pytest.raises(CheckFailure, match="below the 0.85 needed"):
        checks.check_question_set(ref.tokenize, Useless, lambda q, d, k: ref.dense_top_k(q, d[::-1], k),
                                  ref.reciprocal_rank_fusion)
