# GENERATED from solutions/10_block/10_block.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""GPT-2's pre-norm transformer block (CausalSelfAttention, MLP, Block) with GPT-2's parameter names: the reference for exercise 10_block, stacked by llmref.gpt."""
import math

import torch
from torch import nn


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions <= t only.

    Parameters, with GPT-2's names so that its checkpoints load by a state-dict copy:
      c_attn: nn.Linear(C, 3C), queries, keys and values at once; its output features
              [0:C] are the queries, [C:2C] the keys, [2C:3C] the values;
      c_proj: nn.Linear(C, C), applied to the heads put side by side again.
    Dropout at rate `dropout` on the attention weights (attn_dropout) and on the output
    (resid_dropout): nn.Dropout modules, so that .eval() switches them off.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}: each head "
                             "gets n_embd // n_head features, so choose a divisor")
        self.n_embd, self.n_head = n_embd, n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C); the output at position t depends on x[:, :t + 1] only."""
        B, T, C = x.shape
        h = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)                 # 3 x (B, T, C)
        # Head j owns features j*hs to (j+1)*hs of every position: view, then transpose.
        q = q.view(B, T, h, C // h).transpose(1, 2)                # (B, h, T, hs)
        k = k.view(B, T, h, C // h).transpose(1, 2)
        v = v.view(B, T, h, C // h).transpose(1, 2)
        # A head's dot product sums hs products: dividing by sqrt(hs) keeps scores of order 1.
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // h)      # (B, h, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # True where s > t
        scores = scores.masked_fill(future, float("-inf"))
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        y = (weights @ v).transpose(1, 2).reshape(B, T, C)        # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """The per-position network: widen to 4C (c_fc), exact GELU, back to C (c_proj), dropout."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C), each position on its own."""
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)).

    Submodules (GPT-2's names): ln_1, attn (CausalSelfAttention), ln_2, mlp (MLP); each
    built with this block's dropout and bias.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C). The residual stream x is only ever added to."""
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x
