"""Wrong versions of get_batch, bits_per_char and train (exercise 07_training).

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from autograder.checks._core import SHORTCUT_PHRASE

from . import Mistake, edited

EXERCISE = "07_training"

GET_BATCH = '''def get_batch(tokens, batch_size, block_size, generator):
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    x = torch.stack([tokens[s:s + block_size] for s in starts])
    y = torch.stack([tokens[s + 1:s + block_size + 1] for s in starts])
    return x, y
'''

BITS_PER_CHAR = '''def bits_per_char(model, tokens, block_size):
    pairs = torch.from_numpy(corpus.windows(tokens.numpy(), block_size))
    model.eval()
    with torch.no_grad():
        logits = model(pairs[:, 0])
        loss = F.cross_entropy(logits.flatten(0, 1), pairs[:, 1].flatten())
    return loss.item() / math.log(2)
'''

TRAIN = '''def train(model, next_batch, steps, *, max_lr, warmup_steps, max_norm, progress=False):
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr)
    model.train()
    losses = []
    for step in tqdm(range(steps), disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = max_lr * min(1, (step + 1) / warmup_steps)
        x, y = next_batch()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        norm = math.sqrt(sum(p.grad.pow(2).sum().item() for p in model.parameters() if p.grad is not None))
        if norm > max_norm:
            for p in model.parameters():
                p.grad.mul_(max_norm / (norm + 1e-6))
        optimizer.step()
        losses.append(loss.item() / math.log(2))
    return losses
'''

CLIP = '''        norm = math.sqrt(sum(p.grad.pow(2).sum().item() for p in model.parameters() if p.grad is not None))
        if norm > max_norm:
            for p in model.parameters():
                p.grad.mul_(max_norm / (norm + 1e-6))
'''


MISTAKES = [
    Mistake("targets_not_shifted", "get_batch", edited(
        GET_BATCH, ("tokens[s + 1:s + block_size + 1]", "tokens[s:s + block_size]"),
    ), says="not shifted"),
    Mistake("global_generator", "get_batch", edited(
        GET_BATCH, (", generator=generator)", ")"),
    ), says="never drew from `generator`"),
    Mistake("last_window_never_drawn", "get_batch", edited(
        GET_BATCH, ("len(tokens) - block_size,", "len(tokens) - block_size - 1,"),
    ), says="never include the last window"),
    Mistake("get_batch_from_part_iii", "get_batch", edited(
        GET_BATCH, ("    starts = torch.randint", "    from llmref.pretrain import get_batch as part_iii\n"
                                                 "    return part_iii(tokens, batch_size, block_size, generator)\n"
                                                 "    starts = torch.randint"),
    ), says=SHORTCUT_PHRASE),

    Mistake("evaluates_in_train_mode", "bits_per_char", edited(
        BITS_PER_CHAR, ("    model.eval()\n", ""),
    ), says="call model.eval()"),
    Mistake("evaluates_with_gradients", "bits_per_char", edited(
        BITS_PER_CHAR, ("    with torch.no_grad():\n        logits", "    logits"),
        ("        loss = F", "    loss = F"),
    ), says="torch.no_grad()"),
    Mistake("loss_in_nats", "bits_per_char", edited(
        BITS_PER_CHAR, ("return loss.item() / math.log(2)", "return loss.item()"),
    ), says="in nats"),
    Mistake("returns_a_tensor", "bits_per_char", edited(
        BITS_PER_CHAR, ("return loss.item() / math.log(2)", "return loss / math.log(2)"),
    ), says="return a Python float"),

    Mistake("forgets_zero_grad", "train", edited(
        TRAIN, ("        optimizer.zero_grad()\n", ""),
    ), says="ADDS to .grad"),
    Mistake("clips_before_backward", "train", edited(
        TRAIN, (CLIP, ""), ("        loss.backward()\n", CLIP + "        loss.backward()\n"),
    ), says="unclipped"),
    Mistake("warmup_off_by_one", "train", edited(
        TRAIN, ("(step + 1) / warmup_steps", "step / warmup_steps"),
    ), says="off by one"),
    Mistake("forgets_train_mode", "train", edited(
        TRAIN, ("    model.train()\n", ""),
    ), says="call model.train()"),
    Mistake("clips_with_clip_grad_norm_", "train", edited(
        TRAIN, (CLIP, "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n"),
    ), says=SHORTCUT_PHRASE),
]
