"""Wrong versions of the four functions of exercise 08_bpe (byte-level BPE).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "08_bpe"

MERGE_PAIR = '''def merge_pair(ids, pair, new_id):
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
'''

TRAIN_BPE = '''def train_bpe(data, num_merges):
    ids = list(data)
    merges = []
    for i in range(num_merges):
        counts = {}
        for j in range(len(ids) - 1):
            pair = (ids[j], ids[j + 1])
            counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < 2:
            break
        merges.append(best)
        ids = merge_pair(ids, best, 256 + i)
    return merges
'''

ENCODE = '''def encode(text, merges):
    if isinstance(text, str):
        ids = list(text.encode("utf-8"))
    else:
        ids = list(text)
    ranks = {pair: r for r, pair in enumerate(merges)}
    while True:
        present = [p for p in zip(ids, ids[1:]) if p in ranks]
        if not present:
            return ids
        pair = min(present, key=lambda p: ranks[p])
        ids = merge_pair(ids, pair, 256 + ranks[pair])
'''

DECODE = '''def decode(ids, merges):
    vocab = [bytes([b]) for b in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    out = []
    for i in ids:
        if i < 0 or i >= len(vocab):
            raise ValueError(f"id {i} is not a token: valid ids are 0 to {len(vocab) - 1}")
        out.append(vocab[i])
    return b"".join(out)
'''


MISTAKES = [
    # merge_pair
    Mistake("merge_advances_by_one", "merge_pair", edited(MERGE_PAIR,
        ("            i += 2\n", "            i += 1\n"),
    ), says="did not get shorter"),
    Mistake("merge_drops_last_id", "merge_pair", edited(MERGE_PAIR,
        ("while i < len(ids):", "while i < len(ids) - 1:"),
    ), says="the last id is missing"),
    Mistake("merge_without_bounds_check", "merge_pair", edited(MERGE_PAIR,
        ("if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:",
         "if ids[i] == pair[0] and ids[i + 1] == pair[1]:"),
    ), says="raised IndexError"),
    Mistake("merge_changes_its_input", "merge_pair", edited(MERGE_PAIR,
        ("    return out\n", "    ids[:] = out\n    return out\n"),
    ), says="changed the list it was given"),
    # overlapping occurrences both replaced: 5 5 5 -> new_id new_id
    Mistake("merge_overlapping_occurrences", "merge_pair", edited(MERGE_PAIR,
        ("            out.append(new_id)\n            i += 2\n",
         "            out.append(new_id)\n"
         "            i += 2\n"
         "            if i < len(ids) and ids[i - 1] == pair[0] and ids[i] == pair[1]:\n"
         "                out.append(new_id)\n"
         "                i += 1\n"),
    ), says="never overlap"),

    # train_bpe
    Mistake("tie_first_occurrence", "train_bpe", edited(TRAIN_BPE,
        ("best = min(counts, key=lambda p: (-counts[p], p))", "best = max(counts, key=counts.get)"),
    ), says="occurs first in the sequence"),
    Mistake("tie_largest_pair", "train_bpe", edited(TRAIN_BPE,
        ("best = min(counts, key=lambda p: (-counts[p], p))",
         "best = max(counts, key=lambda p: (counts[p], p))"),
    ), says="Yours took the largest pair"),
    Mistake("counts_non_overlapping_pairs", "train_bpe", edited(TRAIN_BPE,
        ("for j in range(len(ids) - 1):", "for j in range(0, len(ids) - 1, 2):"),
    ), says="overlapping ones included"),
    Mistake("new_ids_off_by_one", "train_bpe", edited(TRAIN_BPE,
        ("ids = merge_pair(ids, best, 256 + i)", "ids = merge_pair(ids, best, 257 + i)"),
    ), says="Merge i creates id 256 + i"),
    Mistake("no_early_stop", "train_bpe", edited(TRAIN_BPE,
        ("if counts[best] < 2:", "if counts[best] < 1:"),
    ), says="no pair occurs twice any more"),
    Mistake("sequence_not_updated", "train_bpe", edited(TRAIN_BPE,
        ("ids = merge_pair(ids, best, 256 + i)", "merge_pair(ids, best, 256 + i)"),
    ), says="count again on the new sequence"),

    # encode
    Mistake("encode_code_points", "encode", edited(ENCODE,
        ('ids = list(text.encode("utf-8"))', "ids = [ord(c) for c in text]"),
    ), says="text.encode('utf-8')"),
    Mistake("encode_leftmost_first", "encode", edited(ENCODE,
        ("pair = min(present, key=lambda p: ranks[p])", "pair = present[0]"),
    ), says="learnt earliest"),
    Mistake("encode_most_frequent_first", "encode", edited(ENCODE,
        ("pair = min(present, key=lambda p: ranks[p])",
         "pair = max(present, key=present.count)"),
    ), says="learnt earliest"),
    Mistake("encode_rejects_bytes", "encode", edited(ENCODE,
        ('    if isinstance(text, str):\n        ids = list(text.encode("utf-8"))\n'
         '    else:\n        ids = list(text)\n',
         '    ids = list(text.encode("utf-8"))\n'),
    ), says="must accept bytes as well as str"),
    Mistake("encode_one_pass_over_merges", "encode", edited(ENCODE,
        ("    while True:\n"
         "        present = [p for p in zip(ids, ids[1:]) if p in ranks]\n"
         "        if not present:\n"
         "            return ids\n"
         "        pair = min(present, key=lambda p: ranks[p])\n"
         "        ids = merge_pair(ids, pair, 256 + ranks[pair])\n",
         "    present = set(zip(ids, ids[1:]))\n"
         "    for pair in merges:\n"
         "        if pair in present:\n"
         "            ids = merge_pair(ids, pair, 256 + ranks[pair])\n"
         "    return ids\n"),
    ), says="a learnt merge still applies"),
    Mistake("encode_new_ids_off_by_one", "encode", edited(ENCODE,
        ("ids = merge_pair(ids, pair, 256 + ranks[pair])", "ids = merge_pair(ids, pair, 255 + ranks[pair])"),
    ), says="256 + i"),

    # decode
    Mistake("decode_accepts_negative_ids", "decode", edited(DECODE,
        ("if i < 0 or i >= len(vocab):", "if i >= len(vocab):"),
    ), says="A negative index counts from the end"),
    Mistake("decode_upper_bound_off_by_one", "decode", edited(DECODE,
        ("if i < 0 or i >= len(vocab):", "if i < 0 or i > len(vocab):"),
    ), says="raised IndexError"),
    Mistake("decode_bytes_as_characters", "decode", edited(DECODE,
        ("vocab = [bytes([b]) for b in range(256)]", "vocab = [chr(b).encode() for b in range(256)]"),
    ), says="bytes([b])"),
    Mistake("decode_token_by_token_as_text", "decode", edited(DECODE,
        ('    return b"".join(out)\n',
         '    return "".join(t.decode("utf-8", errors="replace") for t in out).encode("utf-8")\n'),
    ), says="a token boundary can split"),
    Mistake("decode_returns_text", "decode", edited(DECODE,
        ('    return b"".join(out)\n', '    return b"".join(out).decode("utf-8", errors="replace")\n'),
    ), says="should return bytes"),
    Mistake("decode_halves_swapped", "decode", edited(DECODE,
        ("vocab.append(vocab[a] + vocab[b])", "vocab.append(vocab[b] + vocab[a])"),
    ), says="followed by those of merges[i][1]"),
]
