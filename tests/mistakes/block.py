"""Wrong versions of CausalSelfAttention, MLP and Block (exercise 10_block).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "10_block"

RIGHT_ATTENTION = '''class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
        super().__init__()
        if n_embd % n_head:
            raise ValueError("n_embd must be divisible by n_head")
        self.n_embd, self.n_head = n_embd, n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        att = q @ k.transpose(-2, -1) / math.sqrt(hs)
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=1)
        att = att.masked_fill(mask, float("-inf"))
        att = torch.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))
'''

RIGHT_MLP = '''class MLP(nn.Module):
    def __init__(self, n_embd, dropout=0.0, bias=True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        h = self.gelu(self.c_fc(x))
        return self.dropout(self.c_proj(h))
'''

RIGHT_BLOCK = '''class Block(nn.Module):
    def __init__(self, n_embd, n_head, dropout=0.0, bias=True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout=dropout, bias=bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout=dropout, bias=bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x
'''


ATTENTION = "CausalSelfAttention"
MLP = "MLP"
BLOCK = "Block"

MISTAKES = [
    # ------------------------------------------------------------ CausalSelfAttention
    Mistake("no_mask", ATTENTION, edited(RIGHT_ATTENTION,
        ('        att = att.masked_fill(mask, float("-inf"))\n', ""),
    ), says="sees the future"),
    Mistake("mask_on_the_wrong_side", ATTENTION, edited(RIGHT_ATTENTION,
        ("torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=1)",
         "torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=-1)"),
    ), says="wrong side of the diagonal"),
    Mistake("mask_blocks_the_diagonal", ATTENTION, edited(RIGHT_ATTENTION,
        ("device=x.device), diagonal=1)", "device=x.device), diagonal=0)"),
    ), says="also blocks the diagonal"),
    Mistake("mask_after_softmax", ATTENTION, edited(RIGHT_ATTENTION,
        ('        att = att.masked_fill(mask, float("-inf"))\n        att = torch.softmax(att, dim=-1)\n',
         '        att = torch.softmax(att, dim=-1).masked_fill(mask, 0.0)\n'),
    ), says="after the softmax"),
    Mistake("scaled_by_sqrt_n_embd", ATTENTION, edited(RIGHT_ATTENTION,
        ("/ math.sqrt(hs)", "/ math.sqrt(C)"),
    ), says="not sqrt(n_embd)"),
    Mistake("not_scaled", ATTENTION, edited(RIGHT_ATTENTION,
        (" / math.sqrt(hs)", ""),
    ), says="not scaled"),
    Mistake("heads_split_without_transpose", ATTENTION, edited(RIGHT_ATTENTION,
        ("q = q.view(B, T, self.n_head, hs).transpose(1, 2)", "q = q.reshape(B, self.n_head, T, hs)"),
        ("k = k.view(B, T, self.n_head, hs).transpose(1, 2)", "k = k.reshape(B, self.n_head, T, hs)"),
        ("v = v.view(B, T, self.n_head, hs).transpose(1, 2)", "v = v.reshape(B, self.n_head, T, hs)"),
    ), says="split by reshape alone"),
    Mistake("heads_merged_without_transpose", ATTENTION, edited(RIGHT_ATTENTION,
        ("y.transpose(1, 2).reshape(B, T, C)", "y.reshape(B, T, C)"),
    ), says="merged by reshape alone"),
    Mistake("qkv_order_swapped", ATTENTION, edited(RIGHT_ATTENTION,
        ("q, k, v = self.c_attn(x).split(C, dim=2)", "k, q, v = self.c_attn(x).split(C, dim=2)"),
    ), says="split in the wrong order"),
    Mistake("no_output_projection", ATTENTION, edited(RIGHT_ATTENTION,
        ("return self.resid_dropout(self.c_proj(y))", "return self.resid_dropout(y)"),
    ), says="c_proj is missing"),
    # F.dropout's training argument defaults to True: dropout keeps running after .eval().
    Mistake("dropout_applied_in_eval", ATTENTION, edited(RIGHT_ATTENTION,
        ("att = self.attn_dropout(att)", "att = F.dropout(att, self.attn_dropout.p)"),
    ), says="still applied in evaluation"),
    Mistake("dropout_never_applied", ATTENTION, edited(RIGHT_ATTENTION,
        ("        att = self.attn_dropout(att)\n", ""),
        ("return self.resid_dropout(self.c_proj(y))", "return self.c_proj(y)"),
    ), says="dropout is never applied"),
    Mistake("uses_scaled_dot_product_attention", ATTENTION, edited(RIGHT_ATTENTION,
        ("        y = att @ v\n",
         "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n"),
    ), says="does the exercise for you"),
    Mistake("separate_q_k_v_layers", ATTENTION, edited(RIGHT_ATTENTION,
        ("        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)\n",
         "        self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)\n"
         "        self.k_proj = nn.Linear(n_embd, n_embd, bias=bias)\n"
         "        self.v_proj = nn.Linear(n_embd, n_embd, bias=bias)\n"),
        ("q, k, v = self.c_attn(x).split(C, dim=2)", "q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)"),
    ), says="one nn.Linear named c_attn"),
    # A mask kept as a saved buffer: GPT-2's state_dict no longer loads.
    Mistake("mask_saved_in_the_state_dict", ATTENTION, edited(RIGHT_ATTENTION,
        ("        self.resid_dropout = nn.Dropout(dropout)\n",
         "        self.resid_dropout = nn.Dropout(dropout)\n"
         "        self.register_buffer(\"mask\", torch.ones(1024, 1024, dtype=torch.bool).triu(1))\n"),
        ("mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=1)",
         "mask = self.mask[:T, :T]"),
    ), says="persistent=False"),

    # ---------------------------------------------------------------------------- MLP
    Mistake("relu_not_gelu", MLP, edited(RIGHT_MLP,
        ("self.gelu = nn.GELU()", "self.gelu = nn.ReLU()"),
    ), says="ReLU, not GELU"),
    Mistake("gelu_tanh_approximation", MLP, edited(RIGHT_MLP,
        ("self.gelu = nn.GELU()", 'self.gelu = nn.GELU(approximate="tanh")'),
    ), says="tanh approximation"),
    Mistake("no_activation", MLP, edited(RIGHT_MLP,
        ("h = self.gelu(self.c_fc(x))", "h = self.c_fc(x)"),
    ), says="no activation"),
    Mistake("mlp_dropout_applied_in_eval", MLP, edited(RIGHT_MLP,
        ("return self.dropout(self.c_proj(h))", "return F.dropout(self.c_proj(h), self.dropout.p)"),
    ), says="still applied in evaluation"),
    Mistake("mlp_not_widened", MLP, edited(RIGHT_MLP,
        ("self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)", "self.c_fc = nn.Linear(n_embd, n_embd, bias=bias)"),
        ("self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)", "self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)"),
    ), says="c_fc widens each position to 4 * n_embd"),

    # -------------------------------------------------------------------------- Block
    Mistake("post_norm", BLOCK, edited(RIGHT_BLOCK,
        ("x = x + self.attn(self.ln_1(x))", "x = self.ln_1(x + self.attn(x))"),
        ("x = x + self.mlp(self.ln_2(x))", "x = self.ln_2(x + self.mlp(x))"),
    ), says="post-norm"),
    Mistake("no_attention_residual", BLOCK, edited(RIGHT_BLOCK,
        ("x = x + self.attn(self.ln_1(x))", "x = self.attn(self.ln_1(x))"),
    ), says="no residual connection around the attention"),
    Mistake("no_mlp_residual", BLOCK, edited(RIGHT_BLOCK,
        ("x = x + self.mlp(self.ln_2(x))", "x = self.mlp(self.ln_2(x))"),
    ), says="no residual connection around the MLP"),
    Mistake("stream_normalised", BLOCK, edited(RIGHT_BLOCK,
        ("        x = x + self.attn(self.ln_1(x))\n        x = x + self.mlp(self.ln_2(x))\n",
         "        x = self.ln_1(x)\n        x = x + self.attn(x)\n"
         "        x = self.ln_2(x)\n        x = x + self.mlp(x)\n"),
    ), says="residual stream itself is normalised"),
    Mistake("ln_1_twice", BLOCK, edited(RIGHT_BLOCK,
        ("x = x + self.mlp(self.ln_2(x))", "x = x + self.mlp(self.ln_1(x))"),
    ), says="ln_1 is used before the MLP too"),
    Mistake("mlp_reads_the_block_input", BLOCK, edited(RIGHT_BLOCK,
        ("        x = x + self.attn(self.ln_1(x))\n        x = x + self.mlp(self.ln_2(x))\n",
         "        x = x + self.attn(self.ln_1(x)) + self.mlp(self.ln_2(x))\n"),
    ), says="side by side"),
    Mistake("dropout_not_passed_on", BLOCK, edited(RIGHT_BLOCK,
        ("CausalSelfAttention(n_embd, n_head, dropout=dropout, bias=bias)",
         "CausalSelfAttention(n_embd, n_head, bias=bias)"),
        ("MLP(n_embd, dropout=dropout, bias=bias)", "MLP(n_embd, bias=bias)"),
    ), says="dropout is never applied"),
    Mistake("bias_not_passed_on", BLOCK, edited(RIGHT_BLOCK,
        ("self.ln_1 = nn.LayerNorm(n_embd, bias=bias)", "self.ln_1 = nn.LayerNorm(n_embd)"),
        ("self.ln_2 = nn.LayerNorm(n_embd, bias=bias)", "self.ln_2 = nn.LayerNorm(n_embd)"),
    ), says="With bias=False there are no biases"),
    Mistake("uses_transformer_encoder_layer", BLOCK, edited(RIGHT_BLOCK,
        ("        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)\n",
         "        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)\n"
         "        self.layer = nn.TransformerEncoderLayer(n_embd, n_head, 4 * n_embd, dropout,\n"
         "                                                activation=\"gelu\", batch_first=True,\n"
         "                                                norm_first=True)\n"),
        ("        x = x + self.attn(self.ln_1(x))\n        x = x + self.mlp(self.ln_2(x))\n",
         "        future = nn.Transformer.generate_square_subsequent_mask(x.shape[1])\n"
         "        x = self.layer(x, src_mask=future, is_causal=True)\n"),
    ), says="uses nn.TransformerEncoderLayer"),
]
