"""The Part III corpus: its fixed order and split, and the character tokenizer's round trip and errors."""
import numpy as np
import pydoc_data.topics
import pytest

from llmref import corpus


def test_the_corpus_is_the_topics_in_sorted_key_order_joined_by_a_blank_line():
    text = corpus.text()
    topics = pydoc_data.topics.topics
    first, second = sorted(topics)[:2]
    assert text.startswith(topics[first] + "\n\n" + topics[second][:50])
    assert len(text) == sum(map(len, topics.values())) + 2 * (len(topics) - 1)


def test_the_split_is_the_first_ninety_percent_and_the_rest():
    text = corpus.text()
    train, held_out = corpus.split(text)
    assert train + held_out == text
    assert len(train) == int(0.9 * len(text))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        corpus.split(text, 1.0)


def test_the_tokenizer_round_trips_and_covers_the_held_out_text():
    data = corpus.load()
    tok = data.tokenizer
    assert tok.decode(data.held_out) == corpus.split()[1]
    assert tok.chars == tuple(sorted(tok.chars)) and len(set(tok.chars)) == tok.vocab_size
    assert data.train.dtype == np.int64 and data.train.max() < tok.vocab_size
    assert data.fingerprint == corpus.fingerprint()


def test_the_tokenizer_names_what_it_cannot_handle():
    tok = corpus.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) is not in"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="token id 7 is outside the vocabulary"):
        tok.decode([0, 7])


def test_windows_are_non_overlapping_and_shifted_by_one():
    tokens = np.arange(23)
    w = corpus.windows(tokens, 5)
    assert w.shape == (4, 2, 5)
    assert (w[:, 1] == w[:, 0] + 1).all()
    assert (w[:, 0].reshape(-1) == np.arange(20)).all()
    with pytest.raises(ValueError, match="too few"):
        corpus.windows(np.arange(5), 5)
