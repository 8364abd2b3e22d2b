# GENERATED from solutions/06_multihead/06_multihead.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""Multi-head attention as an nn.Module with torch.nn.MultiheadAttention's parameter layout: the reference for exercise 06_multihead."""
import math

import torch
from torch import nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention laid out like torch.nn.MultiheadAttention(E, h, batch_first=True).

    Parameters, with nn.MultiheadAttention's names and shapes so that its state_dict loads:
      in_proj_weight (3E, E): rows [0:E] project the query, [E:2E] the key, [2E:3E] the value;
      in_proj_bias (3E,): their biases in the same order, or None when bias=False;
      out_proj: nn.Linear(E, E, bias=bias), applied to the merged heads.
    """

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        else:
            # The attribute exists (forward can test it) but stays out of the state_dict.
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        # nn.MultiheadAttention's initialisation, so that a fresh module trains like one.
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        """Attend from every query position to the key positions, in num_heads heads.

        query: (B, L, E); key, value: (B, S, E).
        key_padding_mask: optional bool (B, S); True = that key is padding (blocked).
        attn_mask: optional bool (L, S); True = query i may NOT attend to key j.
        Returns (output, weights): output (B, L, E); weights (B, L, S), the attention
        weights averaged over the heads, or None when need_weights is False.
        """
        B, L, E = query.shape
        S = key.shape[1]
        h, d = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        q = nn.functional.linear(query, w_q, b_q)         # (B, L, E)
        k = nn.functional.linear(key, w_k, b_k)           # (B, S, E)
        v = nn.functional.linear(value, w_v, b_v)         # (B, S, E)

        # Head j owns features j*d to (j+1)*d of every position; the transpose then gives
        # each head its own (positions, d) matrix without mixing positions.
        q = q.view(B, L, h, d).transpose(1, 2)            # (B, h, L, d)
        k = k.view(B, S, h, d).transpose(1, 2)            # (B, h, S, d)
        v = v.view(B, S, h, d).transpose(1, 2)            # (B, h, S, d)

        # A head's dot product sums d products, so its spread grows like sqrt(d), not sqrt(E).
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)   # (B, h, L, S)
        if attn_mask is not None:                         # (L, S): the same for every b and head
            scores = scores.masked_fill(attn_mask, float("-inf"))
        if key_padding_mask is not None:                  # (B, 1, 1, S): whole key columns
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)           # (B, h, L, S)

        out = weights @ v                                 # (B, h, L, d)
        # The transpose made out non-contiguous: reshape copies where view would refuse.
        out = out.transpose(1, 2).reshape(B, L, E)        # (B, L, E): heads side by side again
        out = self.out_proj(out)
        return out, (weights.mean(dim=1) if need_weights else None)
