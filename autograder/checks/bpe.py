"""Checks for exercise 08_bpe: a byte-level byte-pair-encoding (BPE) tokenizer.

The learner writes ``merge_pair(ids, pair, new_id)``, ``train_bpe(data, num_merges)``,
``encode(text, merges)`` and ``decode(ids, merges)``. Every check compares with
:mod:`llmref.bpe` on seeded inputs: slices of the course corpus (``llmref.corpus.text()``),
hand-made ties, and seeded random bytes and Unicode strings (accents, CJK, emoji). The
reference itself is tested against Hugging Face ``tokenizers`` in tests/test_llmref_bpe.py.

Token ids are integers, so every comparison is exact: there is no tolerance to state.
When a result differs, the check looks for the first place where it does and names the
likeliest cause: a tie broken the wrong way, overlapping pairs not counted, a new id
numbered off by one, merges applied in the wrong order, a token decoded as text.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np

from llmref import corpus
from llmref.bpe import decode as reference_decode
from llmref.bpe import encode as reference_encode
from llmref.bpe import merge_pair as reference_merge_pair
from llmref.bpe import train_bpe as reference_train

from ._core import CheckFailure, call_learner, fail, passed, refuse_shortcuts, seeded

# Tokenizer libraries that would train, encode or decode for the learner.
SHORTCUTS = {"tokenizers": "Hugging Face tokenizers", "transformers": "transformers",
             "tiktoken": "tiktoken", "sentencepiece": "sentencepiece"}
WHY_BY_HAND = ("Write it in plain Python: counting pairs, merging them and replaying the merges "
               "is the exercise, and it is how every one of those libraries works inside.")

Function = Callable[..., Any]

# Characters the random Unicode strings are drawn from: 1-byte ASCII, 2-byte accented
# letters, 3-byte CJK and 4-byte emoji, so that tokens can end inside a character.
ASCII = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ.,;:!?()'\"-_\n\t0123456789"
ACCENTS = "éèêëàâäçñöüßøåÉÀ"
CJK = "漢字日本語中文字符编码"
EMOJI = "😀🚀🎉🐍👍🏽"
POOLS = (ASCII, ACCENTS, CJK, EMOJI)


# --------------------------------------------------------------------------- inputs

@functools.cache
def _corpus() -> str:
    return corpus.text()


def corpus_slice(seed: int, num_chars: int) -> str:
    """`num_chars` consecutive characters of the course corpus, at a seeded offset."""
    text = _corpus()
    start = int(seeded(seed).integers(0, len(text) - num_chars))
    return text[start:start + num_chars]


def random_unicode(rng: np.random.Generator, length: int) -> str:
    """A string mixing ASCII, accented letters, CJK and emoji (mostly ASCII, like real text)."""
    pools = rng.choice(len(POOLS), size=length, p=[0.55, 0.2, 0.15, 0.1])
    return "".join(POOLS[k][rng.integers(len(POOLS[k]))] for k in pools)


def random_bytes(rng: np.random.Generator, length: int) -> bytes:
    """Arbitrary bytes, most of them not valid UTF-8."""
    return rng.integers(0, 256, size=length).astype(np.uint8).tobytes()


@functools.cache
def training_text(seed: int, num_chars: int) -> bytes:
    """Corpus text plus some Unicode, so that merges also build pieces of multi-byte characters."""
    rng = seeded(seed + 7919)
    unicode_part = random_unicode(rng, num_chars // 6)
    return (corpus_slice(seed, num_chars) + unicode_part * 3).encode("utf-8")


@functools.cache
def reference_merges(seed: int, num_chars: int, num_merges: int) -> tuple[tuple[int, int], ...]:
    return tuple(reference_train(training_text(seed, num_chars), num_merges))


# --------------------------------------------------------------------------- results

def _show(ids: Sequence[int], limit: int = 12) -> str:
    ids = list(ids)
    return str(ids) if len(ids) <= limit else f"[{', '.join(map(str, ids[:limit]))}, ...] ({len(ids)} ids)"


def _as_int(value: Any) -> int | None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def as_ids(value: Any, what: str, name: str) -> list[int]:
    """A returned sequence of token ids as a list of Python ints, or fail saying why."""
    __tracebackhide__ = True
    if value is None:
        fail(f"{what} is None. Does `{name}` end with a `return` statement?")
    if isinstance(value, (str, bytes, bytearray)):
        fail(f"{what} should be a list of int token ids, but it is {type(value).__name__} "
             f"{value[:20]!r}.")
    try:
        items = list(value)
    except TypeError:
        fail(f"{what} should be a list of int token ids, but it is a {type(value).__name__}.")
    ids = []
    for k, item in enumerate(items):
        number = _as_int(item)
        if number is None:
            fail(f"{what} should hold ints, but item {k} is {item!r} ({type(item).__name__}).")
        ids.append(number)
    return ids


def as_merges(value: Any, name: str) -> list[tuple[int, int]]:
    """The learner's merges as a list of (int, int), or fail saying why."""
    __tracebackhide__ = True
    if value is None:
        fail(f"`{name}` returned None. It should end with `return merges`.")
    if isinstance(value, (str, bytes, bytearray, dict)):
        fail(f"`{name}` should return a list of pairs (tuples of two ints), but returned "
             f"a {type(value).__name__}.")
    try:
        items = list(value)
    except TypeError:
        fail(f"`{name}` should return a list of pairs, but returned a {type(value).__name__}.")
    merges = []
    for k, item in enumerate(items):
        try:
            pair = tuple(item)
        except TypeError:
            pair = ()
        numbers = [_as_int(x) for x in pair]
        if len(numbers) != 2 or None in numbers:
            fail(f"Merge {k} is {item!r}; every merge should be a pair of two int token ids, "
                 "e.g. (101, 32).")
        merges.append((numbers[0], numbers[1]))
    return merges


