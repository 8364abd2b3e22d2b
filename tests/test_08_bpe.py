"""The checks behind exercise 08_bpe, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference quickly, its inputs really contain the traps it
claims to test, and bad results fail in words, not tracebacks."""
from __future__ import annotations

import time

import numpy as np
import pytest

from autograder.checks import CheckFailure
from autograder.checks import bpe as checks
from llmref.bpe import decode, encode, merge_pair, train_bpe

CHECKS = {
    "merge_pair": lambda: checks.check_merge_pair(merge_pair),
    "train_corpus": lambda: checks.check_train_corpus(train_bpe),
    "train_ties": lambda: checks.check_train_ties(train_bpe, seed=1, random_cases=3),
    "train_stops": lambda: checks.check_train_stops(train_bpe),
    "encode": lambda: checks.check_encode(encode),
    "decode": lambda: checks.check_decode(decode),
    "decode_errors": lambda: checks.check_decode_errors(decode),
    "round_trip": lambda: checks.check_round_trip(encode, decode),
}


@pytest.mark.parametrize("name", CHECKS)
def test_reference_passes_each_check_quickly(name, capsys):
    start = time.perf_counter()
    CHECKS[name]()
    # About 0.1 s each on an idle machine; the margin is for a busy 2-core CI runner.
    assert time.perf_counter() - start < 2.0
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_the_hidden_cases_pass_too():
    checks.check_train_corpus(train_bpe, seed=201, num_chars=5000, num_merges=120)
    checks.check_train_corpus(train_bpe, seed=202, num_chars=800, num_merges=400)
    checks.check_encode(encode, seed=401, num_chars=5000, num_merges=150, unseen_chars=2500)
    checks.check_decode(decode, seed=501, num_chars=4000, num_merges=100)


# ----------------------------------------------------------------------- the inputs hold the traps

