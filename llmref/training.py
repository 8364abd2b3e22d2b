# GENERATED from solutions/07_training/07_training.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""A character-level MLP language model, random windows of the corpus, the held-out loss in bits per character, and a training loop with warm-up and gradient clipping: the reference for exercise 07_training."""
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


class CharMLP(nn.Module):
    """A character-level language model with a fixed look-back of n_chars characters.

    forward(x): x (B, T) int64 token ids -> logits (B, T, vocab_size). logits[:, t] scores the
    character that follows x[:, t], from the embeddings of x[:, t - n_chars + 1 : t + 1] only
    (zeros stand in for positions before the start of the window): it never sees the
    character it predicts. The interface of Part III's GPT, without attention.
    """

    def __init__(self, vocab_size: int, n_chars: int = 4, embed_dim: int = 16, hidden: int = 64,
                 dropout: float = 0.1):
        super().__init__()
        self.n_chars = n_chars
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.hidden = nn.Linear(n_chars * embed_dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embed(x)                                       # (B, T, embed_dim)
        T = x.shape[1]
        # Copy j holds, at position t, the embedding of x[:, t - j]: shifted right by j, zeros in front.
        shifted = [F.pad(e, (0, 0, j, 0))[:, :T] for j in range(self.n_chars)]
        h = torch.relu(self.hidden(torch.cat(shifted, dim=-1)))  # (B, T, hidden)
        return self.head(self.drop(h))                       # (B, T, vocab_size)


def make_model(vocab_size: int, seed: int = 0, **sizes) -> CharMLP:
    """CharMLP(vocab_size, **sizes) whose initial weights depend on `seed` only; torch's
    global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CharMLP(vocab_size, **sizes)


def get_batch(tokens: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x (batch_size, block_size) and y, the same windows one token later.

    The starts come from one torch.randint call with `generator`, uniform over every window
    whose targets fit in `tokens`; x[b] = tokens[s : s + block_size] and
    y[b] = tokens[s + 1 : s + block_size + 1] for the b-th start s.
    """
    if tokens.dim() != 1 or len(tokens) < block_size + 1:
        raise ValueError(f"tokens must be 1-D with at least block_size + 1 = {block_size + 1} "
                         f"entries, got shape {tuple(tokens.shape)}")
    # The last window starts at len - block_size - 1; randint's bound is exclusive.
    first = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    positions = first[:, None] + torch.arange(block_size + 1)  # (batch_size, block_size + 1)
    rows = tokens[positions]  # every window together with the character after it
    return rows[:, :-1], rows[:, 1:]


def bits_per_char(model: nn.Module, tokens: torch.Tensor, block_size: int) -> float:
    """The model's mean cross-entropy on `tokens`, in bits per character, as a Python float.

    `tokens` is cut into non-overlapping windows of block_size inputs and their targets one
    position later (a last partial window is dropped), and every target counts once. The
    model runs in eval mode (left there) without recording a graph.
    """
    n = (len(tokens) - 1) // block_size  # full windows only: each needs its last target too
    inputs = tokens[: n * block_size].reshape(n, block_size)
    targets = tokens[1: n * block_size + 1].reshape(n, block_size)
    model.eval()  # dropout off: the whole network, the same answer every time
    with torch.no_grad():  # nothing to backpropagate: keep no graph
        logits = model(inputs)
        nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return nats.item() / math.log(2)  # 1 bit = ln 2 nats


def train(model: nn.Module, next_batch, steps: int, *, max_lr: float, warmup_steps: int,
          max_norm: float, progress: bool = False) -> list[float]:
    """Train `model` for `steps` Adam steps on batches from next_batch(); return each step's
    training loss in bits per character, as Python floats.

    Step s (from 0) runs at lr = max_lr * min(1, (s + 1) / warmup_steps). Between backward()
    and the update, the gradients are scaled together so that their global L2 norm is at most
    max_norm, by max_norm / (norm + 1e-6) as torch.nn.utils.clip_grad_norm_ does. The loss
    backpropagated is the mean cross-entropy in nats. progress=True shows a tqdm bar.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()  # dropout on: the model may arrive in eval mode from bits_per_char
    losses = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for step in bar:  # step counts from 0
        for group in optimizer.param_groups:  # read by Adam at every step
            group["lr"] = max_lr * min(1.0, (step + 1) / warmup_steps)  # step 0 already trains
        x, y = next_batch()
        optimizer.zero_grad()  # backward() adds to .grad: clear the last step's
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # nats, mean over B * T characters
        loss.backward()  # d loss / d parameter, into each .grad
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if norm > max_norm:  # one factor for all: the step keeps its direction
            for g in grads:
                g.mul_(max_norm / (norm + 1e-6))
        optimizer.step()  # after clipping: Adam reads the clipped .grad
        losses.append(loss.item() / math.log(2))  # a float, in bits
        bar.set_postfix(bits=f"{losses[-1]:.3f}", refresh=False)
    return losses