def _pair_counts(ids: Sequence[int]) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _pretty(pair: tuple[int, int], vocab: list[bytes] | None = None) -> str:
    if vocab is None or max(pair) >= len(vocab) or min(pair) < 0:
        return str(pair)
    return f"{pair} = {vocab[pair[0]]!r} + {vocab[pair[1]]!r}"


def _vocab(merges: Sequence[tuple[int, int]]) -> list[bytes]:
    vocab = [bytes([b]) for b in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab


# --------------------------------------------------------------------------- merge_pair

# (ids, pair, new_id, expected, what the case is about): the cases every right answer meets.
MERGE_CASES = [
    ([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9],
     "every occurrence of the pair becomes one new_id: both ids of it are replaced"),
    ([7, 1, 2, 3], (1, 2), 9, [7, 9, 3], "ids outside the pair are kept, in order"),
    ([3, 1, 2, 1], (1, 2), 9, [3, 9, 1],
     "the last id is kept even when it starts no pair (it equals pair[0] here)"),
    ([5, 5, 5], (5, 5), 9, [9, 5],
     "occurrences never overlap: in 5 5 5 the first two form the pair, the third 5 stays"),
    ([5, 5, 5, 5], (5, 5), 9, [9, 9], "5 5 5 5 holds (5, 5) twice, side by side"),
    ([1, 2], (2, 1), 9, [1, 2], "the order inside a pair matters: (2, 1) is not (1, 2)"),
    ([4], (4, 4), 9, [4], "one id holds no pair"),
    ([], (1, 2), 9, [], "an empty sequence stays empty"),
]


def _check_merge_case(fn: Function, ids: list[int], pair: tuple[int, int], new_id: int,
                      expected: list[int], about: str) -> None:
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "merge_pair")
    given = list(ids)
    with refuse_shortcuts(SHORTCUTS, name, WHY_BY_HAND):
        returned = call_learner(fn, given, pair, new_id, name=name)
    got = as_ids(returned,
                 f"The result of {name}({_show(ids)}, {pair}, {new_id})", name)
    if given != ids:
        fail(f"`{name}` changed the list it was given: {_show(ids)} became {_show(given)}. "
             "Build and return a new list; the caller still needs the old one.")
    if got == expected:
        return
    call = f"{name}({_show(ids)}, {pair}, {new_id}) returned {_show(got)}, expected {_show(expected)}"
    if expected and ids and expected[-1] == ids[-1] and got == expected[:-1]:
        fail(f"{call}: the last id is missing. The loop must run to the end of `ids`, also "
             "when no pair starts at the last position.")
    if len(got) == len(ids) and new_id in got:
        fail(f"{call}: the sequence did not get shorter. A match uses up both ids: append "
             "new_id once and move past both of them (two positions on).")
    fail(f"{call}. What this case checks: {about}.")


