"""Wrong versions of the pieces of exercise 14_seq2seq: cross-attention, the teacher-forcing
loss and greedy decoding.

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "14_seq2seq"

CROSS = '''class CrossAttention(nn.Module):
    def __init__(self, n_embd, n_head, bias=True):
        super().__init__()
        self.n_embd, self.n_head = n_embd, n_head
        self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.k_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.v_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.out_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x, memory, padding_mask=None, return_weights=False):
        B, T, C = x.shape
        S = memory.shape[1]
        h = self.n_head
        d = C // h
        q = self.q_proj(x).view(B, T, h, d).transpose(1, 2)
        k = self.k_proj(memory).view(B, S, h, d).transpose(1, 2)
        v = self.v_proj(memory).view(B, S, h, d).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if padding_mask is not None:
            scores = scores.masked_fill(padding_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        y = self.out_proj((weights @ v).transpose(1, 2).reshape(B, T, C))
        if return_weights:
            return y, weights
        return y
'''

LOSS = '''def seq2seq_loss(model, src, src_padding_mask, targets, bos_id=BOS_ID, pad_id=PAD_ID):
    bos = torch.full_like(targets[:, :1], bos_id)
    tgt_in = torch.cat([bos, targets[:, :-1]], dim=1)
    logits = model(src, src_padding_mask, tgt_in)
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=pad_id)
'''

GREEDY = '''@torch.no_grad()
def greedy_decode(model, src, src_padding_mask, max_len=TARGET_LEN, bos_id=BOS_ID, eos_id=EOS_ID,
                  pad_id=PAD_ID):
    B = src.shape[0]
    memory = model.encode(src, src_padding_mask)
    written = torch.full((B, 1), bos_id, dtype=torch.long)
    finished = torch.zeros(B, dtype=torch.bool)
    for step in range(max_len):
        logits = model.decode(written, memory, src_padding_mask)
        next_token = logits[:, -1, :].argmax(dim=-1)
        next_token = next_token.masked_fill(finished, pad_id)
        written = torch.cat([written, next_token[:, None]], dim=1)
        finished = finished | (next_token == eos_id)
        if finished.all():
            break
    return written[:, 1:]
'''


MISTAKES = [
    # ---- CrossAttention
    # Self-attention by habit: keys (and values) projected from the decoder's own positions.
    Mistake("keys_from_decoder", "CrossAttention", edited(
        CROSS,
        ("k = self.k_proj(memory).view(B, S, h, d)", "k = self.k_proj(x).view(B, T, h, d)"),
    ), says="keys and values from `memory`"),
    # Exercise 02's convention (True = may attend) carried over.
    Mistake("mask_inverted", "CrossAttention", edited(
        CROSS, ("padding_mask[:, None, None, :], float", "~padding_mask[:, None, None, :], float"),
    ), says="wrong way round"),
    Mistake("mask_not_applied", "CrossAttention", edited(
        CROSS,
        ('            scores = scores.masked_fill(padding_mask[:, None, None, :], float("-inf"))\n',
         "            pass\n"),
    ), says="ignores the padding mask"),
    # A GPT's causal mask copied into cross-attention.
    Mistake("causal_mask", "CrossAttention", edited(
        CROSS,
        ("        weights = torch.softmax(scores, dim=-1)",
         "        future = torch.ones(T, S, dtype=torch.bool).triu(1)\n"
         "        scores = scores.masked_fill(future, float(\"-inf\"))\n"
         "        weights = torch.softmax(scores, dim=-1)"),
    ), says="has a causal mask"),
    Mistake("no_scale", "CrossAttention", edited(
        CROSS, ("q @ k.transpose(-2, -1) / math.sqrt(d)", "q @ k.transpose(-2, -1)"),
    ), says="not scaled"),

    # ---- seq2seq_loss
    Mistake("no_shift", "seq2seq_loss", edited(
        LOSS, ("logits = model(src, src_padding_mask, tgt_in)", "logits = model(src, src_padding_mask, targets)"),
    ), says="not shifted"),
    Mistake("drops_first_target", "seq2seq_loss", edited(
        LOSS, ("torch.cat([bos, targets[:, :-1]], dim=1)", "torch.cat([bos, targets[:, 1:]], dim=1)"),
    ), says="drops the first target token"),
    Mistake("padding_counted", "seq2seq_loss", edited(
        LOSS, (", ignore_index=pad_id)", ")"),
    ), says="counts the padded positions"),
    Mistake("loss_against_decoder_input", "seq2seq_loss", edited(
        LOSS, ("targets.reshape(-1), ignore_index", "tgt_in.reshape(-1), ignore_index"),
    ), says="decoder input instead of the targets"),

    # ---- greedy_decode
    Mistake("does_not_stop_at_eos", "greedy_decode", edited(
        GREEDY, ("        if finished.all():\n            break\n", ""),
    ), says="kept writing after every sequence had written EOS"),
    Mistake("no_padding_after_eos", "greedy_decode", edited(
        GREEDY, ("        next_token = next_token.masked_fill(finished, pad_id)\n", ""),
    ), says="must hold pad_id"),
    Mistake("first_position_logits", "greedy_decode", edited(
        GREEDY, ("logits[:, -1, :].argmax(dim=-1)", "logits[:, 0, :].argmax(dim=-1)"),
    ), says="LAST position"),
    Mistake("stops_when_first_finishes", "greedy_decode", edited(
        GREEDY, ("if finished.all():", "if finished.any():"),
    ), says="when the first sequence finished"),
    # PyTorch's attention kernel: the right numbers, the exercise done for you.
    Mistake("cross_attention_by_sdpa", "CrossAttention", edited(
        CROSS, ("        y = self.out_proj((weights @ v).transpose(1, 2).reshape(B, T, C))\n",
                "        keep = None if padding_mask is None else ~padding_mask[:, None, None, :]\n"
                "        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)\n"
                "        y = self.out_proj(y.transpose(1, 2).reshape(B, T, C))\n"),
    ), says="uses F.scaled_dot_product_attention, which does the exercise for you"),
]
