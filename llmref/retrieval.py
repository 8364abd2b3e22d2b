# GENERATED from solutions/17_retrieval/17_retrieval.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""BM25 (Lucene's idf) with its tokenizer, cosine top-k retrieval, reciprocal rank fusion, recall@k and the reciprocal rank, and their assembly into BM25, dense and hybrid search over the book's passages: the reference for exercise 17_retrieval."""
import math
import re
from collections import Counter
from typing import Sequence

import numpy as np


WORD = re.compile(r"[^\W_]+")   # a run of letters and digits (str.isalnum), in any script


def tokenize(text: str) -> list[str]:
    """The words of text for BM25: lower-cased, each a maximal run of letters and digits
    (characters for which str.isalnum() is True); everything else, underscores included,
    separates words. "Don't use float16!" -> ["don", "t", "use", "float16"]."""
    return WORD.findall(text.lower())


class BM25:
    """Okapi BM25 over tokenised documents, with Lucene's idf, ln(1 + (N - n + 0.5) / (n + 0.5)).

    documents: a list of documents, each a list of tokens (tokenize's output). k1 sets how
    fast repeated occurrences of a term saturate; b how much a document's length, relative
    to the average, discounts its term counts (0: not at all, 1: fully).
    """

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75):
        if isinstance(documents, str) or len(documents) == 0:
            raise ValueError("the index is empty: BM25 needs a non-empty list of documents, "
                             "each a list of tokens")
        if any(isinstance(d, str) for d in documents):
            raise TypeError("each document must be a list of tokens, not a string: "
                            "pass [tokenize(text) for text in texts]")
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"k1={k1}, b={b}: BM25 needs k1 >= 0 and 0 <= b <= 1")
        self.k1, self.b = k1, b
        self.n_docs = len(documents)
        self.doc_len = np.array([len(d) for d in documents], dtype=np.float64)
        self.avgdl = float(self.doc_len.mean())
        self.tf = [Counter(d) for d in documents]                         # term -> count, per document
        self.df = Counter(term for d in documents for term in set(d))     # term -> documents holding it

    def idf(self, term: str) -> float:
        """ln(1 + (N - n + 0.5) / (n + 0.5)): N documents, n of them containing term. Always
        positive, even for a term in every document; largest for a term in none."""
        n = self.df.get(term, 0)
        return math.log(1 + (self.n_docs - n + 0.5) / (n + 0.5))

    def scores(self, query: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for a tokenised query, shape (N,), float64:

            sum over the query's terms t of idf(t) * f (k1 + 1) / (f + k1 (1 - b + b |d| / avgdl))

        with f the count of t in the document, |d| its length in tokens and avgdl the mean
        length. A term repeated in the query counts each time. An empty query raises ValueError.
        """
        if isinstance(query, str):
            raise TypeError("the query must be a list of tokens, not a string: pass tokenize(query)")
        if len(query) == 0:
            raise ValueError("the query is empty: it has no words to score the documents with")
        length_norm = self.k1 * (1 - self.b + self.b * self.doc_len / max(self.avgdl, 1e-12))
        total = np.zeros(self.n_docs)
        for term in query:
            f = np.array([counts.get(term, 0) for counts in self.tf], dtype=np.float64)
            total += self.idf(term) * f * (self.k1 + 1) / np.maximum(f + length_norm, 1e-12)
        return total


def dense_top_k(query_vectors: np.ndarray, doc_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k documents most similar to each query by cosine similarity.

    query_vectors: (Q, d) or (d,); doc_vectors: (N, d), the index. Neither needs to be of
    length 1 already. Returns (indices, scores), both (Q, k) (or (k,) for one query):
    document indices by decreasing cosine similarity, ties broken by the smaller index,
    and their cosine similarities (float64).
    """
    queries = np.asarray(query_vectors, dtype=np.float64)
    docs = np.asarray(doc_vectors, dtype=np.float64)
    if docs.ndim != 2 or docs.shape[0] == 0:
        raise ValueError(f"the index is empty (doc_vectors of shape {docs.shape}): "
                         "add documents, an (N, d) array with N >= 1, before searching")
    if queries.shape[-1] != docs.shape[1] or queries.ndim not in (1, 2):
        raise ValueError(f"queries of shape {queries.shape} do not match documents of dimension "
                         f"{docs.shape[1]}: pass (Q, {docs.shape[1]}) or ({docs.shape[1]},)")
    if not 1 <= k <= docs.shape[0]:
        raise ValueError(f"k={k}: it must be between 1 and the number of documents, {docs.shape[0]}")
    if not (np.linalg.norm(docs, axis=1).all() and np.linalg.norm(np.atleast_2d(queries), axis=1).all()):
        raise ValueError("a vector of length 0 has no direction, so no cosine similarity: "
                         "remove it (or embed some text) before searching")
    q = np.atleast_2d(queries)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    similarity = q @ d.T                                        # (Q, N) cosines
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(similarity, order, axis=1)
    if queries.ndim == 1:
        return order[0], top[0]
    return order, top


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: float = 60) -> tuple[np.ndarray, np.ndarray]:
    """Fuse rankings (each a sequence of document indices, best first) by reciprocal rank.

    Each document gets the sum, over the rankings it appears in, of 1 / (k + rank), rank
    counted from 1; a ranking it is missing from adds nothing. Returns (indices, scores):
    every document of any ranking by decreasing fused score, ties broken by the smaller
    index, int64 and float64.
    """
    if len(rankings) == 0:
        raise ValueError("no rankings to fuse: pass at least one")
    if k < 0:
        raise ValueError(f"k={k}: reciprocal rank fusion needs k >= 0 (60 is the usual value)")
    if any(len(set(map(int, r))) != len(r) for r in rankings):
        raise ValueError("a ranking lists a document twice: each document has one rank per ranking")
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[int(doc)] = fused.get(int(doc), 0.0) + 1.0 / (k + rank)
    order = sorted(fused, key=lambda doc: (-fused[doc], doc))
    return np.array(order, dtype=np.int64), np.array([fused[doc] for doc in order], dtype=np.float64)


