"""Character n-gram language models by counting, with additive smoothing.

The baselines every neural model in the course is compared with: Part I introduces them
(book/01-theory/02-probability.md) and Part III puts the GPT's held-out bits per
character next to them. Hand-written; tests in tests/test_llmref_ngram.py.
"""
from __future__ import annotations

import numpy as np

from llmref.probability import cross_entropy


def contexts(ids: np.ndarray, n: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each t >= n-1: the n-1 preceding ids as one number (base vocab_size), and ids[t]."""
    ids = np.asarray(ids, dtype=np.int64)
    ctx = np.zeros(len(ids) - n + 1, dtype=np.int64)
    for k in range(n - 1):
        ctx = ctx * vocab_size + ids[k: len(ids) - n + 1 + k]
    return ctx, ids[n - 1:]


def fit(ids: np.ndarray, n: int, vocab_size: int, alpha: float = 0.1) -> np.ndarray:
    """Smoothed log q(next | context), shape (vocab_size ** (n-1), vocab_size).

    Every count gets a pseudo-count alpha: an unseen continuation keeps a small probability
    instead of an infinite loss on held-out text.
    """
    if vocab_size ** n > 50_000_000:
        raise ValueError(f"a {n}-gram table over {vocab_size} symbols has {vocab_size ** n:,} "
                         "cells; use a smaller n or vocabulary")
    ctx, nxt = contexts(ids, n, vocab_size)
    counts = np.bincount(ctx * vocab_size + nxt, minlength=vocab_size ** n)
    counts = counts.reshape(vocab_size ** (n - 1), vocab_size) + alpha
    return np.log(counts / counts.sum(axis=1, keepdims=True))


def nats_per_token(log_q: np.ndarray, ids: np.ndarray, n: int, chunk: int = 20_000) -> float:
    """Mean -ln q(x_t | context) over a text (the first n-1 tokens have no full context)."""
    vocab_size = log_q.shape[1]
    ctx, nxt = contexts(ids, n, vocab_size)
    total = 0.0
    for start in range(0, len(nxt), chunk):
        piece = slice(start, start + chunk)
        # Rows of log_q are normalised log-probabilities, unchanged by log_softmax: valid logits.
        total += cross_entropy(log_q[ctx[piece]], nxt[piece]) * len(nxt[piece])
    return total / len(nxt)


def bits_per_token(log_q: np.ndarray, ids: np.ndarray, n: int) -> float:
    return nats_per_token(log_q, ids, n) / np.log(2)
