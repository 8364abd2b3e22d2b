"""llmref.word_vectors against hand-computed values, direct formulas and NumPy's exact SVD."""
import math

import numpy as np
import pytest

from llmref import word_vectors as wv


# --- tokens and vocabulary -----------------------------------------------------------------

def test_tokenize_keeps_identifiers_and_drops_punctuation():
    assert wv.tokenize("The int() and float() types; __init__ is called 2 times.") == [
        "the", "int", "and", "float", "types", "__init__", "is", "called", "times"]


def test_vocab_is_by_frequency_then_alphabetical():
    tokens = "b a c b a d b".split()
    assert wv.build_vocab(tokens, 10) == ["b", "a", "c", "d"]
    assert wv.build_vocab(tokens, 2) == ["b", "a"]
    assert wv.build_vocab(tokens, 10, min_count=2) == ["b", "a"]


def test_corpus_is_the_pydoc_topics_in_a_fixed_order():
    text = wv.pydoc_corpus()
    assert len(text) > 100_000
    assert text == wv.pydoc_corpus()


# --- co-occurrence and PPMI ----------------------------------------------------------------

def test_cooccurrence_counts_a_tiny_text_by_hand():
    vocab = ["a", "b", "c"]
    # "a b a c", window 1: pairs (a,b) (b,a) (a,c), each counted in both directions.
    counts = wv.cooccurrence_matrix("a b a c".split(), vocab, window=1, harmonic=False)
    np.testing.assert_array_equal(counts, [[0, 2, 1], [2, 0, 0], [1, 0, 0]])
    # Window 2 with 1/distance weights adds (a,a) at distance 2 (both directions land on
    # the diagonal: 2 * 0.5) and (b,c) at distance 2.
    counts = wv.cooccurrence_matrix("a b a c".split(), vocab, window=2, harmonic=True)
    np.testing.assert_array_equal(counts, [[1, 2, 1], [2, 0, 0.5], [1, 0.5, 0]])


def test_out_of_vocabulary_tokens_keep_their_position():
    counts = wv.cooccurrence_matrix("a x b".split(), ["a", "b"], window=1)
    np.testing.assert_array_equal(counts, np.zeros((2, 2)))
    counts = wv.cooccurrence_matrix("a x b".split(), ["a", "b"], window=2)
    np.testing.assert_array_equal(counts, [[0, 0.5], [0.5, 0]])


def test_ppmi_of_a_two_word_example_by_hand():
    counts = np.array([[2.0, 1.0], [1.0, 0.0]])
    # total 4; P(w) = P(c) = (3/4, 1/4).
    # PMI(0,0) = log((2/4) / (9/16)) = log(8/9) < 0 -> 0; PMI(0,1) = log((1/4) / (3/16)) = log(4/3);
    # PMI(1,1): never seen -> 0.
    expected = np.array([[0.0, math.log(4 / 3)], [math.log(4 / 3), 0.0]])
    np.testing.assert_allclose(wv.ppmi(counts, alpha=1.0), expected, rtol=1e-12)


def test_ppmi_context_smoothing_matches_the_formula():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(6, 6)).astype(float)
    result = wv.ppmi(counts, alpha=0.75)
    total = counts.sum()
    for w in range(6):
        for c in range(6):
            p_wc = counts[w, c] / total
            p_w = counts[w].sum() / total
            p_c = counts[:, c].sum() ** 0.75 / (counts.sum(axis=0) ** 0.75).sum()
            want = max(math.log(p_wc / (p_w * p_c)), 0.0) if counts[w, c] > 0 else 0.0
            assert result[w, c] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_ppmi_of_a_word_never_seen_is_zero_not_nan():
    counts = np.array([[0.0, 0.0], [0.0, 3.0]])
    assert np.array_equal(wv.ppmi(counts), np.zeros((2, 2)))


# --- truncated SVD -------------------------------------------------------------------------