def recall_at_k(ranked: Sequence, relevant: Sequence, k: int) -> float:
    """The fraction of the relevant items found among the first k of ranked (best first)."""
    if len(relevant) == 0:
        raise ValueError("no relevant items: recall is undefined for a query with nothing to find")
    if k < 1:
        raise ValueError(f"k={k}: recall@k needs k >= 1")
    found = set(list(ranked)[:k]) & set(relevant)
    return len(found) / len(set(relevant))


def reciprocal_rank(ranked: Sequence, relevant: Sequence) -> float:
    """1 / rank of the first relevant item of ranked, ranks counted from 1; 0.0 if none is there.
    Its mean over a set of queries is the mean reciprocal rank (MRR)."""
    if len(relevant) == 0:
        raise ValueError("no relevant items: the reciprocal rank is undefined for a query with nothing to find")
    relevant = set(relevant)
    for rank, item in enumerate(ranked, start=1):
        if item in relevant:
            return 1.0 / rank
    return 0.0


def bm25_rankings(passages: Sequence[str], queries: Sequence[str], *, k1: float = 1.5, b: float = 0.75,
                  tokenize=tokenize, BM25=BM25) -> list[np.ndarray]:
    """For each query, every passage's index by decreasing BM25 score (ties: smaller index first)."""
    index = BM25([tokenize(p) for p in passages], k1=k1, b=b)
    return [np.argsort(-index.scores(tokenize(q)), kind="stable") for q in queries]


def dense_rankings(passage_vectors: np.ndarray, query_vectors: np.ndarray, *,
                   dense_top_k=dense_top_k) -> list[np.ndarray]:
    """For each query, every passage's index by decreasing cosine similarity."""
    indices, _ = dense_top_k(np.atleast_2d(query_vectors), passage_vectors, len(passage_vectors))
    return list(indices)


def hybrid_rankings(bm25: Sequence[np.ndarray], dense: Sequence[np.ndarray], *, k: float = 60,
                    reciprocal_rank_fusion=reciprocal_rank_fusion) -> list[np.ndarray]:
    """For each query, its BM25 and dense rankings fused by reciprocal rank fusion."""
    return [reciprocal_rank_fusion([r_bm25, r_dense], k=k)[0] for r_bm25, r_dense in zip(bm25, dense)]


def rank_sections(ranking: Sequence[int], sections: Sequence[str]) -> list[str]:
    """Passages ranked -> sections ranked: each section at the rank of its best passage."""
    seen: dict[str, None] = {}
    for i in ranking:
        seen.setdefault(sections[int(i)], None)
    return list(seen)


def evaluate(rankings: Sequence[Sequence[int]], sections: Sequence[str], gold: Sequence[str], *,
             recall_at_k=recall_at_k, reciprocal_rank=reciprocal_rank) -> dict[str, float]:
    """recall@1, recall@5 and MRR of passage rankings, one per question, when the answer to
    question i is section gold[i] and a passage counts for the section it belongs to."""
    ranked = [rank_sections(r, sections) for r in rankings]
    n = len(gold)
    return {"recall@1": sum(recall_at_k(r, [g], 1) for r, g in zip(ranked, gold)) / n,
            "recall@5": sum(recall_at_k(r, [g], 5) for r, g in zip(ranked, gold)) / n,
            "mrr": sum(reciprocal_rank(r, [g]) for r, g in zip(ranked, gold)) / n}
