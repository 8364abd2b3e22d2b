"""Wrong versions of MultiHeadAttention (exercise 06_multihead).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
Most instructive first (the first three go through real nbgrader); the library shortcuts last.
"""
from . import Mistake, edited

EXERCISE = "06_multihead"
CELL = "MultiHeadAttention"

RIGHT = '''class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.randn(3 * embed_dim, embed_dim) / embed_dim ** 0.5)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        B, L, E = query.shape
        S = key.shape[1]
        h, d = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        if self.in_proj_bias is None:
            b_q = b_k = b_v = None
        else:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = nn.functional.linear(query, w_q, b_q)
        k = nn.functional.linear(key, w_k, b_k)
        v = nn.functional.linear(value, w_v, b_v)

        def split(x):
            return x.view(B, x.shape[1], h, d).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, float("-inf"))
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, L, E)
        out = self.out_proj(out)
        if need_weights:
            return out, weights.mean(dim=1)
        return out, None
'''


MISTAKES = [
    # Right shape, wrong contents: each "head" holds features of several positions.
    Mistake("split_without_transpose", CELL, edited(RIGHT,
        ("return x.view(B, x.shape[1], h, d).transpose(1, 2)", "return x.reshape(B, h, x.shape[1], d)"),
    ), says="split by reshape alone"),
    Mistake("merge_without_transpose", CELL, edited(RIGHT,
        ("(weights @ v).transpose(1, 2).reshape(B, L, E)", "(weights @ v).reshape(B, L, E)"),
    ), says="merged by reshape alone"),
    Mistake("missing_scale", CELL, edited(RIGHT,
        ("q @ k.transpose(-2, -1) / math.sqrt(d)", "q @ k.transpose(-2, -1)"),
    ), says="not scaled"),
    Mistake("scaled_by_sqrt_embed_dim", CELL, edited(RIGHT,
        ("q @ k.transpose(-2, -1) / math.sqrt(d)", "q @ k.transpose(-2, -1) / math.sqrt(E)"),
    ), says="not sqrt(embed_dim)"),
    Mistake("scaled_by_embed_dim", CELL, edited(RIGHT,
        ("q @ k.transpose(-2, -1) / math.sqrt(d)", "q @ k.transpose(-2, -1) / E"),
    ), says="not by embed_dim"),
    # Exercise 02's convention (True = may attend) carried over to nn.MultiheadAttention's.
    Mistake("mask_polarity_inverted", CELL, edited(RIGHT,
        ("scores.masked_fill(attn_mask, ", "scores.masked_fill(~attn_mask, "),
        ("scores.masked_fill(key_padding_mask[:, None, None, :], ",
         "scores.masked_fill(~key_padding_mask[:, None, None, :], "),
    ), says="True means blocked"),
    Mistake("mask_after_softmax", CELL, edited(RIGHT,
        ("        if attn_mask is not None:\n"
         "            scores = scores.masked_fill(attn_mask, float(\"-inf\"))\n"
         "        if key_padding_mask is not None:\n"
         "            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float(\"-inf\"))\n", ""),
        ("        weights = torch.softmax(scores, dim=-1)\n        out",
         "        weights = torch.softmax(scores, dim=-1)\n"
         "        if attn_mask is not None:\n"
         "            weights = weights.masked_fill(attn_mask, 0.0)\n"
         "        if key_padding_mask is not None:\n"
         "            weights = weights.masked_fill(key_padding_mask[:, None, None, :], 0.0)\n"
         "        out"),
    ), says="applied after the softmax"),
    Mistake("padding_mask_on_queries", CELL, edited(RIGHT,
        ("key_padding_mask[:, None, None, :]", "key_padding_mask[:, None, :, None]"),
    ), says="blocks queries"),
    Mistake("per_head_weights", CELL, edited(RIGHT,
        ("return out, weights.mean(dim=1)", "return out, weights"),
    ), says="average over the heads"),
    Mistake("weights_summed_over_heads", CELL, edited(RIGHT,
        ("return out, weights.mean(dim=1)", "return out, weights.sum(dim=1)"),
    ), says="summed over the heads"),
    Mistake("missing_output_projection", CELL, edited(RIGHT,
        ("        out = self.out_proj(out)\n", ""),
    ), says="output projection is missing"),
    Mistake("qkv_order_wrong", CELL, edited(RIGHT,
        ("w_q, w_k, w_v = self.in_proj_weight.chunk(3)", "w_k, w_q, w_v = self.in_proj_weight.chunk(3)"),
        ("b_q, b_k, b_v = self.in_proj_bias.chunk(3)", "b_k, b_q, b_v = self.in_proj_bias.chunk(3)"),
    ), says="sliced in the wrong order"),
    Mistake("separate_projection_layers", CELL, edited(RIGHT,
        ("        self.in_proj_weight = nn.Parameter(torch.randn(3 * embed_dim, embed_dim) / embed_dim ** 0.5)\n"
         "        if bias:\n"
         "            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))\n"
         "        else:\n"
         "            self.register_parameter(\"in_proj_bias\", None)\n",
         "        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)\n"
         "        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)\n"
         "        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)\n"),
        ("        w_q, w_k, w_v = self.in_proj_weight.chunk(3)\n"
         "        if self.in_proj_bias is None:\n"
         "            b_q = b_k = b_v = None\n"
         "        else:\n"
         "            b_q, b_k, b_v = self.in_proj_bias.chunk(3)\n"
         "        q = nn.functional.linear(query, w_q, b_q)\n"
         "        k = nn.functional.linear(key, w_k, b_k)\n"
         "        v = nn.functional.linear(value, w_v, b_v)\n",
         "        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)\n"),
    ), says="Expected exactly: in_proj_weight"),
    Mistake("in_proj_bias_unused", CELL, edited(RIGHT,
        ("            b_q, b_k, b_v = self.in_proj_bias.chunk(3)", "            b_q = b_k = b_v = None"),
    ), says="in_proj_bias"),
    Mistake("softmax_over_queries", CELL, edited(RIGHT,
        ("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=-2)"),
    ), says="dim=-1"),
    Mistake("need_weights_ignored", CELL, edited(RIGHT,
        ("        if need_weights:\n            return out, weights.mean(dim=1)\n        return out, None\n",
         "        return out, weights.mean(dim=1)\n"),
    ), says="need_weights=False"),
    Mistake("weights_buffer_not_parameter", CELL, edited(RIGHT,
        ("self.in_proj_weight = nn.Parameter(torch.randn(3 * embed_dim, embed_dim) / embed_dim ** 0.5)",
         "self.register_buffer(\"in_proj_weight\", torch.randn(3 * embed_dim, embed_dim))"),
    ), says="not registered as a parameter"),
    # Correct numbers, but the library does the work the exercise asks for.
    Mistake("uses_scaled_dot_product_attention", CELL, edited(RIGHT,
        ("        out = (weights @ v).transpose(1, 2).reshape(B, L, E)\n",
         "        out = nn.functional.scaled_dot_product_attention(\n"
         "            q, k, v, attn_mask=~scores.isinf()).transpose(1, 2).reshape(B, L, E)\n"),
    ), says="does the exercise for you"),
    # PyTorch's own module, subclassed: the right numbers, the exercise done for you.
    Mistake("subclasses_nn_multiheadattention", CELL,
            "class MultiHeadAttention(nn.MultiheadAttention):\n"
            "    def __init__(self, embed_dim, num_heads, bias=True):\n"
            "        super().__init__(embed_dim, num_heads, bias=bias, batch_first=True)\n",
            says="uses nn.MultiheadAttention, which does the exercise for you"),
]
