# GENERATED from solutions/14_seq2seq/14_seq2seq.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""An encoder-decoder transformer with cross-attention on a generated task (written dates to ISO 8601): the data, CrossAttention, the encoder and decoder blocks, the model, teacher forcing, greedy decoding and training: the reference for exercise 14_seq2seq."""
import datetime
import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmref.block import MLP, CausalSelfAttention
from llmref.corpus import CharTokenizer
from llmref.gpt import GPT
from llmref.pretrain import lr_at


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The five ways a date is written here, each shown for 3 March 1999.
FORMATS = ("3 March 1999", "March 3, 1999", "03/03/99", "Wed 3 Mar 1999", "03.03.1999")
FIRST_YEAR, LAST_YEAR = 1969, 2068   # the 100 years that two-digit years name (POSIX, strptime)
HELD_OUT_EVERY = 10                  # dates with toordinal() % 10 == 0 are held out

PAD, BOS, EOS = "_", "^", "$"
TOKENIZER = CharTokenizer((PAD, BOS, EOS) + tuple(sorted(set(
    "0123456789 ,./-" + "".join(MONTHS) + "".join(WEEKDAYS)))))
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
TARGET_LEN = len("1999-03-03") + 1   # ten characters and EOS


def render_date(date: datetime.date, fmt: str) -> str:
    """`date` written in `fmt`, one of FORMATS (named by how it writes 3 March 1999).
    Month and weekday names are English whatever the machine's locale."""
    d, m, y = date.day, date.month, date.year
    month, mon, wday = MONTHS[m - 1], MONTHS[m - 1][:3], WEEKDAYS[date.weekday()][:3]
    written = {"3 March 1999": f"{d} {month} {y}",
               "March 3, 1999": f"{month} {d}, {y}",
               "03/03/99": f"{d:02d}/{m:02d}/{y % 100:02d}",
               "Wed 3 Mar 1999": f"{wday} {d} {mon} {y}",
               "03.03.1999": f"{d:02d}.{m:02d}.{y}"}
    if fmt not in written:
        raise ValueError(f"unknown format {fmt!r}; the formats are {FORMATS}")
    return written[fmt]


def make_pairs(n: int, seed: int, split: str = "train") -> list[tuple[str, str]]:
    """n (written date, ISO date) pairs drawn with random.Random(seed): a uniform date of
    FIRST_YEAR..LAST_YEAR in `split` ("train" or "held_out") and a uniform format."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    rng = random.Random(seed)
    first = datetime.date(FIRST_YEAR, 1, 1).toordinal()
    last = datetime.date(LAST_YEAR, 12, 31).toordinal()
    pairs = []
    while len(pairs) < n:
        day = rng.randint(first, last)
        if (day % HELD_OUT_EVERY == 0) != (split == "held_out"):
            continue  # the other split's date
        date = datetime.date.fromordinal(day)
        pairs.append((render_date(date, rng.choice(FORMATS)), date.isoformat()))
    return pairs


def encode_batch(pairs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(src (B, S) ids padded with PAD_ID, src_padding_mask (B, S) True at padding,
    targets (B, TARGET_LEN): the ISO date's ids and EOS_ID). S is the longest input."""
    S = max(len(source) for source, _ in pairs)
    src = torch.full((len(pairs), S), PAD_ID, dtype=torch.int64)
    for i, (source, _) in enumerate(pairs):
        src[i, :len(source)] = torch.from_numpy(TOKENIZER.encode(source))
    targets = torch.stack([torch.from_numpy(TOKENIZER.encode(target + EOS)) for _, target in pairs])
    return src, src == PAD_ID, targets


