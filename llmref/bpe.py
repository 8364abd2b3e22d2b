# GENERATED from solutions/08_bpe/08_bpe.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Byte-level byte-pair encoding (BPE): training, encoding and decoding, in plain Python. The reference for exercise 08_bpe."""


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A new list in which every occurrence of `pair` in `ids` is replaced by `new_id`.

    Occurrences are taken left to right and never overlap: with pair (5, 5), [5, 5, 5]
    becomes [new_id, 5]. `ids` itself is not changed.
    """
    first, second = pair
    merged = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == first and ids[i + 1] == second:
            merged.append(new_id)
            i += 2  # both halves are used up: the next match can only start after them
        else:
            merged.append(ids[i])
            i += 1
    return merged


def train_bpe(data: bytes, num_merges: int) -> list[tuple[int, int]]:
    """Learn up to `num_merges` byte-pair merges from `data`, in the order learnt.

    Merge i replaces the pair merges[i] with the new token id 256 + i. Each round counts
    every adjacent pair of the current sequence (overlapping ones included, as
    zip(ids, ids[1:]) gives them) and merges the most frequent one; a tie goes to the
    smallest pair as a tuple of ints, so the result never depends on dict order. Training
    stops early when no pair occurs at least twice.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"train_bpe learns from bytes, but got {type(data).__name__}; "
                        "encode a text first: text.encode('utf-8')")
    if isinstance(num_merges, bool) or not isinstance(num_merges, int) or num_merges < 0:
        raise ValueError(f"num_merges must be an int >= 0, but got {num_merges!r}")
    ids = list(data)
    merges = []
    for i in range(num_merges):
        counts = {}
        for pair in zip(ids, ids[1:]):  # overlapping: 5 5 5 holds (5, 5) twice
            counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        # The most frequent pair; among equally frequent ones, the smallest.
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        if counts[best] < 2:  # no pair repeats: a merge would memorise a single spot
            break
        merges.append(best)
        ids = merge_pair(ids, best, 256 + i)
    return merges


def encode(text: str | bytes, merges: list[tuple[int, int]]) -> list[int]:
    """The token ids of `text` (a str is UTF-8 encoded first), using the learnt `merges`.

    Repeatedly merges the adjacent pair whose merge was learnt earliest (lowest index in
    `merges`), until no adjacent pair is a learnt merge.
    """
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"encode takes a str or bytes, but got {type(text).__name__}")
    ids = list(text.encode("utf-8")) if isinstance(text, str) else list(text)
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    while True:
        present = [pair for pair in zip(ids, ids[1:]) if pair in ranks]
        if not present:
            return ids
        pair = min(present, key=ranks.get)  # the earliest learnt merge that still applies
        ids = merge_pair(ids, pair, 256 + ranks[pair])


def decode(ids: list[int], merges: list[tuple[int, int]]) -> bytes:
    """The bytes that the token `ids` stand for: the exact inverse of `encode`.

    Raises ValueError naming the id and the valid range when an id is not in
    0 .. 255 + len(merges).
    """
    vocab = [bytes([b]) for b in range(256)]
    for first, second in merges:  # id 256 + i: the bytes of both halves, already in vocab
        vocab.append(vocab[first] + vocab[second])
    pieces = []
    for i in ids:
        if not 0 <= i < len(vocab):  # vocab[-1] would quietly return the last token
            raise ValueError(f"token id {i} is not in this vocabulary: valid ids are 0 to "
                             f"{len(vocab) - 1} (256 bytes and {len(merges)} merges)")
        pieces.append(vocab[i])
    return b"".join(pieces)


def decode_text(ids: list[int], merges: list[tuple[int, int]]) -> str:
    """The text the token `ids` stand for: decode(ids, merges) read as UTF-8.

    Bytes that do not form a whole character become U+FFFD (the replacement character)
    instead of raising. That happens when the ids stop inside a character, which a token
    boundary allows (é is two bytes, an emoji four): printing a single token, or the
    output of a model that generates one token at a time. The ids of a whole text always
    decode cleanly.
    """
    return decode(ids, merges).decode("utf-8", errors="replace")