def check_merge_pair(fn: Function, *, seed: int = 0, cases: int = 20) -> None:
    """Hand-made edge cases (overlapping runs, a pair at the end), then seeded random ones."""
    __tracebackhide__ = True
    for ids, pair, new_id, expected, about in MERGE_CASES:
        _check_merge_case(fn, ids, pair, new_id, expected, about)
    rng = seeded(seed)
    for _ in range(cases):
        # A small alphabet makes pairs and runs like 3 3 3 frequent.
        ids = [int(x) for x in rng.integers(0, 4, size=int(rng.integers(0, 30)))]
        pair = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        new_id = 256 + int(rng.integers(0, 50))
        expected = reference_merge_pair(ids, pair, new_id)
        _check_merge_case(fn, ids, pair, new_id, expected,
                          "occurrences are replaced left to right, without overlapping")
    passed(f"merge_pair matches the reference on {len(MERGE_CASES)} edge cases and {cases} random sequences")


# --------------------------------------------------------------------------- train_bpe

def _first_occurrence(ids: Sequence[int], pairs: set[tuple[int, int]]) -> tuple[int, int] | None:
    return next((p for p in zip(ids, ids[1:]) if p in pairs), None)


def _shifted(merges: Sequence[tuple[int, int]], by: int) -> list[tuple[int, int]]:
    return [tuple(x + by if x >= 256 else x for x in pair) for pair in merges]