def _counts(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def test_first_tie_case_separates_the_three_tie_rules():
    counts = _counts(list(checks.TIE_CASES[0]))
    top = max(counts.values())
    tied = [p for p in counts if counts[p] == top]  # in order of first occurrence
    assert len({min(tied), max(tied), tied[0]}) == 3


def test_corpus_check_meets_a_tie_and_an_early_stop():
    data = checks.corpus_slice(0, 3000).encode("utf-8")
    ids, ties = list(data), 0
    for i, pair in enumerate(train_bpe(data, 60)):
        top = sorted(_counts(ids).values())[-2:]
        ties += top[0] == top[1]
        ids = merge_pair(ids, pair, 256 + i)
    assert ties >= 1
    # The hidden case with 400 merges on 800 characters runs out of repeated pairs.
    assert len(train_bpe(checks.corpus_slice(202, 800).encode("utf-8"), 400)) < 400


def test_decode_check_splits_characters_across_tokens():
    merges = list(checks.reference_merges(0, 3000, 60))
    rng = checks.seeded(2)
    ids = encode(checks.random_unicode(rng, 120), merges)
    pieces = [decode([i], merges) for i in ids]

    def valid(piece):
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    assert not all(valid(p) for p in pieces)
    # And some learnt token is itself a piece of a character, not a whole one.
    assert any(not valid(decode([256 + i], merges)) for i in range(len(merges)))


def test_random_unicode_covers_every_utf8_length():
    text = checks.random_unicode(checks.seeded(0), 400)
    assert {len(c.encode("utf-8")) for c in text} == {1, 2, 3, 4}


# ----------------------------------------------------------------------- bad results, clear failures

def _raises(*args, **kwargs):
    raise NotImplementedError()


AlwaysEqual = type("AlwaysEqual", (), {"__eq__": lambda self, other: True, "__iter__": lambda self: iter(())})

BAD = {
    "merge_pair stub": (lambda: checks.check_merge_pair(_raises), "still raises NotImplementedError"),
    "merge_pair returns None": (lambda: checks.check_merge_pair(lambda ids, pair, new: None),
                                "is None. Does `<lambda>` end with a `return` statement?"),
    "merge_pair returns a str": (lambda: checks.check_merge_pair(lambda ids, pair, new: "9 3 9"),
                                 "should be a list of int token ids"),
    "merge_pair returns floats": (lambda: checks.check_merge_pair(
        lambda ids, pair, new: [float(x) for x in merge_pair(ids, pair, new)]), "should hold ints"),
    "train stub": (lambda: checks.check_train_corpus(_raises), "still raises NotImplementedError"),
    "train returns None": (lambda: checks.check_train_corpus(lambda data, n: None), "returned None"),
    "train returns a dict": (lambda: checks.check_train_corpus(
        lambda data, n: dict(zip(train_bpe(data, n), range(n)))), "returned a dict"),
    "train returns triples": (lambda: checks.check_train_corpus(
        lambda data, n: [(a, b, 0) for a, b in train_bpe(data, n)]), "should be a pair of two int"),
    "train returns too many": (lambda: checks.check_train_corpus(
        lambda data, n: train_bpe(data, n) + [(1, 2)]), "more than num_merges=60"),
    "train returns an object equal to everything": (lambda: checks.check_train_corpus(
        lambda data, n: AlwaysEqual()), "stopped after 0 merges"),
    "train raises": (lambda: checks.check_train_corpus(lambda data, n: {}["x"]), "raised KeyError"),
    "encode stub": (lambda: checks.check_encode(_raises), "still raises NotImplementedError"),
    "encode returns a str": (lambda: checks.check_encode(lambda text, merges: "abc"),
                             "should be a list of int token ids"),
    "encode returns bytes only": (lambda: checks.check_encode(
        lambda text, merges: list(text.encode("utf-8") if isinstance(text, str) else text)),
        "a learnt merge still applies"),
    "decode stub": (lambda: checks.check_decode(_raises), "still raises NotImplementedError"),
    "decode returns a list": (lambda: checks.check_decode(lambda ids, merges: list(decode(ids, merges))),
                              "should return bytes, but returned a list"),
    "decode_errors stub": (lambda: checks.check_decode_errors(_raises), "still raises NotImplementedError"),
    "decode error without the id": (lambda: checks.check_decode_errors(
        lambda ids, merges: (_ for _ in ()).throw(ValueError("bad token"))), "should name the bad id"),
    "round trip with a lossy decode": (lambda: checks.check_round_trip(
        encode, lambda ids, merges: decode(ids, merges)[:-1]), "decode(encode(x)) is not x"),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_results_give_a_clear_failure(case):
    run, phrase = BAD[case]
    with pytest.raises(CheckFailure) as caught:
        run()
    assert phrase in str(caught.value)


def test_numpy_ids_are_accepted():
    checks.check_encode(lambda text, merges: np.array(encode(text, merges), dtype=np.int64))
    checks.check_merge_pair(lambda ids, pair, new: np.array(merge_pair(ids, pair, new), dtype=np.int64))


# ----------------------------------------------------------------------- the diagnoses

def test_shifted_ids_are_named():
    data = checks.corpus_slice(0, 3000).encode("utf-8")
    right = train_bpe(data, 60)
    shifted = [tuple(x + 1 if x >= 256 else x for x in pair) for pair in right]
    with pytest.raises(CheckFailure) as caught:
        checks.diagnose_merges(data, 60, shifted, right)
    assert "every new id is +1" in str(caught.value)


def test_a_merge_with_an_id_that_does_not_exist_yet_is_named():
    data = b"abababab cdcd"
    right = train_bpe(data, 5)
    wrong = [right[0], (256 + 5, 97)]
    with pytest.raises(CheckFailure) as caught:
        checks.diagnose_merges(data, 5, wrong, right)
    assert "does not exist yet" in str(caught.value)


def test_a_prefix_of_the_merges_is_not_called_shifted():
    data = checks.corpus_slice(0, 3000).encode("utf-8")
    right = train_bpe(data, 60)
    with pytest.raises(CheckFailure) as caught:
        checks.diagnose_merges(data, 60, right[:3], right)
    assert "stopped after 3 merges" in str(caught.value)


def test_encode_in_code_points_is_named():
    merges = list(checks.reference_merges(0, 3000, 60))
    with pytest.raises(CheckFailure) as caught:
        checks.diagnose_encoding("çà", merges, [231, 224])
    assert "code points" in str(caught.value)