def test_truncated_svd_matches_numpy_on_a_decaying_spectrum():
    rng = np.random.default_rng(1)
    left, _ = np.linalg.qr(rng.standard_normal((80, 40)))
    right, _ = np.linalg.qr(rng.standard_normal((60, 40)))
    spectrum = 2.0 ** -np.arange(40)
    matrix = (left * spectrum) @ right.T
    u, s, vt = wv.truncated_svd(matrix, 5)
    # A spectrum halving at every step is well separated: the randomized result agrees with
    # the exact one to rounding error of the top singular value.
    np.testing.assert_allclose(s, spectrum[:5], rtol=1e-9)
    np.testing.assert_allclose(u.T @ u, np.eye(5), atol=1e-12)
    exact_u, exact_s, exact_vt = np.linalg.svd(matrix)
    # Singular vectors are defined up to sign: compare |cosines|.
    np.testing.assert_allclose(np.abs(np.sum(u * exact_u[:, :5], axis=0)), 1.0, atol=1e-9)
    np.testing.assert_allclose(u * s @ vt, (exact_u[:, :5] * exact_s[:5]) @ exact_vt[:5], atol=1e-9)


def test_truncated_svd_is_deterministic_with_fixed_signs():
    matrix = np.random.default_rng(2).standard_normal((30, 20))
    first, second = wv.truncated_svd(matrix, 4), wv.truncated_svd(matrix, 4)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
    u = first[0]
    assert np.all(u[np.abs(u).argmax(axis=0), np.arange(4)] > 0)


# --- similarity and neighbours -------------------------------------------------------------

def test_cosine_similarity_matches_the_direct_formula():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 7)), rng.standard_normal((5, 7))
    result = wv.cosine_similarity(a, b)
    assert result.shape == (4, 5)
    for i in range(4):
        for j in range(5):
            direct = sum(x * y for x, y in zip(a[i], b[j])) / (
                math.sqrt(sum(x * x for x in a[i])) * math.sqrt(sum(y * y for y in b[j])))
            assert result[i, j] == pytest.approx(direct, rel=1e-12)
    assert wv.cosine_similarity(a[0], 3.5 * a[0]) == pytest.approx(1.0)
    assert wv.cosine_similarity(a[0], -a[0]) == pytest.approx(-1.0)
    assert wv.cosine_similarity(np.zeros(7), a[0]) == 0.0


def test_nearest_neighbours_by_cosine_with_ties_in_vocabulary_order():
    words = ["x", "twice_x", "y", "minus_x", "also_y"]
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 5.0]])
    found = wv.nearest_neighbours(vectors, words, np.array([0.0, 1.0]), k=3)
    assert [w for w, _ in found] == ["y", "also_y", "x"]
    assert found[0][1] == pytest.approx(1.0) and found[2][1] == pytest.approx(0.0)
    vectors_of = wv.WordVectors(words, vectors, np.ones(5, dtype=int))
    # Length does not matter to cosine: twice_x is as close to x as can be.
    assert vectors_of.neighbours("x", k=1) == [("twice_x", pytest.approx(1.0))]


@pytest.fixture(scope="module")
def pydoc_vectors():
    return wv.train_word_vectors()


def test_trained_vectors_have_the_documented_shape(pydoc_vectors):
    vectors = pydoc_vectors
    assert vectors.vectors.shape == (2000, 50)
    assert vectors.words[:3] == ["the", "a", "is"]
    assert np.all(np.diff(vectors.counts) <= 0), "vocabulary is most frequent first"
    assert np.all(np.isfinite(vectors.vectors))


def test_trained_vectors_are_reproducible(pydoc_vectors):
    again = wv.train_word_vectors()
    assert again.words == pydoc_vectors.words
    assert np.array_equal(again.vectors, pydoc_vectors.vectors)


def test_pydoc_neighbours_that_hold_by_a_wide_margin(pydoc_vectors):
    # Only relations with a clear margin are tested; rankings further down the list move
    # with the vocabulary size and window and are not a property of the method.
    def near(word, k):
        return [w for w, _ in pydoc_vectors.neighbours(word, k)]

    assert near("true", 1) == ["false"]
    assert "float" in near("int", 5)
    assert "complex" in near("float", 3)
    assert "__new__" in near("__init__", 3)
    assert "valueerror" in near("exception", 5)