def diagnose_merges(data: bytes, num_merges: int, got: list[tuple[int, int]],
                    expected: list[tuple[int, int]], name: str = "train_bpe") -> None:
    """Fail with the likeliest cause of the first merge where `got` and `expected` differ."""
    __tracebackhide__ = True
    if got == expected:
        return
    where = f"{name}(data of {len(data)} bytes, num_merges={num_merges})"
    if len(got) > num_merges:
        fail(f"{where} returned {len(got)} merges, more than num_merges={num_merges}.")
    k = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
    # Replay the right merges up to k: the sequence the k-th round starts from.
    ids = list(data)
    for i, pair in enumerate(expected[:k]):
        ids = reference_merge_pair(ids, pair, 256 + i)
    counts = _pair_counts(ids)
    vocab = _vocab(expected[:k])
    best_count = max(counts.values(), default=0)
    rule = ("Count every adjacent pair, overlapping ones included (a a a holds (a, a) twice, "
            "as zip(ids, ids[1:]) counts)")

    makes_ids = any(x >= 256 for pair in got for x in pair)
    for by in (1, -1):
        if makes_ids and _shifted(got, -by)[:len(expected)] == expected[:len(got)]:
            fail(f"{where}: your merges are right, but every new id is {by:+d} from where it "
                 f"should be (merge {k} is {got[k] if k < len(got) else got[-1]}). Merge i "
                 "creates id 256 + i: the first merge makes 256, the next 257, and so on.")
    if k == len(expected):
        pair = got[k]
        fail(f"{where}: after {k} merges no pair occurs twice any more (the most frequent occurs "
             f"{best_count} time{'s' if best_count != 1 else ''}), so training must stop there; "
             f"yours went on with merge {k} = {_pretty(pair, vocab)}. Stop as soon as the best "
             "pair occurs fewer than 2 times: a merge of a pair seen once learns nothing reusable.")
    if k == len(got):
        pair = expected[k]
        fail(f"{where} stopped after {k} merges, but {_pretty(pair, vocab)} still occurs "
             f"{counts[pair]} times at that point. {rule}; stop only when the most frequent "
             f"pair occurs fewer than 2 times, or after num_merges merges.")

    mine, right = got[k], expected[k]
    if max(mine) >= 256 + k or min(mine) < 0:
        fail(f"{where}: merge {k} is {mine}, but after {k} merges the ids run from 0 to "
             f"{255 + k}: id {max(mine) if max(mine) >= 256 + k else min(mine)} does not exist "
             f"yet. Merge i creates id 256 + i. (Expected {_pretty(right, vocab)}.)")
    mine_count, right_count = counts.get(mine, 0), counts[right]
    done = "merge 0 is right" if k == 1 else f"merges 0 to {k - 1} are right"
    head = (f"{where}: {done}, but merge {k} is {_pretty(mine, vocab)} "
            f"where {_pretty(right, vocab)} was expected. ") if k else (
            f"{where}: the first merge is {_pretty(mine, vocab)} where "
            f"{_pretty(right, vocab)} was expected. ")
    if mine_count == right_count:
        tied = sorted(p for p, c in counts.items() if c == right_count)
        shown = ", ".join(map(str, tied[:6])) + (", ..." if len(tied) > 6 else "")
        largest, first = mine == max(tied), mine == _first_occurrence(ids, set(tied))
        seen_first = ("the pair that occurs first in the sequence (what max() over a dict's "
                      "counts gives: dicts keep insertion order)")
        if largest and first:
            how = f"Yours took the largest pair, which is also {seen_first}."
        elif largest:
            how = "Yours took the largest pair."
        elif first:
            how = f"Yours took {seen_first}."
        else:
            how = "Yours took another one."
        fail(head + f"Pairs {shown} all occur {right_count} times: a tie. Ties go to the "
             f"smallest pair, compared as a tuple of ints, so the result never depends on dict "
             f"order. {how}")
    if mine_count == 0:
        after = {0: "in the data", 1: "in the sequence after the first merge"}.get(
            k, f"in the sequence after the first {k} merges")
        fail(head + f"Your pair does not occur {after}. "
             "After each merge, replace the pair in the sequence (with merge_pair) and count "
             "again on the new sequence.")
    if mine_count < right_count:
        fail(head + f"{_pretty(right, vocab)} occurs {right_count} times, yours only "
             f"{mine_count}. {rule}.")
    fail(head + f"Yours occurs {mine_count} times, the expected one {right_count}. {rule}.")


def _train(fn: Function, data: bytes, num_merges: int) -> list[tuple[int, int]]:
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "train_bpe")
    with refuse_shortcuts(SHORTCUTS, name, WHY_BY_HAND):
        returned = call_learner(fn, bytes(data), num_merges, name=name)
    got = as_merges(returned, name)
    diagnose_merges(data, num_merges, got, reference_train(data, num_merges), name)
    return got


def check_train_corpus(fn: Function, *, seed: int = 0, num_chars: int = 3000,
                       num_merges: int = 60) -> None:
    """The merges learnt from a slice of the course corpus equal the reference's, in order."""
    __tracebackhide__ = True
    data = corpus_slice(seed, num_chars).encode("utf-8")
    got = _train(fn, data, num_merges)
    passed(f"train_bpe learns the reference's {len(got)} merges from {len(data)} bytes of the corpus")


# Hand-made ties, each with what a wrong rule would pick instead.
TIE_CASES = [
    # (c, d), (d, a) and (a, b) occur twice each: first occurrence (c, d), largest (d, a),
    # smallest (a, b), the right one.
    b"cdabcdab",
    # (a, a) occurs twice counting the overlap, as often as (b, c): the smallest, (a, a), wins.
    b"aaabcbc",
    # Every pair of a a b b a a b b ...: (a, a), (a, b), (b, b), (b, a); many ties.
    b"aabbaabbaabbaab",
    # Ties between a created token and a byte: merge order decides the ids.
    b"xyzxyzyzxyzxy zy",
]


