"""llmref.training against independent references: windows cut by hand, the held-out loss
from NumPy's log-softmax, and the training loop against one written with
torch.nn.utils.clip_grad_norm_ and torch.optim.lr_scheduler.LambdaLR."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmref import corpus
from llmref.training import bits_per_char, get_batch, make_model, train

DATA = corpus.load()
V = DATA.tokenizer.vocab_size


def test_get_batch_cuts_windows_and_shifted_targets():
    tokens = torch.from_numpy(DATA.train[:500])
    x, y = get_batch(tokens, 6, 10, torch.Generator().manual_seed(3))
    starts = torch.randint(490, (6,), generator=torch.Generator().manual_seed(3))
    for b, s in enumerate(starts.tolist()):
        assert torch.equal(x[b], tokens[s:s + 10]) and torch.equal(y[b], tokens[s + 1:s + 11])


def test_get_batch_reaches_the_last_window_and_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    tokens = torch.arange(12)
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        seen |= set(get_batch(tokens, 4, 10, generator)[0][:, 0].tolist())
    assert seen == {0, 1}
    assert torch.equal(torch.rand(2), expected)


def test_bits_per_char_against_numpy():
    model = make_model(V, seed=1)
    tokens = torch.from_numpy(DATA.held_out[:2001])
    pairs = corpus.windows(tokens.numpy(), 25)
    model.train()
    got = bits_per_char(model, tokens, 25)
    assert not model.training
    with torch.no_grad():
        logits = model(torch.from_numpy(pairs[:, 0])).double().numpy()
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    nats = -np.take_along_axis(log_p, pairs[:, 1][..., None], -1).mean()
    assert got == pytest.approx(nats / math.log(2), rel=1e-5)  # float32 logits, float64 mean


def test_train_matches_a_loop_with_torch_clipping_and_scheduler():
    # The same loop written with torch's clip_grad_norm_ and a LambdaLR warm-up: float32 on
    # both sides, the norm summed in another order, so losses agree to ~1e-6 relative.
    tokens = torch.from_numpy(DATA.train)
    start = make_model(V, seed=2)
    steps, max_lr, warmup, max_norm = 30, 1e-2, 7, 0.3

    def batches():
        generator = torch.Generator().manual_seed(4)
        return lambda: get_batch(tokens, 8, 16, generator)

    torch.manual_seed(11)
    mine = train(copy.deepcopy(start), batches(), steps, max_lr=max_lr, warmup_steps=warmup,
                 max_norm=max_norm)
    model = copy.deepcopy(start)
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    next_batch, theirs = batches(), []
    torch.manual_seed(11)
    model.train()
    for _ in range(steps):
        x, y = next_batch()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        schedule.step()
        theirs.append(loss.item() / math.log(2))
    np.testing.assert_allclose(mine, theirs, rtol=1e-5)


def test_make_model_is_reproducible_and_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    a, b = make_model(V, seed=5), make_model(V, seed=5)
    assert torch.equal(torch.rand(2), expected)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_the_model_never_sees_the_character_it_predicts():
    model = make_model(V, seed=0).eval()
    x = torch.from_numpy(DATA.train[:20]).unsqueeze(0)
    changed = x.clone()
    changed[0, 10] = (changed[0, 10] + 1) % V
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.equal(a[0, :10], b[0, :10])                   # the past does not see the change
    assert not torch.equal(a[0, 10:14], b[0, 10:14])           # the next n_chars positions do
    assert torch.equal(a[0, 14:], b[0, 14:])                    # beyond the look-back, nothing
