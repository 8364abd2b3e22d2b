"""The retrieval reference (llmref.retrieval) against independent implementations: rank_bm25's
BM25Okapi for BM25, a brute-force loop for the cosine ranking, the definitions for the rest.

rank_bm25 uses the classic idf, ln((N - n + 0.5) / (n + 0.5)), with negative values replaced by
0.25 times the mean idf; the course uses Lucene's, ln(1 + (N - n + 0.5) / (n + 0.5)). That is the
only difference: with BM25Okapi's idf table replaced by Lucene's, the scores agree to rounding,
which checks the term-frequency saturation, the length normalisation and the handling of
repeated query terms. Without the replacement they differ, by the idf alone."""
from __future__ import annotations

import math

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from llmref import retrieval
from llmref.retrieval import BM25, dense_top_k, reciprocal_rank_fusion, recall_at_k, reciprocal_rank, tokenize


class LuceneIdfOkapi(BM25Okapi):
    """rank_bm25's BM25 with Lucene's idf in place of its own (the one formula the two differ in)."""

    def _calc_idf(self, nd):
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


def _corpus(seed: int, n_docs: int = 20):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(30)]
    p = 1 / np.arange(1, 31)
    p /= p.sum()
    return [[str(w) for w in rng.choice(words, size=int(rng.integers(1, 25)), p=p)] + ["common"]
            for _ in range(n_docs)], words


@pytest.mark.parametrize("seed, k1, b", [(0, 1.5, 0.75), (1, 1.2, 0.0), (2, 2.0, 1.0), (3, 0.9, 0.3)])
def test_bm25_matches_rank_bm25_with_lucenes_idf(seed, k1, b):
    docs, words = _corpus(seed)
    ours = BM25(docs, k1=k1, b=b)
    theirs = LuceneIdfOkapi(docs, k1=k1, b=b)
    rng = np.random.default_rng(seed + 100)
    queries = [["common"], ["absent"], ["w0", "w0", "w5"], ["w1", "common", "w29", "absent"]]
    queries += [[str(w) for w in rng.choice(words, size=4)] for _ in range(10)]
    for query in queries:
        np.testing.assert_allclose(ours.scores(query), theirs.get_scores(query), rtol=1e-12, atol=1e-12)


def test_bm25_differs_from_rank_bm25_only_through_the_idf():
    docs, _ = _corpus(4)
    ours, okapi = BM25(docs), BM25Okapi(docs)
    # A term in every document: rank_bm25's classic idf is negative and floored to 0.25 x the
    # mean idf; Lucene's is small and positive. A rarer term: the two idfs differ by a bounded amount.
    assert ours.idf("common") == pytest.approx(math.log(1 + 0.5 / (len(docs) + 0.5)))
    assert okapi.idf["common"] == pytest.approx(okapi.epsilon * okapi.average_idf)
    assert not np.allclose(ours.scores(["w3"]), okapi.get_scores(["w3"]))


def test_bm25_edge_cases():
    docs = [["a", "b", "b"], ["b", "c"], [], ["a", "a", "a", "a", "d"]]
    index = BM25(docs)
    assert np.all(index.scores(["zebra"]) == 0)                      # a term in no document
    assert index.scores(["b"])[2] == 0                               # the empty document
    np.testing.assert_allclose(index.scores(["a", "a"]), 2 * index.scores(["a"]))   # each repetition counts
    assert all(index.idf(t) > 0 for t in ("a", "b", "c", "d", "zebra"))
    assert index.idf("zebra") > index.idf("d") > index.idf("b")     # rarer terms weigh more
    # saturation: more occurrences score higher but by less and less, below idf (k1 + 1)
    s = BM25([["a"] * n + ["x"] * (10 - n) for n in range(1, 11)], b=0.0).scores(["a"])
    assert np.all(np.diff(s) > 0) and np.all(np.diff(np.diff(s)) < 0)
    with pytest.raises(ValueError, match="query is empty"):
        index.scores([])
    with pytest.raises(ValueError, match="index is empty"):
        BM25([])
    with pytest.raises(TypeError, match="tokenize"):
        index.scores("a b")
    with pytest.raises(ValueError, match="k1"):
        BM25(docs, b=1.5)


def test_tokenize():
    assert tokenize("Don't use float16!") == ["don", "t", "use", "float16"]
    assert tokenize("held_out über-Cool ΑΘΗΝΑ") == ["held", "out", "über", "cool", "αθηνα"]
    assert tokenize(" \n\t") == []


def test_dense_top_k_matches_a_brute_force_cosine_ranking():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((50, 8)) * rng.uniform(0.1, 10, size=(50, 1))
    queries = rng.standard_normal((4, 8))
    indices, scores = dense_top_k(queries, docs, 6)
    for q, row, row_scores in zip(queries, indices, scores):
        cos = [float(q @ d / (np.linalg.norm(q) * np.linalg.norm(d))) for d in docs]
        expected = sorted(range(len(docs)), key=lambda i: (-cos[i], i))[:6]
        assert row.tolist() == expected
        np.testing.assert_allclose(row_scores, [cos[i] for i in expected], atol=1e-12)


def test_dense_top_k_breaks_ties_by_index_and_refuses_bad_input():
    docs = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
    indices, scores = dense_top_k(np.array([1.0, 0.0]), docs, 4)
    assert indices.tolist() == [0, 2, 3, 1] and scores.tolist() == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="index is empty"):
        dense_top_k(np.ones(2), np.zeros((0, 2)), 1)
    with pytest.raises(ValueError, match="k=5"):
        dense_top_k(np.ones(2), docs, 5)
    with pytest.raises(ValueError, match="length 0"):
        dense_top_k(np.zeros(2), docs, 1)
    with pytest.raises(ValueError, match="do not match"):
        dense_top_k(np.ones(3), docs, 1)


def test_reciprocal_rank_fusion():
    indices, scores = reciprocal_rank_fusion([[0, 5, 2], [5, 0, 7]], k=60)
    assert indices.tolist() == [0, 5, 2, 7]                   # 0 and 5 tie: smaller index first
    np.testing.assert_allclose(scores, [1 / 61 + 1 / 62, 1 / 61 + 1 / 62, 1 / 63, 1 / 63])
    assert reciprocal_rank_fusion([[3, 1, 2]])[0].tolist() == [3, 1, 2]
    with pytest.raises(ValueError, match="no rankings"):
        reciprocal_rank_fusion([])
    with pytest.raises(ValueError, match="twice"):
        reciprocal_rank_fusion([[1, 1]])


def test_metrics():
    assert recall_at_k([3, 1, 4, 5, 9], [1, 9], 2) == 0.5
    assert recall_at_k([3, 1, 4, 5, 9], [1, 9], 5) == 1.0
    assert recall_at_k([3], [1], 10) == 0.0
    assert reciprocal_rank([3, 1, 4], [1, 4]) == 0.5
    assert reciprocal_rank([3, 1, 4], [7]) == 0.0
    with pytest.raises(ValueError, match="no relevant"):
        recall_at_k([1], [], 1)
    with pytest.raises(ValueError, match="k=0"):
        recall_at_k([1], [1], 0)


def test_rank_sections_and_evaluate():
    sections = ["a", "a", "b", "c"]
    assert retrieval.rank_sections([1, 0, 3, 2], sections) == ["a", "c", "b"]
    figures = retrieval.evaluate([[3, 2, 0], [0, 1, 2]], sections, ["b", "a"])
    assert figures == {"recall@1": 0.5, "recall@5": 1.0, "mrr": 0.75}
