"""Checks for exercise 13_encoder: BERT's WordPiece tokenizer and a post-norm encoder that
carries the real all-MiniLM-L6-v2 weights.

The tokenizer's ids are compared with Hugging Face ``tokenizers`` reading the checkpoint's own
tokenizer.json, an implementation independent of the course's; its words and pieces, on the
way there, with the course's reference (:mod:`llmref.encoder`, itself equal to
``tokenizers`` on these sentences and to sentence-transformers' embeddings, see
tests/test_llmref_encoder.py), so that a failure names the step that went wrong.

The encoder's checks load the reference's weights into the learner's modules by name and
compare outputs: one block on seeded random weights and a padded batch (float32 against
the reference in float64), then the whole model on MiniLM's weights (both float32). On a
mismatch a check recomputes the output the way each known mistake would and names the one
the learner's output matches.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmref.encoder import Encoder as ReferenceEncoder
from llmref.encoder import EncoderBlock as ReferenceBlock
from llmref.encoder import (WordPieceTokenizer, is_cjk, is_control, is_punctuation,
                            load_encoder, minilm_folder)

from ._core import (as_float_array, build_learner, call_learner, describe, fail, find_bad_values,
                    layout_differences, load_weights, passed, refuse_shortcuts, saved_shapes,
                    torch_seeded, worst_mismatch)
from .block import SHORTCUTS

# The libraries that tokenize or encode for the learner (the checks use them as references).
LIBRARY_SHORTCUTS = {"tokenizers": "Hugging Face tokenizers", "transformers": "transformers",
                     "sentence_transformers": "sentence-transformers"}
MODEL_SHORTCUTS = {**SHORTCUTS, **LIBRARY_SHORTCUTS}
WHY_TOKENIZER = ("Write the normalisation, the splitting and the greedy longest-match WordPiece "
                 "yourself: how a real tokenizer turns text into ids is the exercise.")
WHY_MODEL = ("Build it from nn.Linear, nn.LayerNorm, nn.Embedding and your own classes, and write "
             "the scores, the mask, the softmax and the heads with tensor operations: loading "
             "real weights into a model you wrote is the exercise.")

MINILM = minilm_folder()

# Sentences with the cases a tokenizer gets wrong: capitals, accents, punctuation inside and
# between words, numbers, CJK ideographs (split one by one) next to kana (not split), hangul,
# emoji and a word too long to split (both [UNK]), control and zero-width characters.
SENTENCES = [
    "Hello, world!",
    "The café in Zürich serves naïve crème brûlée.",
    "I can't believe it's 3.14159, or 1,000,000?",
    "日本語のテキストと中文字符",
    "Unaffable transformers tokenize everything.",
    "An emoji 🙂 and hello🙂 are unknown.",
    "ÉCOLE normale SUPÉRIEURE",
    "$100 ^ `tick` | pipe ~ tilde",
    "tabs\tand\nnewlines\r\x00and a zero\u200bwidth space",
    "Supercalifragilisticexpialidocious " + "x" * 120,
    "Ångström’s “quotes” and «guillemets» — dashes…",
    "한국어 문장",
]
MORE_SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument on stage.",
    "The stock market fell sharply on Monday.",
    "Attention is all you need (Vaswani et al., 2017).",
    "print(f'{x!r:>10}') # Python's f-strings",
    "Ελληνικά γράμματα και ΤΟΝΟΙ",
    "Привет, мир! Как дела?",
    "über-cool co-operation, e-mail & rock'n'roll",
    "   leading and trailing spaces   ",
    "numbers: 42, 3.0e-8, 0x1F, 1/2, 99%",
    "北京欢迎你 and 東京",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ and ligatures ﬁ ﬂ",
]
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog."] * 8)

# float32 against float64: the difference is the learner's own rounding, below 1e-6 of the
# largest value through one block (two LayerNorms make values of order 1 to 5). 1e-5 of that
# leaves a tenfold margin; the closest known mistake, GELU's tanh approximation, moves the
# output by 7.6e-5 to 1.2e-4 of it on the checks' cases (tests/test_13_encoder.py).
BLOCK_TOL = 1e-5
# The whole MiniLM in float32 on both sides: the same operations summed in another order
# differ by ~4e-6 on hidden states up to ~6 (measured against transformers' BertModel on the
# same weights). 1e-4 of the largest value is ~25 times that; the mistakes move hidden states
# by more than 1e-1.
HIDDEN_TOL = 1e-4
# Sentence embeddings have length 1, so every component is at most 1 in size. The course
# asks for sentence-transformers' embeddings to 1e-4 per component; a right float32
# implementation is within ~3e-7, and the known mistakes move components by more than 1e-2.
EMBEDDING_TOL = 1e-4
# The same sentence alone and padded in a longer batch: only the size of the matrices
# changes, and with it how float32 sums are split; measured differences are below 1e-6.
PADDING_TOL = 1e-5


# ----------------------------------------------------------------- shared references

@lru_cache(maxsize=1)
def _reference_tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_folder(MINILM)


@lru_cache(maxsize=1)
def _hf_tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


@lru_cache(maxsize=1)
def _reference_model() -> ReferenceEncoder:
    with torch_seeded():  # building the model draws from the global RNG
        return load_encoder(MINILM).requires_grad_(False)


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


# ---------------------------------------------------------------------- the tokenizer

def _diagnose_words(sentence: str, got: list, expected: list[str]) -> str:
    lines = [f"For {sentence!r}, `basic_tokenize` gave {got}; expected {expected}."]
    words = [w for w in got if isinstance(w, str)]
    if len(words) != len(got):
        lines.append("It should return a list of strings.")
    elif any(w != w.lower() for w in words):
        lines.append("The words are not lower-cased: this model is uncased (do_lower_case in "
                     "tokenizer_config.json) and its vocabulary has no capital letters. With "
                     "self.lower_case, lower-case each word and strip its accents.")
    elif any(_strip_accents(w) != w for w in words):
        lines.append("The accents are kept: the uncased model was trained with accents stripped, "
                     "so 'café' must become 'cafe'. Decompose each word with "
                     "unicodedata.normalize('NFD', ...) and drop the combining marks (category Mn).")
    elif any(len(w) > 1 and any(is_punctuation(c) for c in w) for w in words):
        lines.append("Punctuation stays attached to a word: every punctuation character "
                     "(is_punctuation) is a word of its own, inside a word too ('can't' -> can ' t).")
    elif any(len(w) > 1 and any(is_cjk(c) for c in w) for w in words):
        lines.append("CJK ideographs stay together: put spaces around each one (is_cjk) before "
                     "splitting on whitespace, so that each becomes a word of its own.")
    elif any(is_control(c) or c in "\x00\ufffd" for w in words for c in w):
        lines.append("Control and zero-width characters are kept: delete them (is_control, and "
                     "the characters \\x00 and \\ufffd) before splitting.")
    elif any(not w.strip() for w in words):
        lines.append("Some words are empty or whitespace: split on any whitespace (str.split() "
                     "with no argument) and never add an empty word.")
    return " ".join(lines)


def _diagnose_pieces(word: str, got: list, expected: list[str]) -> str:
    lines = [f"`wordpiece({word!r})` gave {got}; expected {expected}."]
    pieces = [p for p in got if isinstance(p, str)]
    if len(pieces) != len(got):
        lines.append("It should return a list of strings.")
    elif any(p.startswith("##") for p in expected) and not any(p.startswith("##") for p in pieces):
        lines.append("No piece after the first starts with ##: a piece that continues a word is "
                     "stored in the vocabulary as '##' + piece. Look it up, and return it, with "
                     "that prefix.")
    elif ("".join(p.removeprefix("##") for p in pieces) == word and len(pieces) > len(expected)
          and "[UNK]" not in expected):
        lines.append("The pieces are shorter than they should be: WordPiece takes the longest "
                     "match first. Start from the whole rest of the word and shorten it one "
                     "character at a time until it is in the vocabulary.")
    elif expected == ["[UNK]"]:
        lines.append("Part of this word matches nothing in the vocabulary (or the word is longer "
                     "than MAX_WORD_CHARS): then the whole word is one '[UNK]', not some pieces "
                     "and an [UNK].")
    return " ".join(lines)


def _as_tensor_dict(batch: Any, what: str) -> dict:
    __tracebackhide__ = True
    keys = ("input_ids", "attention_mask", "token_type_ids")
    if not isinstance(batch, Mapping) or any(k not in batch for k in keys):
        fail(f"{what} should return a dict with the keys {', '.join(keys)}, but returned "
             f"{describe(batch) if not isinstance(batch, Mapping) else 'a dict with keys ' + str(list(batch))}.")
    return batch


def _expected_encoding(sentences: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and mask from Hugging Face tokenizers, truncated and padded as encode must do."""
    hf = _hf_tokenizer()
    hf.enable_truncation(max_length)
    try:
        encodings = hf.encode_batch(list(sentences))
    finally:
        hf.no_truncation()
    T = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), T), dtype=np.int64)
    mask = np.zeros((len(encodings), T), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    return ids, mask


def check_tokenizer(cls: Any, sentences: Sequence[str] | None = None, max_length: int | None = None) -> None:
    """The learner's WordPieceTokenizer, read from MiniLM's folder: its words and pieces as the
    reference's, then encode's ids, mask and segments as Hugging Face tokenizers' (padded)."""
    __tracebackhide__ = True
    sentences = list(SENTENCES if sentences is None else sentences)
    if not isinstance(cls, type):
        fail(f"Expected the class `WordPieceTokenizer`, but got {describe(cls)}. Pass the class "
             "itself, and re-run the cell that defines it.")
    with refuse_shortcuts(LIBRARY_SHORTCUTS, "WordPieceTokenizer.from_folder", WHY_TOKENIZER):
        tok = call_learner(getattr(cls, "from_folder", None), MINILM,
                           name="WordPieceTokenizer.from_folder")
    ref = _reference_tokenizer()
    for sentence in sentences:
        with refuse_shortcuts(LIBRARY_SHORTCUTS, "basic_tokenize", WHY_TOKENIZER):
            words = call_learner(tok.basic_tokenize, sentence, name="basic_tokenize")
        expected = ref.basic_tokenize(sentence)
        if not isinstance(words, list) or words != expected:
            fail(_diagnose_words(sentence, words if isinstance(words, list) else [words], expected))
        for word in expected:
            with refuse_shortcuts(LIBRARY_SHORTCUTS, "wordpiece", WHY_TOKENIZER):
                pieces = call_learner(tok.wordpiece, word, name="wordpiece")
            right = ref.wordpiece(word)
            if not isinstance(pieces, list) or pieces != right:
                fail(_diagnose_pieces(word, pieces if isinstance(pieces, list) else [pieces], right))

    limit = ref.max_length if max_length is None else max_length
    kwargs = {} if max_length is None else {"max_length": max_length}
    call = f"encode({len(sentences)} sentences{', max_length=' + str(max_length) if max_length else ''})"
    with refuse_shortcuts(LIBRARY_SHORTCUTS, "encode", WHY_TOKENIZER):
        encoded = call_learner(tok.encode, sentences, name="encode", **kwargs)
    batch = _as_tensor_dict(encoded, f"`{call}`")
    ids, mask = _expected_encoding(sentences, limit)
    got_ids = batch["input_ids"]
    shape = tuple(getattr(got_ids, "shape", ()))
    if len(shape) == 2 and shape[0] == ids.shape[0] and shape[1] != ids.shape[1]:
        longest = int(mask.sum(1).max())
        fail(f"`{call}` gave input_ids of shape {shape}, expected {ids.shape}: pad every text to the "
             f"longest in the batch ({longest} tokens with [CLS] and [SEP]"
             + (f", after truncating to max_length={limit}" if longest == limit else "") + ").")
    got = as_float_array(got_ids, f"input_ids of `{call}`", ids.shape)
    got_mask = as_float_array(batch["attention_mask"], f"attention_mask of `{call}`", ids.shape)
    segments = as_float_array(batch["token_type_ids"], f"token_type_ids of `{call}`", ids.shape)
    vocab = {i: t for t, i in ref.vocab.items()}
    for row, sentence in enumerate(sentences):
        if not np.array_equal(got[row], ids[row]):
            shown = [vocab.get(int(i), int(i)) for i in got[row]]
            wanted = [vocab[int(i)] for i in ids[row]]
            hint = ""
            if got[row, 0] != ref.vocab["[CLS]"]:
                hint = " Each text starts with [CLS]."
            elif ref.vocab["[SEP]"] not in got[row]:
                hint = " Each text ends with [SEP] (after truncation, which drops pieces, never [SEP])."
            elif np.any(got[row][mask[row] == 0] != 0):
                hint = " Padding is [PAD], id 0."
            fail(f"`{call}`: the ids of {sentence!r} are {shown}, expected (Hugging Face tokenizers) "
                 f"{wanted}.{hint}")
    if not np.array_equal(got_mask, mask):
        row = int(np.argmax(np.any(got_mask != mask, axis=1)))
        fail(f"`{call}`: the attention_mask of {sentences[row]!r} is {got_mask[row].astype(int).tolist()}, "
             f"expected {mask[row].tolist()}: 1 at every real token, [CLS] and [SEP] included, 0 at padding.")
    if np.any(segments != 0):
        fail(f"`{call}`: token_type_ids should be all 0: every text is one segment, sentence A.")
    passed(f"WordPieceTokenizer: {len(sentences)} sentences, words, pieces and ids as Hugging Face "
           f"tokenizers'{f' (max_length={max_length})' if max_length else ''}")


# -------------------------------------------------------------------------- the block

def _load(module: Any, state: dict, built: str) -> nn.Module:
    """Check that `module` has exactly the reference's names and shapes, and load `state`."""
    __tracebackhide__ = True
    if not isinstance(module, nn.Module):
        fail(f"`{built}` should give an nn.Module, but gave {describe(module)}.")
    saved = saved_shapes(module, built)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    if saved != expected:
        lines = [f"The parameters of `{built}` do not have the names and shapes the contract asks "
                 "for, so BERT's weights cannot be loaded into it by name.",
                 *layout_differences(saved, expected)]
        fail(" ".join(lines))
    load_weights(module, state, built)
    return module.eval()


def _block_variant(ref: nn.Module, x: torch.Tensor, mask: torch.Tensor, *, norm: str = "post",
                   masked: bool = True, act: str = "exact", scale: bool = True) -> torch.Tensor:
    """The block in float64 on the reference's weights, right or the way a known mistake is."""
    B, T, C = x.shape
    h = ref.n_head
    heads = lambda t: t.view(B, T, h, C // h).transpose(1, 2)  # noqa: E731
    inp = ref.ln_1(x) if norm == "pre" else x
    q, k, v = heads(ref.query(inp)), heads(ref.key(inp)), heads(ref.value(inp))
    scores = q @ k.transpose(-2, -1) / ((C // h) ** 0.5 if scale else 1.0)
    if masked:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    gelu = (lambda t: F.gelu(t, approximate="tanh")) if act == "tanh" else F.gelu
    if norm == "pre":
        x = x + ref.attn_out(y)
        return x + ref.ffn_out(gelu(ref.ffn_in(ref.ln_2(x))))
    x = ref.ln_1(x + ref.attn_out(y))
    return ref.ln_2(x + ref.ffn_out(gelu(ref.ffn_in(x))))


BLOCK_VARIANTS = [
    ({"norm": "pre"}, "the block is pre-norm (x + f(LN(x))), as GPT-2's. BERT is post-norm: add "
                      "the sublayer's output to x first, then normalise, x = ln_1(x + attention), "
                      "x = ln_2(x + ffn)"),
    ({"masked": False}, "the padding is not masked: real tokens attend to the padded positions "
                        "too. Before the softmax, fill the scores of padded keys (attention_mask "
                        "0, the last axis of the (B, h, T, T) scores) with -inf"),
    ({"act": "tanh"}, "GELU's tanh approximation is used. BERT's hidden_act 'gelu' is the exact "
                      "GELU (erf): F.gelu(x) or nn.GELU() with their default approximate='none'"),
    ({"scale": False}, "the scores are not scaled: divide q @ k^T by sqrt(head size) before the softmax"),
]


def _padding_mask(gen: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """Row 0 full, the others of random lengths from 1 to length - 1 (some padding in each)."""
    lengths = [length] + torch.randint(1, max(length, 2), (batch - 1,), generator=gen).tolist()
    return (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()


def _randomise(block: nn.Module, gen: torch.Generator) -> None:
    """Seeded weights that make every mistake show: std 1/sqrt(fan_in) keeps outputs and
    attention scores of order 1 (the softmax neither uniform nor one-hot); LayerNorm gains
    around 1 and non-zero biases, distinct per layer."""
    with torch.no_grad():
        for name, p in block.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[1] ** -0.5)
            elif name.startswith("ln") and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def check_block(cls: Any, seed: int = 0, n_embd: int = 32, n_head: int = 4, n_inner: int = 64,
                batch: int = 3, length: int = 7) -> None:
    """EncoderBlock on seeded random weights and a padded batch against the reference."""
    __tracebackhide__ = True
    built = f"EncoderBlock({n_embd}, {n_head}, {n_inner}, layer_norm_eps=1e-12)"
    gen = torch.Generator().manual_seed(seed)
    with torch_seeded():
        ref = ReferenceBlock(n_embd, n_head, n_inner, 1e-12)
    _randomise(ref, gen)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    x = 2 * torch.randn(batch, length, n_embd, generator=gen)
    mask = _padding_mask(gen, batch, length)
    module = build_learner(cls, n_embd, n_head, n_inner, 1e-12, name=built,
                           forbidden=MODEL_SHORTCUTS, why=WHY_MODEL)
    module = _load(module, state, built)
    with torch.no_grad(), refuse_shortcuts(MODEL_SHORTCUTS, "EncoderBlock.forward", WHY_MODEL):
        out = call_learner(module, x.clone(), mask.clone(), name=f"{built}.forward")
    got = as_float_array(out, f"The output of `{built}`", x.shape)
    bad = find_bad_values(got)
    if bad:
        fail(f"The output of `{built}` holds {bad}"
             + (" at padded positions" if not find_bad_values(got[mask.bool().numpy()]) else "")
             + ". A row of scores that is all -inf gives NaN after the softmax: mask the padded "
               "*keys* (the last axis of the scores), never the queries, and a NaN at a padded "
               "position would spread into the mean pooling even multiplied by 0.")
    ref64 = ref.double()
    with torch.no_grad():
        expected = _block_variant(ref64, x.double(), mask).numpy()
        real = mask.bool().numpy()
        scale = max(1.0, float(np.abs(expected[real]).max()))
        if not np.allclose(got[real], expected[real], rtol=0, atol=BLOCK_TOL * scale):
            for kwargs, what in BLOCK_VARIANTS:
                wrong = _block_variant(ref64, x.double(), mask, **kwargs).numpy()
                if np.allclose(got[real], wrong[real], rtol=0, atol=BLOCK_TOL * scale):
                    fail(f"`{built}` computes the wrong thing: {what}.")
            fail(f"The output of `{built}` at the real tokens differs from the reference's: "
                 f"{worst_mismatch(got[real], expected[real])}, more than the tolerance "
                 f"{BLOCK_TOL * scale:.2g}. Check each step: heads as (B, T, h, hs) then transposed, "
                 "scores scaled by sqrt(hs), padded keys blocked, the softmax over the keys, "
                 "attn_out, x = ln_1(x + ...), the exact GELU, x = ln_2(x + ...).")
    passed(f"EncoderBlock: post-norm, padding masked, {batch} sequences of up to {length} tokens "
           "as the reference's")


# ------------------------------------------------------------------- the whole encoder

def _build_encoder(cls: Any) -> nn.Module:
    __tracebackhide__ = True
    ref = _reference_model()
    built = "Encoder(EncoderConfig(...MiniLM's config.json...))"
    if not isinstance(cls, type):
        fail(f"Expected the class `Encoder`, but got {describe(cls)}.")
    module = build_learner(cls, ref.config, name=built, forbidden=MODEL_SHORTCUTS, why=WHY_MODEL)
    return _load(module, ref.state_dict(), built)


@lru_cache(maxsize=8)
def _reference_run(sentences: tuple[str, ...]) -> tuple[dict, np.ndarray, np.ndarray]:
    batch = _reference_tokenizer().encode(list(sentences))
    with torch.no_grad():
        ref = _reference_model()
        return batch, ref(**batch).numpy(), ref.embed(**batch).numpy()


def _encoder_variant(batch: dict, *, positions: bool = True, segments: bool = True,
                     ln_emb: bool = True) -> np.ndarray:
    ref = _reference_model()
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    with torch.no_grad():
        x = ref.tok_emb(ids)
        if positions:
            x = x + ref.pos_emb(torch.arange(ids.shape[1]))
        if segments:
            x = x + ref.seg_emb(types)
        if ln_emb:
            x = ref.ln_emb(x)
        for block in ref.blocks:
            x = block(x, mask)
    return x.numpy()


ENCODER_VARIANTS = [
    ({"positions": False}, "the position embeddings are missing: add pos_emb of positions 0 to T - 1 "
                           "to the token embeddings; without them the encoder sees a bag of words"),
    ({"segments": False}, "the segment embeddings are missing: add seg_emb(token_type_ids), even "
                          "when every token is in segment 0 (its vector is not zero)"),
    ({"ln_emb": False}, "ln_emb is not applied: BERT normalises the sum of the three embeddings "
                        "before the first block"),
]


def _run_encoder(module: nn.Module, batch: dict, method: str) -> Any:
    __tracebackhide__ = True
    fn = module if method == "forward" else getattr(module, method, None)
    args = {k: v.clone() for k, v in batch.items()}
    with torch.no_grad(), refuse_shortcuts(MODEL_SHORTCUTS, f"Encoder.{method}", WHY_MODEL):
        out = call_learner(fn, name=f"Encoder.{method}", **args)
    return out


def check_encoder(cls: Any, sentences: Sequence[str] | None = None) -> None:
    """The learner's Encoder with MiniLM's weights: hidden states at the real tokens of a padded
    batch as the reference's."""
    __tracebackhide__ = True
    sentences = tuple(SENTENCES[:8] if sentences is None else sentences)
    module = _build_encoder(cls)
    batch, expected, _ = _reference_run(sentences)
    B, T = batch["input_ids"].shape
    got = as_float_array(_run_encoder(module, batch, "forward"), "The output of `Encoder.forward`",
                         (B, T, expected.shape[-1]))
    real = batch["attention_mask"].bool().numpy()
    bad = find_bad_values(got[real])
    if bad:
        fail(f"The hidden states of `Encoder.forward` hold {bad} at real tokens.")
    scale = float(np.abs(expected[real]).max())
    if not np.allclose(got[real], expected[real], rtol=0, atol=HIDDEN_TOL * scale):
        for kwargs, what in ENCODER_VARIANTS:
            wrong = _encoder_variant(batch, **kwargs)
            if np.allclose(got[real], wrong[real], rtol=0, atol=HIDDEN_TOL * scale):
                fail(f"`Encoder.forward` with MiniLM's weights computes the wrong thing: {what}.")
        fail(f"The hidden states of `Encoder.forward` (MiniLM's weights, {B} padded sentences) differ "
             f"from the reference's: {worst_mismatch(got[real], expected[real])}, more than the "
             f"tolerance {HIDDEN_TOL * scale:.2g}. If your EncoderBlock passes its test, look at the "
             "embeddings: tok_emb + pos_emb(0..T-1) + seg_emb(token_type_ids), then ln_emb, then "
             "the blocks in order, each given the attention_mask.")
    passed(f"Encoder: MiniLM's hidden states for {B} padded sentences as the reference's "
           f"(worst difference {np.abs(got[real] - expected[real]).max():.1e})")


def check_padding(cls: Any, sentence: str = SENTENCES[0], others: Sequence[str] = (LONG_TEXT, SENTENCES[1])) -> None:
    """A sentence's hidden states and embedding are the same alone and padded in a batch of longer ones."""
    __tracebackhide__ = True
    module = _build_encoder(cls)
    tok = _reference_tokenizer()
    alone = tok.encode([sentence])
    batch = tok.encode([sentence, *others])
    n = alone["input_ids"].shape[1]
    C = _reference_model().config.hidden_size
    B, T = batch["input_ids"].shape
    h_alone = as_float_array(_run_encoder(module, alone, "forward"), "Encoder.forward's output", (1, n, C))
    h_batch = as_float_array(_run_encoder(module, batch, "forward"), "Encoder.forward's output", (B, T, C))
    scale = max(1.0, float(np.abs(h_alone).max()))
    if not np.allclose(h_batch[0, :n], h_alone[0], rtol=0, atol=PADDING_TOL * scale):
        fail(f"The hidden states of {sentence!r} change when it is padded to {T} tokens in a batch with "
             f"longer texts ({worst_mismatch(h_batch[0, :n], h_alone[0])}): the padding is not masked. "
             "Real tokens must not attend to padded keys: block them (attention_mask 0) with -inf "
             "before the softmax, in every block.")
    e_alone = as_float_array(_run_encoder(module, alone, "embed"), "Encoder.embed's output", (1, C))
    e_batch = as_float_array(_run_encoder(module, batch, "embed"), "Encoder.embed's output", (B, C))
    if not np.allclose(e_batch[0], e_alone[0], rtol=0, atol=PADDING_TOL):
        fail(f"The embedding of {sentence!r} changes when it is padded to {T} tokens in a batch "
             f"({worst_mismatch(e_batch[0], e_alone[0])}), although its hidden states do not: the "
             "padding is included in the mean. Weight each position by attention_mask and divide "
             "by the number of real tokens.")
    passed(f"Encoder: {sentence!r} alone ({n} tokens) and padded to {T} give the same hidden states "
           "and embedding")


def _pooled_variants(hidden: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, str]]:
    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    m = mask[..., None].astype(np.float64)
    mean = (hidden * m).sum(1) / m.sum(1)
    return [
        (mean, "the embeddings are not normalised: scale each to length 1 (divide by its L2 norm, "
               "F.normalize), as sentence-transformers' Normalize module does"),
        (unit(hidden.mean(1)), "the padding is included in the mean: weight each position by "
                               "attention_mask and divide by the number of real tokens"),
        (hidden.mean(1), "the padding is included in the mean, and the embeddings are not normalised"),
        (unit(hidden[:, 0]), "this is [CLS] pooling, the hidden state of the first token. "
                             "all-MiniLM-L6-v2 was trained with mean pooling (1_Pooling/config.json: "
                             "pooling_mode_mean_tokens): average over the real tokens"),
        (hidden[:, 0], "this is [CLS] pooling, not normalised: average over the real tokens, then "
                       "scale to length 1"),
    ]


def check_embeddings(cls: Any, sentences: Sequence[str] | None = None, batch_size: int = 8) -> None:
    """Encoder.embed with MiniLM's weights on padded batches: each component of each sentence
    embedding within EMBEDDING_TOL of the reference's (which equals sentence-transformers')."""
    __tracebackhide__ = True
    sentences = list(SENTENCES + MORE_SENTENCES if sentences is None else sentences)
    module = _build_encoder(cls)
    worst = 0.0
    for start in range(0, len(sentences), batch_size):
        chunk = tuple(sentences[start:start + batch_size])
        batch, hidden, expected = _reference_run(chunk)
        got = as_float_array(_run_encoder(module, batch, "embed"), "The output of `Encoder.embed`",
                             expected.shape)
        bad = find_bad_values(got)
        if bad:
            fail(f"`Encoder.embed` returned {bad}: does a padded position hold NaN, or is a sum "
                 "divided by 0?")
        if not np.allclose(got, expected, rtol=0, atol=EMBEDDING_TOL):
            for wrong, what in _pooled_variants(hidden, batch["attention_mask"].numpy()):
                if np.allclose(got, wrong, rtol=0, atol=EMBEDDING_TOL):
                    fail(f"`Encoder.embed`: {what}.")
            norms = np.linalg.norm(got, axis=-1)
            if not np.allclose(norms, 1.0, atol=1e-4):
                fail(f"`Encoder.embed` returns vectors of length {norms.min():.3g} to {norms.max():.3g}: "
                     "scale each sentence embedding to length 1 (F.normalize).")
            fail(f"The sentence embeddings of `Encoder.embed` differ from the reference's: "
                 f"{worst_mismatch(got, expected)}, more than {EMBEDDING_TOL}. Average the hidden "
                 "states over the real tokens (attention_mask 1), then scale to length 1.")
        worst = max(worst, float(np.abs(got - expected).max()))
    passed(f"Encoder.embed: {len(sentences)} sentence embeddings in padded batches of {batch_size} "
           f"as the reference's (worst component difference {worst:.1e})")