def check_train_ties(fn: Function, *, seed: int = 0, random_cases: int = 0,
                     length: int = 200) -> None:
    """Ties go to the smallest pair; overlapping pairs count; seeded random small-alphabet texts."""
    __tracebackhide__ = True
    cases = list(TIE_CASES)
    rng = seeded(seed)
    alphabet = np.frombuffer(b"ab c", dtype=np.uint8)
    for _ in range(random_cases):
        cases.append(rng.choice(alphabet, size=length).tobytes())
    for data in cases:
        _train(fn, data, 20)
    passed(f"ties are broken by the smallest pair in all {len(cases)} tie cases")


def check_train_stops(fn: Function) -> None:
    """Training stops when no pair occurs twice, and handles num_merges=0 and tiny inputs."""
    __tracebackhide__ = True
    for data, num_merges in [(b"abcabc", 10), (b"abcd", 3), (b"aaaa", 5), (b"", 4), (b"z", 4),
                             (b"hello hello", 0)]:
        _train(fn, data, num_merges)
    passed("train_bpe stops when no pair occurs twice, and handles empty and tiny inputs")


# --------------------------------------------------------------------------- encode

def _encode(fn: Function, text: str | bytes, merges: Sequence[tuple[int, int]]) -> list[int]:
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "encode")
    kind = "str" if isinstance(text, str) else "bytes"
    try:
        with refuse_shortcuts(SHORTCUTS, name, WHY_BY_HAND):
            result = call_learner(fn, text, [tuple(p) for p in merges], name=name)
    except CheckFailure as failure:
        if kind == "bytes" and failure.__cause__ is not None:
            raise CheckFailure(f"{failure}\n`{name}` must accept bytes as well as str: only a "
                               "str is UTF-8 encoded first; bytes are already the starting "
                               "ids.") from failure.__cause__
        raise
    return as_ids(result, f"The result of {name}({kind} of length {len(text)}, merges)", name)


def diagnose_encoding(text: str | bytes, merges: Sequence[tuple[int, int]], got: list[int],
                      name: str = "encode") -> None:
    """Fail with the likeliest cause when `got` is not the reference encoding of `text`."""
    __tracebackhide__ = True
    expected = reference_encode(text, list(merges))
    if got == expected:
        return
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    kind = "str" if isinstance(text, str) else "bytes"
    where = f"{name}({kind} {text[:30]!r}{'...' if len(text) > 30 else ''}, {len(merges)} merges)"
    top = 255 + len(merges)
    outside = [(p, i) for p, i in enumerate(got) if not 0 <= i <= top]
    if outside:
        p, i = outside[0]
        extra = ""
        if isinstance(text, str) and any(ord(c) == i for c in text):
            extra = (f" {i} is the code point of {chr(i)!r}: a character's ord() is not a byte. "
                     "Start from the bytes of text.encode('utf-8').")
        fail(f"{where}: id {i} at position {p} is not a token of this vocabulary: valid ids are "
             f"0 to {top} (256 bytes and {len(merges)} merges).{extra}")
    decoded = reference_decode(got, list(merges))
    if decoded != data:
        if isinstance(text, str) and decoded == bytes(min(ord(c), 255) for c in text):
            fail(f"{where}: your ids spell the characters' code points, not their UTF-8 bytes. "
                 "Encode a str with text.encode('utf-8') first.")
        first = next((k for k, (a, b) in enumerate(zip(decoded, data)) if a != b),
                     min(len(decoded), len(data)))
        fail(f"{where}: your ids decode to different bytes than the input's UTF-8 encoding "
             f"(first difference at byte {first}: {decoded[first:first + 8]!r} instead of "
             f"{data[first:first + 8]!r}). Check the new ids: merge i creates id 256 + i.")
    ranks = {pair: r for r, pair in enumerate(merges)}
    left = [(p, pair) for p, pair in enumerate(zip(got, got[1:])) if pair in ranks]
    if left:
        p, pair = left[0]
        fail(f"{where}: a learnt merge still applies to your result: {pair} at position {p} "
             f"is merge {ranks[pair]}. Keep merging until no adjacent pair is a learnt merge.")
    first = next(k for k, (a, b) in enumerate(zip(got + [None], expected + [None])) if a != b)
    fail(f"{where}: your ids decode to the right bytes but are not the reference's tokens "
         f"(from position {first}: {_show(got[first:first + 6])} instead of "
         f"{_show(expected[first:first + 6])}). Apply the merges by rank: repeatedly merge the "
         "pair present in the sequence whose merge was learnt earliest (lowest index in "
         "merges), not the leftmost or the most frequent one.")