class CrossAttention(nn.Module):
    """Multi-head attention from the positions of x to those of memory.

    Parameters (BART's names): q_proj, k_proj, v_proj, out_proj, each
    nn.Linear(n_embd, n_embd, bias=bias). Queries are projected from x, keys and values
    from memory; out_proj mixes the heads put side by side again.
    """

    def __init__(self, n_embd: int, n_head: int, bias: bool = True):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}: each head "
                             "gets n_embd // n_head features, so choose a divisor")
        self.n_embd, self.n_head = n_embd, n_head
        self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.k_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.v_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.out_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, padding_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        """x (B, T, C) attends to memory (B, S, C) -> (B, T, C).

        padding_mask: optional bool (B, S), True where memory is padding (never attended to).
        No causal mask: every position of x may see every real position of memory.
        With return_weights=True, returns (output, weights (B, n_head, T, S)).
        """
        B, T, C = x.shape
        S = memory.shape[1]
        h, d = self.n_head, C // self.n_head
        q = self.q_proj(x).view(B, T, h, d).transpose(1, 2)         # (B, h, T, d): from the decoder
        k = self.k_proj(memory).view(B, S, h, d).transpose(1, 2)    # (B, h, S, d): from the encoder
        v = self.v_proj(memory).view(B, S, h, d).transpose(1, 2)    # (B, h, S, d)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)             # (B, h, T, S): not square
        if padding_mask is not None:                                # whole columns: padded inputs
            scores = scores.masked_fill(padding_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)                     # over the input positions
        y = (weights @ v).transpose(1, 2).reshape(B, T, C)          # heads side by side again
        y = self.out_proj(y)
        return (y, weights) if return_weights else y


