"""Wrong versions of GPT and count_parameters (exercise 11_gpt).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "11_gpt"

RIGHT = '''class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        C = config.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, C),
            wpe=nn.Embedding(config.block_size, C),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(C, config.n_head, config.dropout, config.bias)
                             for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(C, bias=config.bias),
        ))
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        if temperature <= 0:
            raise ValueError("temperature must be positive; use top_k=1 for greedy decoding")
        if top_k is not None and top_k < 1:
            raise ValueError("top_k must be at least 1")
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]
            logits, _ = self(context)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                values, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < values[:, [-1]]] = float("-inf")
            probs = F.softmax(logits, dim=-1)
            next_token = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, next_token), dim=1)
        self.train(was_training)
        return idx
'''

RIGHT_COUNT = '''def count_parameters(config: GPTConfig) -> int:
    C, V, b = config.n_embd, config.vocab_size, int(config.bias)
    linear = lambda n_in, n_out: n_in * n_out + b * n_out
    layer_norm = C + b * C
    block = 2 * layer_norm + linear(C, 3 * C) + linear(C, C) + linear(C, 4 * C) + linear(4 * C, C)
    embeddings = V * C + config.block_size * C
    return embeddings + config.n_layer * block + layer_norm
'''


MISTAKES = [
    # --- __init__
    Mistake("untied_head", "GPT", edited(RIGHT,
        ("        self.lm_head.weight = self.transformer.wte.weight\n", ""),
    ), says="the head is not tied"),
    Mistake("head_with_bias", "GPT", edited(RIGHT,
        ("self.lm_head = nn.Linear(C, config.vocab_size, bias=False)",
         "self.lm_head = nn.Linear(C, config.vocab_size)"),
    ), says="The head has no bias"),
    Mistake("position_table_sized_by_vocab", "GPT", edited(RIGHT,
        ("wpe=nn.Embedding(config.block_size, C)", "wpe=nn.Embedding(config.vocab_size, C)"),
    ), says="one row per position"),
    Mistake("no_init", "GPT", edited(RIGHT,
        ("        self.apply(self._init_weights)\n", ""),
    ), says="std 0.02"),
    Mistake("c_proj_not_scaled", "GPT", edited(RIGHT,
        ("        for name, p in self.named_parameters():\n"
         "            if name.endswith(\"c_proj.weight\"):\n"
         "                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))\n", ""),
    ), says="re-initialise the weights whose names end in c_proj.weight"),
    Mistake("biases_not_zeroed", "GPT", edited(RIGHT,
        ("        if isinstance(module, nn.Linear) and module.bias is not None:\n"
         "            nn.init.zeros_(module.bias)\n", ""),
    ), says="every Linear bias starts at 0"),
    # --- forward
    Mistake("positions_not_added", "GPT", edited(RIGHT,
        ("x = self.transformer.wte(idx) + self.transformer.wpe(pos)", "x = self.transformer.wte(idx)"),
    ), says="position embeddings are not added"),
    Mistake("positions_indexed_by_batch", "GPT", edited(RIGHT,
        ("pos = torch.arange(T, device=idx.device)", "pos = torch.arange(B, device=idx.device)"),
        ("self.transformer.wpe(pos)", "self.transformer.wpe(pos)[:, None, :]"),
    ), says="indexed by the batch"),
    Mistake("positions_from_token_ids", "GPT", edited(RIGHT,
        ("self.transformer.wpe(pos)", "self.transformer.wpe(idx)"),
    ), says="not the token ids"),
    Mistake("missing_final_norm", "GPT", edited(RIGHT,
        ("        x = self.transformer.ln_f(x)\n", ""),
    ), says="final LayerNorm is missing"),
    Mistake("block_output_discarded", "GPT", edited(RIGHT,
        ("            x = block(x)\n", "            block(x)\n"),
    ), says="x = block(x)"),
    Mistake("no_length_check", "GPT", edited(RIGHT,
        ("        if T > self.config.block_size:\n"
         "            raise ValueError(f\"sequence length {T} exceeds block_size {self.config.block_size}\")\n", ""),
    ), says="naming both lengths"),
    Mistake("length_check_without_lengths", "GPT", edited(RIGHT,
        ('raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")',
         'raise ValueError("sequence too long")'),
    ), says="does not name both"),
    # --- the loss
    Mistake("targets_shifted_again", "GPT", edited(RIGHT,
        ("loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))",
         "loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets[:, 1:].reshape(-1))"),
    ), says="shifted again"),
    Mistake("loss_summed", "GPT", edited(RIGHT,
        ("targets.reshape(B * T))", "targets.reshape(B * T), reduction=\"sum\")"),
    ), says="summed over the positions"),
    Mistake("loss_on_probabilities", "GPT", edited(RIGHT,
        ("F.cross_entropy(logits.view(B * T, -1), ", "F.cross_entropy(F.softmax(logits, dim=-1).view(B * T, -1), "),
    ), says="given probabilities"),
    Mistake("loss_flattened_in_different_orders", "GPT", edited(RIGHT,
        ("loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))",
         "loss = F.cross_entropy(logits.view(B * T, -1), targets.t().reshape(B * T))"),
    ), says="flattened in different orders"),
    Mistake("loss_as_float", "GPT", edited(RIGHT,
        ("targets.reshape(B * T))\n", "targets.reshape(B * T)).item()\n"),
    ), says="not a tensor"),
    Mistake("targets_flattened_with_view", "GPT", edited(RIGHT,
        ("targets.reshape(B * T))", "targets.view(B * T))"),
    ), says="use .reshape"),
    # --- generate
    Mistake("temperature_after_softmax", "GPT", edited(RIGHT,
        ("logits = logits[:, -1, :] / temperature", "logits = logits[:, -1, :]"),
        ("probs = F.softmax(logits, dim=-1)", "probs = F.softmax(logits, dim=-1) / temperature"),
    ), says="temperature has no effect"),
    Mistake("top_k_keeps_one_too_many", "GPT", edited(RIGHT,
        ("torch.topk(logits, min(top_k, logits.size(-1)))", "torch.topk(logits, min(top_k + 1, logits.size(-1)))"),
    ), says="keeps k + 1"),
    Mistake("top_k_masks_with_zero", "GPT", edited(RIGHT,
        ('logits[logits < values[:, [-1]]] = float("-inf")', "logits[logits < values[:, [-1]]] = 0.0"),
    ), says="instead of -inf"),
    Mistake("no_context_crop", "GPT", edited(RIGHT,
        ("context = idx[:, -self.config.block_size:]", "context = idx"),
    ), says="crop the sequence"),
    Mistake("crop_keeps_the_start", "GPT", edited(RIGHT,
        ("context = idx[:, -self.config.block_size:]", "context = idx[:, :self.config.block_size]"),
    ), says="keep the last ones"),
    Mistake("sampled_from_first_position", "GPT", edited(RIGHT,
        ("logits = logits[:, -1, :] / temperature", "logits = logits[:, 0, :] / temperature"),
    ), says="first position's logits"),
    Mistake("global_generator", "GPT", edited(RIGHT,
        ("torch.multinomial(probs, num_samples=1, generator=generator)", "torch.multinomial(probs, num_samples=1)"),
    ), says="generator=generator"),
    Mistake("always_greedy", "GPT", edited(RIGHT,
        ("next_token = torch.multinomial(probs, num_samples=1, generator=generator)",
         "next_token = probs.argmax(dim=-1, keepdim=True)"),
    ), says="most likely token"),
    Mistake("temperature_not_checked", "GPT", edited(RIGHT,
        ("        if temperature <= 0:\n"
         "            raise ValueError(\"temperature must be positive; use top_k=1 for greedy decoding\")\n", ""),
    ), says="temperature=0.0"),
    Mistake("left_in_eval_mode", "GPT", edited(RIGHT,
        ("        self.train(was_training)\n", ""),
    ), says="restore it with self.train"),
    # --- count_parameters
    Mistake("count_without_biases", "count_parameters", edited(RIGHT_COUNT,
        ("b = config.n_embd, config.vocab_size, int(config.bias)", "b = config.n_embd, config.vocab_size, 0"),
    ), says="biases are missing"),
    Mistake("count_head_twice", "count_parameters", edited(RIGHT_COUNT,
        ("embeddings = V * C + config.block_size * C", "embeddings = 2 * V * C + config.block_size * C"),
    ), says="counted twice"),
    Mistake("count_without_positions", "count_parameters", edited(RIGHT_COUNT,
        ("embeddings = V * C + config.block_size * C", "embeddings = V * C"),
    ), says="position embedding wpe"),
    Mistake("count_without_final_norm", "count_parameters", edited(RIGHT_COUNT,
        ("config.n_layer * block + layer_norm", "config.n_layer * block"),
    ), says="final LayerNorm ln_f is missing"),
    Mistake("count_norm_bias_always", "count_parameters", edited(RIGHT_COUNT,
        ("layer_norm = C + b * C", "layer_norm = 2 * C"),
    ), says="LayerNorms have no bias either"),
    Mistake("count_by_building_the_model", "count_parameters", edited(RIGHT_COUNT,
        ("    return embeddings + config.n_layer * block + layer_norm\n",
         "    return sum(p.numel() for p in GPT(config).parameters())\n"),
    ), says="without building a model"),
]
