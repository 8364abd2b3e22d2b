# GENERATED from solutions/11_gpt/11_gpt.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""The decoder-only GPT: its config, the model with a head tied to the token embedding, sampling with temperature and top-k, and the parameter count: the reference for exercise 11_gpt."""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmref.block import Block


@dataclass
class GPTConfig:
    vocab_size: int = 103    # tokens the model reads and predicts (103 characters in Part III)
    block_size: int = 128    # context: the longest sequence the model accepts
    n_layer: int = 4         # transformer blocks
    n_head: int = 4          # attention heads per block; n_embd must be a multiple
    n_embd: int = 128        # width of the residual stream
    dropout: float = 0.0     # off: a small model trained for minutes does not overfit
    bias: bool = True        # biases in Linear and LayerNorm layers, as GPT-2 has


class GPT(nn.Module):
    """A decoder-only transformer: token + position embeddings, n_layer Blocks, a final
    LayerNorm and an output head tied to the token embedding. Names follow GPT-2, so that
    its checkpoints load by a state-dict copy."""

    def __init__(self, config: GPTConfig):
        """Build the modules of the table above and initialise them as GPT-2 does.

        transformer: wte (V, C), wpe (block_size, C), drop, h (n_layer Blocks), ln_f;
        lm_head: nn.Linear(C, V, bias=False) whose weight IS transformer.wte.weight.
        """
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config.n_embd, config.n_head, config.dropout, config.bias)
                             for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Tied: one (V, C) matrix reads tokens in (a row lookup) and scores them out (a dot
        # product with every row); backward adds the gradients of both uses into it.
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # each block adds two of these to the residual stream
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2's initialisation of one module: Linear and Embedding weights N(0, 0.02^2),
        Linear biases 0. LayerNorms keep PyTorch's weight 1, bias 0."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) token ids -> (logits (B, T, V), loss or None).

        targets (B, T), already shifted: targets[:, t] is the token after idx[:, t]. The loss
        is the mean cross-entropy over all B*T positions. Raises ValueError if T > block_size.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than the model's context "
                             f"block_size={self.config.block_size}: crop it to its last "
                             f"{self.config.block_size} tokens")
        pos = torch.arange(T, device=idx.device)                  # the same for every sequence
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)                                          # (B, T, C)
        logits = self.lm_head(self.transformer.ln_f(x))           # (B, T, V)
        loss = None
        if targets is not None:
            # One row of V logits per position, one target id per position, in the same order.
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T); returns (B, T + max_new_tokens).

        Each step: crop to the last block_size tokens, take the last position's logits,
        divide by temperature, keep the top_k largest (others -inf), softmax, and draw with
        torch.multinomial(probs, num_samples=1, generator=generator). Raises ValueError for
        temperature <= 0 or top_k < 1.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; for greedy decoding "
                             "use top_k=1")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1 (1 is greedy decoding), got {top_k}")
        was_training = self.training
        self.eval()                                               # dropout off while sampling
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]            # the model has no later positions
            logits = self(context)[0][:, -1, :] / temperature      # (B, V): the next token only
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))  # probability exactly 0
            probs = torch.softmax(logits, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
        self.train(was_training)
        return idx


def count_parameters(config: GPTConfig) -> int:
    """The number of parameters of GPT(config), from the formula (the tied head counts once)."""
    C, bias = config.n_embd, int(config.bias)
    norm = C + bias * C                               # a LayerNorm's weight (and bias)
    per_block = 12 * C * C + bias * 9 * C + 2 * norm  # 4 Linear layers (3C+C+4C+C biases), 2 norms
    return config.vocab_size * C + config.block_size * C + config.n_layer * per_block + norm