class EncoderBlock(nn.Module):
    """Pre-norm encoder block: bidirectional self-attention with a padding mask, then an MLP."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        # fairseq's and BART's names for the norms; each sits before its sublayer (pre-norm).
        self.self_attn_layer_norm = nn.LayerNorm(n_embd, bias=bias)
        self.self_attn = CrossAttention(n_embd, n_head, bias)   # used with memory = its own input
        self.final_layer_norm = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout=dropout, bias=bias)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, S, C) -> (B, S, C); every position sees every real position, before or after."""
        h = self.self_attn_layer_norm(x)
        x = x + self.self_attn(h, h, padding_mask)
        return x + self.mlp(self.final_layer_norm(x))


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: causal self-attention, cross-attention to memory, an MLP."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(n_embd, bias=bias)
        self.self_attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.cross_attn_layer_norm = nn.LayerNorm(n_embd, bias=bias)
        self.cross_attn = CrossAttention(n_embd, n_head, bias)
        self.final_layer_norm = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout=dropout, bias=bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                padding_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, C), memory (B, S, C) -> (B, T, C); position t sees x[:, :t + 1] and all of memory."""
        x = x + self.self_attn(self.self_attn_layer_norm(x))                     # written so far
        x = x + self.cross_attn(self.cross_attn_layer_norm(x), memory, padding_mask)  # the input
        return x + self.mlp(self.final_layer_norm(x))


@dataclass
class Seq2SeqConfig:
    vocab_size: int = TOKENIZER.vocab_size  # shared by input and output (47 characters)
    max_src_len: int = 24    # longest input ("September 30, 2000" has 18 characters)
    max_tgt_len: int = 12    # longest decoder input (BOS and 10 characters)
    n_layer_enc: int = 1     # encoder blocks
    n_layer_dec: int = 1     # decoder blocks
    n_head: int = 4          # attention heads, in every attention of both stacks
    n_embd: int = 64         # width of both residual streams
    dropout: float = 0.0
    bias: bool = True


class Seq2Seq(nn.Module):
    """An encoder-decoder transformer: shared token embedding (tied to the output head),
    a position embedding per side, n_layer_enc EncoderBlocks, n_layer_dec DecoderBlocks."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)        # both sides' tokens
        self.enc_wpe = nn.Embedding(c.max_src_len, c.n_embd)
        self.dec_wpe = nn.Embedding(c.max_tgt_len, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList([EncoderBlock(c.n_embd, c.n_head, c.dropout, c.bias)
                                      for _ in range(c.n_layer_enc)])
        self.ln_enc = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.decoder = nn.ModuleList([DecoderBlock(c.n_embd, c.n_head, c.dropout, c.bias)
                                      for _ in range(c.n_layer_dec)])
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight                  # tied, as in the GPT
        # GPT-2's initialisation (exercise 11): Linear and Embedding weights N(0, 0.02^2), biases 0.
        self.apply(GPT._init_weights)

    def encode(self, src: torch.Tensor, src_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """src (B, S) ids -> memory (B, S, C), read once per input."""
        S = src.shape[1]
        if S > self.config.max_src_len:
            raise ValueError(f"input of length {S} is longer than max_src_len="
                             f"{self.config.max_src_len}: shorten it or build a larger model")
        x = self.drop(self.wte(src) + self.enc_wpe(torch.arange(S, device=src.device)))
        for block in self.encoder:
            x = block(x, src_padding_mask)
        return self.ln_enc(x)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor,
               src_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """tgt_in (B, T) ids written so far (BOS first) -> logits (B, T, V) for the next token."""
        T = tgt_in.shape[1]
        if T > self.config.max_tgt_len:
            raise ValueError(f"decoder input of length {T} is longer than max_tgt_len="
                             f"{self.config.max_tgt_len}")
        x = self.drop(self.wte(tgt_in) + self.dec_wpe(torch.arange(T, device=tgt_in.device)))
        for block in self.decoder:
            x = block(x, memory, src_padding_mask)
        return self.lm_head(self.ln_f(x))

    def forward(self, src: torch.Tensor, src_padding_mask: torch.Tensor | None,
                tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V): decode(tgt_in, encode(src, src_padding_mask), src_padding_mask)."""
        return self.decode(tgt_in, self.encode(src, src_padding_mask), src_padding_mask)


def seq2seq_loss(model: nn.Module, src: torch.Tensor, src_padding_mask: torch.Tensor | None,
                 targets: torch.Tensor, bos_id: int = BOS_ID, pad_id: int = PAD_ID) -> torch.Tensor:
    """Teacher-forced cross-entropy: the decoder reads BOS + targets[:, :-1] and predicts
    targets (B, T); the mean over positions whose target is not pad_id, as a scalar tensor."""
    # Shift right: position t reads BOS and the first t targets, and must predict target t.
    tgt_in = torch.cat([torch.full_like(targets[:, :1], bos_id), targets[:, :-1]], dim=1)
    logits = model(src, src_padding_mask, tgt_in)                  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=pad_id)                    # padded targets do not count


@torch.no_grad()
def greedy_decode(model: nn.Module, src: torch.Tensor, src_padding_mask: torch.Tensor | None,
                  max_len: int = TARGET_LEN, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                  pad_id: int = PAD_ID) -> torch.Tensor:
    """The most likely token at every step, from BOS until every sequence has written eos_id
    or max_len tokens are written. Returns (B, L), L <= max_len, without BOS; after its EOS
    a sequence holds pad_id."""
    memory = model.encode(src, src_padding_mask)                    # the input is read once
    written = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits = model.decode(written, memory, src_padding_mask)[:, -1, :]  # the last position
        next_token = logits.argmax(dim=-1).masked_fill(finished, pad_id)    # (B,)
        written = torch.cat([written, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if finished.all():
            break
    return written[:, 1:]


@dataclass
class TrainConfig:
    steps: int = 400           # optimisation steps; the cosine schedule ends here
    batch_size: int = 64       # pairs per step
    max_lr: float = 5e-3       # peak learning rate, reached at the end of warm-up
    min_lr: float = 5e-4       # floor of the cosine decay
    warmup_steps: int = 50     # linear warm-up
    weight_decay: float = 0.01
    grad_clip: float = 1.0     # max global gradient norm
    seed: int = 0              # the training pairs (the initial weights are the caller's)


def train(model: Seq2Seq, config: TrainConfig) -> dict:
    """Train on make_pairs(steps * batch_size, config.seed, "train"); returns the history:
    "loss" (every step's training loss) and "seconds" (the wall time of the loop)."""
    pairs = make_pairs(config.steps * config.batch_size, config.seed, "train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, betas=(0.9, 0.98),
                                  weight_decay=config.weight_decay)
    history = {"loss": [], "seconds": 0.0}
    model.train()
    start = time.perf_counter()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, max_lr=config.max_lr, min_lr=config.min_lr,
                                warmup_steps=config.warmup_steps, total_steps=config.steps)
        batch = pairs[step * config.batch_size:(step + 1) * config.batch_size]
        src, src_padding_mask, targets = encode_batch(batch)
        loss = seq2seq_loss(model, src, src_padding_mask, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        history["loss"].append(loss.item())
    history["seconds"] = time.perf_counter() - start
    model.eval()
    return history


def convert(model: Seq2Seq, sources: list[str], max_len: int = TARGET_LEN) -> list[str]:
    """The model's ISO date for each written date: greedy decoding, cut at the first EOS."""
    src, src_padding_mask, _ = encode_batch([(source, "") for source in sources])
    written = greedy_decode(model, src, src_padding_mask, max_len=max_len)
    return [TOKENIZER.decode(row.tolist()).split(EOS)[0].rstrip(PAD) for row in written]


def exact_match(model: Seq2Seq, pairs) -> float:
    """The fraction of pairs whose output the model writes exactly."""
    outputs = convert(model, [source for source, _ in pairs])
    return sum(out == target for out, (_, target) in zip(outputs, pairs)) / len(pairs)