def check_encode(fn: Function, *, seed: int = 0, num_chars: int = 3000, num_merges: int = 60,
                 unseen_chars: int = 1500) -> None:
    """Unseen corpus text and Unicode strings, as str and as bytes, equal the reference encoding."""
    __tracebackhide__ = True
    merges = reference_merges(seed, num_chars, num_merges)
    rng = seeded(seed + 1)
    texts: list[str | bytes] = [corpus_slice(seed + 1, unseen_chars), random_unicode(rng, 200), "", "a"]
    texts.append(texts[0].encode("utf-8"))
    texts.append(texts[1].encode("utf-8"))
    for text in texts:
        diagnose_encoding(text, merges, _encode(fn, text, merges), getattr(fn, "__name__", "encode"))
    passed(f"encode matches the reference on unseen text and Unicode, as str and as bytes, "
           f"with {len(merges)} merges")


# --------------------------------------------------------------------------- decode

def _decode(fn: Function, ids: list[int], merges: Sequence[tuple[int, int]]) -> bytes:
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "decode")
    with refuse_shortcuts(SHORTCUTS, name, WHY_BY_HAND):
        result = call_learner(fn, list(ids), [tuple(p) for p in merges], name=name)
    if result is None:
        fail(f"`{name}` returned None. It should end with `return` and the bytes.")
    if isinstance(result, str):
        fail(f"`{name}` returned a str; it should return bytes. Tokens are byte strings, and "
             "a sequence of them need not be valid UTF-8 (decode_text makes text of them).")
    if not isinstance(result, (bytes, bytearray)):
        fail(f"`{name}` should return bytes, but returned a {type(result).__name__}.")
    return bytes(result)


def _diagnose_decoding(fn_name: str, ids: list[int], merges, got: bytes, expected: bytes) -> None:
    __tracebackhide__ = True
    if got == expected:
        return
    call = f"{fn_name}({_show(ids)}, {len(merges)} merges)"
    if got == expected.decode("latin-1").encode("utf-8"):
        fail(f"{call} returned {got[:16]!r}, expected {expected[:16]!r}: each byte 128-255 came "
             "out as two bytes. The token of byte b is bytes([b]), one byte; chr(b).encode() "
             "is the UTF-8 encoding of the character U+00XX, not the byte.")
    if got == expected.decode("utf-8", errors="replace").encode("utf-8") or "\ufffd".encode() in got:
        fail(f"{call} returned {got[:16]!r}, expected {expected[:16]!r}: these tokens hold "
             "bytes that are not valid UTF-8 on their own, because a token boundary can split a "
             "multi-byte character. Join the tokens' bytes; never decode them as text one by one.")
    fail(f"{call} returned {got[:24]!r}, expected {expected[:24]!r}. The bytes of token 256 + i "
         "are the bytes of merges[i][0] followed by those of merges[i][1].")


