"""Wrong versions of WordPieceTokenizer, EncoderBlock and Encoder (exercise 13_encoder).

Each mistake is the solution cell's own code with one small change; `edited` fails loudly if
the text it changes is not in that cell exactly once.
"""
from . import Mistake, edited, solution_source

EXERCISE = "13_encoder"

TOKENIZER = "WordPieceTokenizer"
BLOCK = "EncoderBlock"
ENCODER = "Encoder"

# The solution cells' own code, which every mistake edits.
RIGHT = {cell: solution_source(EXERCISE, cell) for cell in (TOKENIZER, BLOCK, ENCODER)}

MISTAKES = [
    # ------------------------------------------------------------- WordPieceTokenizer
    Mistake("no_lower_case", TOKENIZER, edited(RIGHT[TOKENIZER], (
        "            if self.lower_case:\n", "            if False:\n"),
    ), says="not lower-cased"),
    Mistake("accents_kept", TOKENIZER, edited(RIGHT[TOKENIZER], (
        '                word = "".join(c for c in unicodedata.normalize("NFD", word)\n'
        '                               if unicodedata.category(c) != "Mn")\n', ""),
    ), says="accents are kept"),
    Mistake("punctuation_not_split", TOKENIZER, edited(RIGHT[TOKENIZER], (
        "                if is_punctuation(ch):", "                if False:"),
    ), says="Punctuation stays attached"),
    Mistake("no_continuation_prefix", TOKENIZER, edited(RIGHT[TOKENIZER], (
        'candidate = word[start:end] if start == 0 else "##" + word[start:end]',
        "candidate = word[start:end]"),
    ), says="starts with ##"),
    Mistake("shortest_match_first", TOKENIZER, edited(RIGHT[TOKENIZER], (
        "            end, piece = len(word), None\n            while end > start:\n",
        "            end, piece = start + 1, None\n            while end <= len(word):\n"),
        ("                end -= 1\n", "                end += 1\n"),
    ), says="longest match first"),

    # -------------------------------------------------------------------- EncoderBlock
    Mistake("pre_norm", BLOCK, edited(RIGHT[BLOCK],
        ("        q = self.query(x)", "        h_in = self.ln_1(x)\n        q = self.query(h_in)"),
        ("k = self.key(x)", "k = self.key(h_in)"),
        ("v = self.value(x)", "v = self.value(h_in)"),
        ("        x = self.ln_1(x + self.attn_out(y))\n"
         "        return self.ln_2(x + self.ffn_out(F.gelu(self.ffn_in(x))))\n",
         "        x = x + self.attn_out(y)\n"
         "        return x + self.ffn_out(F.gelu(self.ffn_in(self.ln_2(x))))\n"),
    ), says="post-norm"),
    Mistake("padding_not_masked", BLOCK, edited(RIGHT[BLOCK], (
        'weights = torch.softmax(scores.masked_fill(padding, float("-inf")), dim=-1)',
        "weights = torch.softmax(scores, dim=-1)"),
    ), says="padding is not masked"),
    Mistake("gelu_tanh", BLOCK, edited(RIGHT[BLOCK], (
        "F.gelu(self.ffn_in(x))", 'F.gelu(self.ffn_in(x), approximate="tanh")'),
    ), says="tanh approximation"),
    Mistake("not_scaled", BLOCK, edited(RIGHT[BLOCK], (
        " / math.sqrt(C // h)", ""),
    ), says="not scaled"),

    # ------------------------------------------------------------------------- Encoder
    Mistake("no_position_embeddings", ENCODER, edited(RIGHT[ENCODER], (
        " + self.pos_emb(positions)", ""),
    ), says="position embeddings are missing"),
    Mistake("no_embedding_layernorm", ENCODER, edited(RIGHT[ENCODER], (
        "        x = self.ln_emb(x)\n", ""),
    ), says="ln_emb is not applied"),
    Mistake("mean_includes_padding", ENCODER, edited(RIGHT[ENCODER], (
        "mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)",
        "mean = hidden.mean(dim=1)"),
    ), says="padding is included in the mean"),
    Mistake("cls_pooling", ENCODER, edited(RIGHT[ENCODER], (
        "mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)",
        "mean = hidden[:, 0]"),
    ), says="[CLS] pooling"),
    Mistake("not_normalised", ENCODER, edited(RIGHT[ENCODER], (
        "return F.normalize(mean, p=2, dim=-1)", "return mean"),
    ), says="not normalised"),
    # The right numbers from PyTorch's attention kernel: the exercise is to write it.
    Mistake("block_uses_sdpa", BLOCK, edited(RIGHT[BLOCK], (
        "        scores = q @ k.transpose(-2, -1) / math.sqrt(C // h)        # (B, h, T, T): query, key\n"
        "        padding = ~attention_mask.bool()[:, None, None, :]           # (B, 1, 1, T): blocks keys\n"
        '        weights = torch.softmax(scores.masked_fill(padding, float("-inf")), dim=-1)\n'
        "        y = (weights @ v).transpose(1, 2).reshape(B, T, C)\n",
        "        keep = attention_mask.bool()[:, None, None, :]\n"
        "        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)\n"
        "        y = y.transpose(1, 2).reshape(B, T, C)\n"),
    ), says="uses F.scaled_dot_product_attention, which does the exercise for you"),
]
