"""Count-based word vectors in NumPy: co-occurrence counts -> PPMI -> truncated SVD.

Used by the book's chapter on vectors and similarity (book/01-theory/01-vectors.md) and by
the attention chapter, which needs honest word vectors for a real sentence. Everything is
deterministic: the same text gives the same vectors, bit for bit, on the same machine.

The recipe is the classic one (Levy, Goldberg and Dagan, 2015, "Improving distributional
similarity with lessons learned from word embeddings"):

1. count how often each pair of words appears within a few positions of each other;
2. turn the counts into positive pointwise mutual information (PPMI), which keeps only the
   pairs seen together more often than chance would predict;
3. keep the top singular directions of the PPMI matrix: each word becomes a short dense
   vector, and words used in similar contexts get vectors pointing in similar directions.

Hand-written (not generated from a solution notebook); tests in tests/test_llmref_word_vectors.py.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

# Lower-case words and Python identifiers: "__init__" and "global_stmt" stay single tokens.
_TOKEN = re.compile(r"[a-z_][a-z0-9_]*")


def pydoc_corpus() -> str:
    """CPython's own documentation topics (pydoc_data.topics, ~465k characters of English).

    The topics are joined in sorted key order so that the text does not depend on dict order.
    """
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n".join(topics[key] for key in sorted(topics))


def tokenize(text: str) -> list[str]:
    """Split text into lower-case word tokens; punctuation and digits-only runs are dropped.

    >>> tokenize("The int() and float() types; __init__ is called.")
    ['the', 'int', 'and', 'float', 'types', '__init__', 'is', 'called']
    """
    return _TOKEN.findall(text.lower())


def build_vocab(tokens: list[str], size: int, min_count: int = 1) -> list[str]:
    """The `size` most frequent tokens seen at least `min_count` times, most frequent first.

    Ties are broken alphabetically so that the vocabulary is the same on every run.
    """
    counts = Counter(tokens)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return ranked[:size]


def cooccurrence_matrix(tokens: list[str], vocab: list[str], window: int = 4,
                        harmonic: bool = True) -> np.ndarray:
    """Symmetric (len(vocab), len(vocab)) matrix of how often two words occur near each other.

    Every pair of tokens at distance 1..`window` in `tokens` adds to both C[a, b] and C[b, a];
    with `harmonic` the pair adds 1/distance (a neighbour counts more than a word four places
    away, as in GloVe), otherwise 1. Tokens outside `vocab` are skipped but still take up
    their position, so they do not bring distant words together.
    """
    index = {word: i for i, word in enumerate(vocab)}
    ids = np.array([index.get(t, -1) for t in tokens], dtype=np.int64)
    n = len(vocab)
    flat = np.zeros(n * n)
    for distance in range(1, window + 1):
        a, b = ids[:-distance], ids[distance:]
        keep = (a >= 0) & (b >= 0)
        a, b = a[keep], b[keep]
        weight = 1.0 / distance if harmonic else 1.0
        # bincount over flattened (row, column) indices: a fast, exact np.add.at.
        flat += weight * np.bincount(a * n + b, minlength=n * n)
        flat += weight * np.bincount(b * n + a, minlength=n * n)
    return flat.reshape(n, n)


def ppmi(counts: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    """Positive pointwise mutual information of a co-occurrence count matrix.

    PMI(w, c) = log( P(w, c) / (P(w) P_alpha(c)) ) with P(w, c) = C[w, c] / sum(C),
    P(w) the row marginal and P_alpha(c) proportional to (column count) ** alpha. alpha < 1
    ("context distribution smoothing") raises the probability of rare contexts a little,
    which stops them from getting huge PMI values. Negative and undefined (count 0) values
    become 0.
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    p_word = counts.sum(axis=1) / total
    context = counts.sum(axis=0) ** alpha
    p_context = context / context.sum()
    expected = np.outer(p_word, p_context)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts / total / expected)
    # log(0) = -inf for pairs never seen, nan for words never seen at all: both carry no signal.
    return np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)


def truncated_svd(matrix: np.ndarray, k: int, n_iter: int = 4, oversample: int = 10,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-`k` singular triplets (U, S, Vt) of `matrix` by randomized subspace iteration.

    Halko, Martinsson and Tropp (2011): multiply by a seeded random matrix, sharpen the
    subspace with `n_iter` power iterations, then take an exact SVD of the small projected
    matrix. Much faster than a full SVD when k is small. Signs are fixed so that the largest
    entry of each column of U is positive, which makes the result reproducible.
    """
    matrix = np.asarray(matrix, dtype=float)
    rng = np.random.default_rng(seed)
    width = min(k + oversample, min(matrix.shape))
    basis = matrix @ rng.standard_normal((matrix.shape[1], width))
    for _ in range(n_iter):
        # Re-orthonormalise between multiplications so that small directions are not lost
        # to rounding error.
        basis, _ = np.linalg.qr(basis)
        basis = matrix @ (matrix.T @ basis)
    basis, _ = np.linalg.qr(basis)
    small_u, s, vt = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    u = basis @ small_u
    u, s, vt = u[:, :k], s[:k], vt[:k]
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    return u * signs, s, vt * signs[:, None]


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of the angle between the rows of `a` and the rows of `b`.

    Vectors give a scalar, (m, d) and (n, d) matrices give an (m, n) matrix. A zero vector
    has similarity 0 with everything (rather than nan).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return normalize(a) @ normalize(b).T


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row (or a single vector) to unit Euclidean length; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=float)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


@dataclass
class WordVectors:
    """Words and their vectors: row i of `vectors` belongs to `words[i]`.

    `counts[i]` is how often `words[i]` occurred in the training text.
    """

    words: list[str]
    vectors: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        self.index = {word: i for i, word in enumerate(self.words)}

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.index[word]]

    def neighbours(self, word: str, k: int = 5) -> list[tuple[str, float]]:
        """The k words with the highest cosine similarity to `word` (itself excluded)."""
        return nearest_neighbours(self.vectors, self.words, self[word], k=k, exclude={word})


def nearest_neighbours(vectors: np.ndarray, words: list[str], query: np.ndarray, k: int = 5,
                       exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, float]]:
    """The k (word, cosine similarity) pairs closest to the `query` vector, best first.

    Ties are broken by position in `words` (the more frequent word first, for a vocabulary
    from build_vocab). Words in `exclude` are skipped.
    """
    similarity = cosine_similarity(vectors, query)
    # A stable sort on -similarity keeps equal scores in vocabulary order.
    order = np.argsort(-similarity, kind="stable")
    found = [(words[i], float(similarity[i])) for i in order if words[i] not in exclude]
    return found[:k]


def train_word_vectors(text: str | None = None, vocab_size: int = 2000, window: int = 4,
                       dim: int = 50, alpha: float = 0.75, seed: int = 0) -> WordVectors:
    """Word vectors for the `vocab_size` most frequent words of `text` (default: pydoc_corpus()).

    A word's vector is its row of U * sqrt(S), the truncated SVD of the PPMI matrix; the
    square root splits the singular values evenly between words and contexts, which usually
    gives better similarities than U * S. Takes about a second for the default settings.
    """
    tokens = tokenize(pydoc_corpus() if text is None else text)
    vocab = build_vocab(tokens, vocab_size)
    counts = Counter(tokens)
    u, s, _ = truncated_svd(ppmi(cooccurrence_matrix(tokens, vocab, window), alpha), dim, seed=seed)
    return WordVectors(words=vocab, vectors=u * np.sqrt(s),
                       counts=np.array([counts[w] for w in vocab], dtype=np.int64))
