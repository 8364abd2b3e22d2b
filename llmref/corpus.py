"""The text Part III trains on, its fixed split, and the character-level tokenizer.

The corpus is CPython's own documentation, ``pydoc_data.topics.topics``, which ships with
every Python: its values in **sorted key order, joined by a blank line** ("\\n\\n"). The
first 90 % of the characters train, the last 10 % are held out. Every figure of Part III
(the tokenizer comparison, the GPT's held-out loss, the scaling sweep, the benchmark)
uses exactly this text and split, so that results stay comparable across versions of the
course. The text depends on the Python version (3.11 here): :func:`fingerprint` records
which one a result was measured on.

Hand-written (not generated from a solution notebook); tests in tests/test_llmref_corpus.py.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

TRAIN_FRACTION = 0.9


def text() -> str:
    """The whole corpus (~465k characters on Python 3.11)."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[key] for key in sorted(topics))


def split(corpus: str | None = None, train_fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """(train, held_out): the first `train_fraction` of the characters, and the rest.

    A cut by position, not a shuffle: held-out text is text the model has never seen a
    neighbour of, which is how a language model meets new documents.
    """
    corpus = text() if corpus is None else corpus
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    cut = int(len(corpus) * train_fraction)
    return corpus[:cut], corpus[cut:]


def fingerprint(corpus: str | None = None) -> str:
    """A short hash of the corpus, stored with every result measured on it."""
    corpus = text() if corpus is None else corpus
    return hashlib.sha256(corpus.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters it was built from.

    Built from the *whole* corpus, so that the held-out part has no unknown characters (a
    handful of rare symbols would otherwise have no id); the model still never trains on
    held-out text.
    """
    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, corpus: str) -> "CharTokenizer":
        return cls(tuple(sorted(set(corpus))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, string: str) -> np.ndarray:
        """Token ids (int64) of every character; an unknown character is named in the error."""
        index = self._index
        try:
            return np.fromiter((index[c] for c in string), dtype=np.int64, count=len(string))
        except KeyError as error:
            char = error.args[0]
            raise ValueError(f"character {char!r} (U+{ord(char):04X}) is not in this tokenizer's "
                             f"vocabulary of {self.vocab_size} characters; build the tokenizer from "
                             "a text that contains it") from None

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of a sequence of ids; an id outside the vocabulary is named in the error."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (valid ids are 0 to "
                             f"{self.vocab_size - 1}); was it produced by another tokenizer or model?")
        return "".join(self.chars[i] for i in ids)

    @property
    def _index(self) -> dict[str, int]:
        # Cached on the instance; the dataclass is frozen, so go through object.__setattr__.
        try:
            return self.__dict__["_index_cache"]
        except KeyError:
            index = {c: i for i, c in enumerate(self.chars)}
            object.__setattr__(self, "_index_cache", index)
            return index


@dataclass(frozen=True)
class Data:
    """The corpus as token arrays: what Part III's training and evaluation consume."""
    tokenizer: CharTokenizer
    train: np.ndarray      # int64 ids of the first 90 %
    held_out: np.ndarray   # int64 ids of the last 10 %
    fingerprint: str


def load(train_fraction: float = TRAIN_FRACTION) -> Data:
    """The character-level corpus, split and encoded: the one call Part III needs."""
    corpus = text()
    tokenizer = CharTokenizer.from_text(corpus)
    train, held_out = split(corpus, train_fraction)
    return Data(tokenizer, tokenizer.encode(train), tokenizer.encode(held_out), fingerprint(corpus))


def windows(tokens: Sequence[int] | np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping (inputs, targets) windows covering `tokens`, for evaluation.

    Returns an int64 array (n, 2, length): inputs are tokens[i:i+length], targets the same
    shifted by one. The last partial window is dropped (at most `length` tokens of ~46k).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n = (len(tokens) - 1) // length
    if n < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for one window of {length} (+1 target)")
    inputs = tokens[: n * length].reshape(n, length)
    targets = tokens[1: n * length + 1].reshape(n, length)
    return np.stack([inputs, targets], axis=1)
