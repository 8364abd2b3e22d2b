"""n-gram baselines: probabilities normalise, counting matches a direct count, and the
held-out loss of a bigram on a tiny text equals a hand computation."""
import math

import numpy as np
import pytest

from llmref import ngram


def test_rows_are_distributions_and_follow_the_counts():
    ids = np.array([0, 1, 0, 1, 0, 2])
    log_q = ngram.fit(ids, 2, 3, alpha=0.0 + 1e-12)
    assert np.allclose(np.exp(log_q).sum(axis=1), 1)
    # After 0 came 1, 1, 2: q(1|0) = 2/3, q(2|0) = 1/3.
    assert np.exp(log_q[0]) == pytest.approx([0, 2 / 3, 1 / 3], abs=1e-9)


def test_held_out_loss_matches_a_hand_computation():
    ids = np.array([0, 1, 0, 1])
    log_q = ngram.fit(ids, 2, 2, alpha=1.0)
    # pairs (0,1), (1,0), (0,1); counts + 1: after 0 -> {0: 1, 1: 3}, after 1 -> {0: 2, 1: 1}
    expected = -(math.log(3 / 4) + math.log(2 / 3)) / 2
    assert ngram.nats_per_token(log_q, np.array([0, 1, 0]), 2) == pytest.approx(expected)
    assert ngram.bits_per_token(log_q, np.array([0, 1, 0]), 2) == pytest.approx(expected / math.log(2))


def test_a_unigram_is_the_smoothed_frequency():
    ids = np.array([0, 0, 0, 1])
    log_q = ngram.fit(ids, 1, 2, alpha=0.5)
    assert np.exp(log_q[0]) == pytest.approx([3.5 / 5, 1.5 / 5])


def test_an_oversized_table_is_refused():
    with pytest.raises(ValueError, match="cells"):
        ngram.fit(np.zeros(10, dtype=np.int64), 5, 103)