def check_decode(fn: Function, *, seed: int = 0, num_chars: int = 3000, num_merges: int = 60) -> None:
    """Every single token, then sequences with characters split across tokens, decode exactly."""
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "decode")
    merges = list(reference_merges(seed, num_chars, num_merges))
    vocab = _vocab(merges)
    for token in range(len(vocab)):
        _diagnose_decoding(name, [token], merges, _decode(fn, [token], merges), vocab[token])
    rng = seeded(seed + 2)
    samples = [random_unicode(rng, 120).encode("utf-8"), random_bytes(rng, 60),
               corpus_slice(seed + 2, 400).encode("utf-8"), b""]
    for data in samples:
        ids = reference_encode(data, merges)
        _diagnose_decoding(name, ids, merges, _decode(fn, ids, merges), data)
    passed(f"decode turns all {len(vocab)} tokens and {len(samples)} sequences back into their bytes")


def check_decode_errors(fn: Function, *, num_merges: int = 5) -> None:
    """An id outside 0 .. 255 + len(merges), negative ones included, raises a ValueError naming it."""
    __tracebackhide__ = True
    name = getattr(fn, "__name__", "decode")
    merges = list(reference_merges(0, 3000, num_merges))
    top = 255 + len(merges)
    for bad in (-1, top + 1, top + 1000, -300):
        ids = [104, 105, bad]
        try:
            result = fn(list(ids), [tuple(p) for p in merges])
        except ValueError as error:
            if str(bad) not in str(error):
                fail(f"{name}({ids}, {len(merges)} merges) raised ValueError({str(error)!r}); "
                     f"the message should name the bad id ({bad}) and the valid range, 0 to {top}.")
            continue
        except NotImplementedError:
            fail(f"`{name}` still raises NotImplementedError. Replace the "
                 "`raise NotImplementedError()` line with your implementation.")
        except Exception as error:
            fail(f"{name}({ids}, {len(merges)} merges) raised {type(error).__name__}: {error}. It "
                 f"should raise ValueError naming the id {bad} and the valid range 0 to {top}, "
                 "before looking the id up.")
        else:
            hint = (" A negative index counts from the end of a Python list, so vocab[-1] "
                    "quietly returns the last token: check 0 <= id as well.") if bad < 0 else ""
            fail(f"{name}({ids}, {len(merges)} merges) returned {result!r} instead of raising "
                 f"ValueError: id {bad} is not a token (valid ids are 0 to {top}).{hint}")
    passed(f"decode rejects ids outside 0 to {top} with a ValueError that names them")


# --------------------------------------------------------------------------- round trip

def check_round_trip(encode_fn: Function, decode_fn: Function, *, seed: int = 0,
                     num_chars: int = 3000, num_merges: int = 60, samples: int = 12) -> None:
    """decode(encode(x)) == x for seeded random bytes and Unicode strings (accents, CJK, emoji)."""
    __tracebackhide__ = True
    merges = list(reference_merges(seed, num_chars, num_merges))
    rng = seeded(seed + 3)
    inputs: list[str | bytes] = []
    for k in range(samples):
        length = int(rng.integers(0, 80))
        inputs.append(random_unicode(rng, length) if k % 2 == 0 else random_bytes(rng, length))
    inputs.append(corpus_slice(seed + 3, 500))
    for text in inputs:
        ids = _encode(encode_fn, text, merges)
        data = text.encode("utf-8") if isinstance(text, str) else text
        back = _decode(decode_fn, ids, merges)
        if back != data:
            first = next((k for k, (a, b) in enumerate(zip(back, data)) if a != b),
                         min(len(back), len(data)))
            fail(f"decode(encode(x)) is not x for x = {text[:40]!r} ({type(text).__name__}): the "
                 f"bytes first differ at byte {first} ({back[first:first + 8]!r} instead of "
                 f"{data[first:first + 8]!r}). Encoding and decoding must be exact inverses; "
                 "the encode and decode tests above say which side is wrong.")
    passed(f"decode(encode(x)) == x for {len(inputs)} seeded inputs: random bytes, accents, CJK, emoji")
