"""llmref.pretrain against independent references: torch.optim.AdamW, torch's learning-rate
schedulers (LinearLR then CosineAnnealingLR), torch.nn.utils.clip_grad_norm_, NumPy windows
(llmref.corpus.windows), parameter names; and the training loop's promise that an interrupted
and resumed run is the uninterrupted run, bit for bit, with errors that say what differs."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from llmref.corpus import windows
from llmref.gpt import GPT, GPTConfig
from llmref.pretrain import (AdamW, TrainConfig, clip_grad_norm, config_differences, evaluate,
                             get_batch, load_state, lr_at, make_optimizer, param_groups, train)

VOCAB = 23


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed=0, dtype=torch.float32, **changes) -> GPT:
    torch.manual_seed(seed)
    config = dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    return GPT(GPTConfig(**{**config, **changes})).to(dtype)


def tokens(seed, n=400):
    return torch.randint(VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- AdamW

def _train_with(make, model, steps=100, lr=3e-3, seed=1):
    optimizer = make(param_groups(model, 0.1), lr=lr, betas=(0.9, 0.99))
    generator, data, losses = torch.Generator().manual_seed(seed), tokens(seed), []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, max_lr=lr, min_lr=lr / 10, warmup_steps=10, total_steps=steps)
        x, y = get_batch(data, 8, 16, generator)
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses), model


@pytest.mark.parametrize("seed", [0, 3])
def test_adamw_trains_a_gpt_as_torch_adamw_does(seed):
    # float64: one step of the two differs by ~1e-16 relative (another order of roundings);
    # training amplifies that to 1e-11 .. 6e-11 relative after 100 steps (measured on seeds
    # 0-5), hence 1e-8 for the weights. The losses, computed before each update, stay at 1e-14.
    start = tiny(seed, torch.float64)
    mine, mine_model = _train_with(AdamW, copy.deepcopy(start))
    theirs, their_model = _train_with(lambda *a, **k: torch.optim.AdamW(*a, foreach=False, **k),
                                      copy.deepcopy(start))
    np.testing.assert_allclose(mine, theirs, rtol=1e-12)
    for (name, p), q in zip(mine_model.named_parameters(), their_model.parameters()):
        p, q = p.detach(), q.detach()
        gap = float((p - q).abs().max() / q.abs().max())  # relative to the tensor's scale
        assert gap < 1e-8, (name, gap)
    assert mine[-10:].mean() < mine[:10].mean() - 0.2  # it learns


def test_adamw_single_step_matches_the_formula_and_torch():
    # One step from a fresh state, written out by hand (Loshchilov & Hutter, Algorithm 2 with
    # torch's conventions: decay by lr * wd before the update, eps added to sqrt(v_hat)).
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    g = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    lr, (b1, b2), eps, wd = 0.1, (0.8, 0.9), 1e-3, 0.5
    results = []
    for cls in (AdamW, torch.optim.AdamW):
        p = p0.clone().requires_grad_()
        p.grad = g.clone()
        cls([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd).step()
        results.append(p.detach())
    m_hat, v_hat = (1 - b1) * g / (1 - b1), (1 - b2) * g**2 / (1 - b2)
    expected = p0 * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps)
    for result in results:
        torch.testing.assert_close(result, expected, rtol=1e-14, atol=0)


def test_adamw_skips_parameters_without_gradients_and_its_state_dict_round_trips():
    used, unused = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    optimizer = AdamW([used, unused], lr=0.1, weight_decay=0.5)
    used.grad = torch.ones(3)
    optimizer.step()
    assert torch.equal(unused.detach(), torch.ones(2))  # no gradient: no decay either, as torch
    assert optimizer.state[used]["step"] == 1 and unused not in optimizer.state
    # The moments travel with state_dict(): a copy continues exactly like the original.
    twin_param = nn.Parameter(used.detach().clone())
    twin = AdamW([twin_param, nn.Parameter(torch.ones(2))], lr=0.1, weight_decay=0.5)
    twin.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as from a file: no shared tensors
    used.grad, twin_param.grad = torch.full((3,), 0.3), torch.full((3,), 0.3)
    optimizer.step()
    twin.step()
    assert torch.equal(used.detach(), twin_param.detach())


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(lr=-1.0), "lr, eps and weight_decay must be >= 0"),
    (dict(weight_decay=-0.1), "lr, eps and weight_decay must be >= 0"),
    (dict(betas=(0.9, 1.0)), "betas must be two numbers in [0, 1)"),
])
def test_adamw_rejects_bad_hyperparameters(kwargs, phrase):
    with pytest.raises(ValueError) as caught:
        AdamW([nn.Parameter(torch.ones(1))], **kwargs)
    assert phrase in str(caught.value)


# --------------------------------------------------------------------- param_groups

@pytest.mark.parametrize("bias", [True, False])
def test_param_groups_by_name_rule(bias):
    # Independent of module types: in GPT-2's naming, exactly the matrices of c_attn, c_proj
    # and c_fc decay (lm_head.weight is the tied embedding, which does not).
    model = tiny(bias=bias)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    expected = {n for n in names.values() if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))}
    assert decayed == expected
    every = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(every) == len(set(every)) == len(names)  # each parameter once, the tied one too
    assert id(model.lm_head.weight) in {id(p) for p in no_decay["params"]}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    torch.optim.AdamW(param_groups(model, 0.1))  # torch accepts the groups


def test_param_groups_rejects_negative_decay():
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        param_groups(tiny(), -0.1)


# ---------------------------------------------------------------------------- lr_at

@pytest.mark.parametrize("warmup, total", [(10, 110), (2, 50), (25, 27)])
def test_lr_at_matches_torch_schedulers(warmup, total):
    # LinearLR from 1/warmup to 1 over warmup - 1 steps, then CosineAnnealingLR with
    # T_max = total - warmup down to eta_min: the same schedule, built by torch from another
    # formula (recursive updates); it agrees to ~1e-15 relative.
    max_lr, min_lr = 6e-3, 4e-4
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=max_lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=min_lr)
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0,
                                               total_iters=warmup - 1)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])
    for step in range(total):
        theirs = optimizer.param_groups[0]["lr"]
        assert lr_at(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup,
                     total_steps=total) == pytest.approx(theirs, rel=1e-12), step
        optimizer.step()
        schedule.step()


def test_lr_at_landmarks():
    hyper = dict(max_lr=1.0, min_lr=0.1, warmup_steps=4, total_steps=104)
    assert lr_at(0, **hyper) == 0.25 and lr_at(3, **hyper) == 1.0 and lr_at(4, **hyper) == 1.0
    assert lr_at(54, **hyper) == pytest.approx(0.55, rel=1e-15)  # the midpoint of the decay
    assert lr_at(104, **hyper) == lr_at(10_000, **hyper) == 0.1
    assert lr_at(0, **{**hyper, "warmup_steps": 0}) == 1.0  # no warm-up
    with pytest.raises(ValueError, match="step must be >= 0"):
        lr_at(-1, **hyper)


# ------------------------------------------------------------------- clip_grad_norm

def _with_grads(seed, scale):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 2))
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = scale * torch.randn(p.shape, generator=gen)
    model[2].bias.grad = None
    return model


@pytest.mark.parametrize("scale, max_norm", [(10.0, 1.0), (0.01, 1.0), (1.0, 2.5)])
def test_clip_grad_norm_matches_torch(scale, max_norm):
    mine, theirs = _with_grads(0, scale), _with_grads(0, scale)
    before = [None if p.grad is None else p.grad.clone() for p in mine.parameters()]
    norm = clip_grad_norm(mine.parameters(), max_norm)  # a generator, as the loop passes it
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    assert isinstance(norm, float)
    assert norm == pytest.approx(float(expected), rel=1e-6)  # float32 sums in another order
    for p, q, b in zip(mine.parameters(), theirs.parameters(), before):
        if b is None:
            assert p.grad is None
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
        if norm <= max_norm:
            assert torch.equal(p.grad, b)  # below the threshold: untouched, bit for bit


def test_clip_grad_norm_edge_cases():
    lone = nn.Parameter(torch.ones(4))
    lone.grad = torch.full((4,), 3.0)
    assert clip_grad_norm(lone, 1.0) == pytest.approx(6.0)  # a single tensor, as torch allows
    assert float(lone.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm([nn.Parameter(torch.ones(2))], 1.0) == 0.0  # no gradients at all
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        clip_grad_norm([lone], 0.0)


# ------------------------------------------------------------------------ get_batch

@pytest.mark.parametrize("n, batch_size, block_size", [(300, 8, 16), (17, 64, 16), (50, 5, 1)])
def test_get_batch_windows_are_in_range_shifted_and_reproducible(n, batch_size, block_size):
    data = torch.arange(n)
    x, y = get_batch(data, batch_size, block_size, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (batch_size, block_size) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)  # positions as tokens: y is x one token ahead
    assert torch.equal(x, x[:, :1] + torch.arange(block_size))  # windows of consecutive tokens
    assert int(y.max()) <= n - 1
    again, _ = get_batch(data, batch_size, block_size, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_get_batch_reaches_every_start_and_only_uses_its_generator():
    data, seen = torch.arange(20), set()
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    global_state = torch.get_rng_state()
    for _ in range(50):
        x, _ = get_batch(data, 16, 16, generator)
        seen |= set(x[:, 0].tolist())
    assert seen == {0, 1, 2, 3}  # 20 tokens: starts 0..3, the last window ends at token 19
    assert torch.equal(torch.get_rng_state(), global_state)


def test_get_batch_rejects_too_few_tokens():
    with pytest.raises(ValueError, match="at least block_size \\+ 1 = 17"):
        get_batch(torch.arange(16), 2, 16, torch.Generator())


# ------------------------------------------------------------------------- evaluate

@pytest.mark.parametrize("n_tokens, batch_size", [(16 * 37 + 1, 8), (16 * 20, 64), (16 * 5 + 9, 1)])
def test_evaluate_matches_numpy_windows(n_tokens, batch_size):
    model, data = tiny(dropout=0.3), tokens(2, n_tokens)
    pairs = torch.from_numpy(windows(data.numpy(), 16))
    model.eval()
    with torch.no_grad():
        expected = model(pairs[:, 0], pairs[:, 1])[1].item()
    for mode in (True, False):
        model.train(mode)
        value = evaluate(model, data, 16, batch_size)
        assert isinstance(value, float)
        assert value == pytest.approx(expected, rel=1e-5)  # float32 means of other batches
        assert model.training is mode and all(m.training is mode for m in model.modules())


def test_evaluate_rejects_too_few_tokens():
    with pytest.raises(ValueError, match="too few for one window"):
        evaluate(tiny(), torch.arange(16), 16)


# ------------------------------------------------------------------- resume exactly

CONFIG = TrainConfig(steps=14, batch_size=4, max_lr=3e-3, min_lr=3e-4, warmup_steps=3,
                     eval_every=5, seed=3)


def _run(tmp_path, stop_after=None, resume=False, seed=0, dropout=0.2, config=CONFIG, **changes):
    model = tiny(seed if not resume else seed + 50, dropout=dropout, **changes)
    torch.manual_seed(seed + 1 if not resume else 12345)  # a resumed run must restore it itself
    history = train(model, tokens(0), config, held_out=tokens(1, 100), checkpoint=tmp_path / "run.pt",
                    stop_after=stop_after, resume=resume)
    return history, model


@pytest.mark.parametrize("stop_after", [1, 5, 7, 13])
def test_interrupted_and_resumed_run_is_the_uninterrupted_run(tmp_path, stop_after):
    # Bit for bit: the same operations on the same numbers in the same order on one thread
    # give the same floats, and torch.save keeps tensors exactly. Dropout is on, so torch's
    # random state matters as much as the batch generator and Adam's moments.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole, model = _run(tmp_path / "a")
    part, _ = _run(tmp_path / "b", stop_after=stop_after)
    assert part["step"] == list(range(stop_after))
    resumed, resumed_model = _run(tmp_path / "b", resume=True)
    assert resumed["loss"] == whole["loss"] and resumed["lr"] == whole["lr"]
    assert resumed["step"] == list(range(CONFIG.steps))
    for p, q in zip(resumed_model.parameters(), model.parameters()):
        assert torch.equal(p, q)
    # The held-out losses agree too; the interrupted run adds one evaluation where it stopped.
    extra = {stop_after} - set(whole["eval_step"])
    kept = [(s, l) for s, l in zip(resumed["eval_step"], resumed["eval_loss"]) if s not in extra]
    assert kept == list(zip(whole["eval_step"], whole["eval_loss"]))


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    whole, _ = _run(tmp_path)
    again, _ = _run(tmp_path, resume=True)
    assert again["loss"] == whole["loss"]


def test_the_checkpoint_is_plain_data(tmp_path):
    _run(tmp_path, stop_after=2)
    state = torch.load(tmp_path / "run.pt", weights_only=True)  # no pickled code needed
    assert state["step"] == 2 and state["train_config"] == dataclasses.asdict(CONFIG)
    assert not (tmp_path / "run.pt.tmp").exists()


def test_dropout_off_resumes_exactly_too(tmp_path):
    whole, _ = _run(tmp_path, dropout=0.0)
    _run(tmp_path, stop_after=6, dropout=0.0)
    resumed, _ = _run(tmp_path, resume=True, dropout=0.0)
    assert resumed["loss"] == whole["loss"]


# ------------------------------------------------------------- errors that say what

def test_resume_with_another_configuration_names_the_fields(tmp_path):
    _run(tmp_path, stop_after=3)
    other = dataclasses.replace(CONFIG, max_lr=1e-2, batch_size=8)
    model = tiny(dropout=0.2)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError) as caught:
        _run(tmp_path, resume=True, config=other)
    message = str(caught.value)
    assert "batch_size: 4 in the checkpoint, 8 now" in message
    assert "max_lr: 0.003 in the checkpoint, 0.01 now" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("changes, phrases", [
    (dict(n_embd=48), ["tensor transformer.wte.weight has shape (23, 32) in the checkpoint but (23, 48)"]),
    (dict(bias=False), ["unexpected tensor transformer.h.0.ln_1.bias (32,)"]),
    (dict(n_layer=3), ["missing tensor transformer.h.2.attn.c_attn.weight (96, 32)"]),
    (dict(n_head=4), ["n_head: 2 in the checkpoint, 4 now"]),
    (dict(dropout=0.5), ["dropout: 0.2 in the checkpoint, 0.5 now"]),
])
def test_resume_into_another_model_names_what_differs(tmp_path, changes, phrases):
    _run(tmp_path, stop_after=3)
    with pytest.raises(ValueError) as caught:
        _run(tmp_path, resume=True, **{"dropout": 0.2, **changes})
    for phrase in phrases:
        assert phrase in str(caught.value)


def test_load_state_lists_every_problem_before_copying():
    model, state = tiny(), tiny(1, n_embd=48).state_dict()
    before = copy.deepcopy(model.state_dict())
    state["extra"] = torch.zeros(2)
    del state["transformer.ln_f.bias"]
    with pytest.raises(ValueError) as caught:
        load_state(model, state)
    message = str(caught.value)
    assert "missing tensor transformer.ln_f.bias (32,)" in message
    assert "unexpected tensor extra (2,)" in message
    assert "transformer.wpe.weight has shape (16, 48) in the checkpoint but (16, 32) in the model" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    load_state(model, tiny(2).state_dict())  # a checkpoint that fits loads


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        train(tiny(), tokens(0), CONFIG, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(tiny(), tokens(0), CONFIG, checkpoint=tmp_path / "none.pt", resume=True)


def test_config_differences_and_make_optimizer():
    assert config_differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == [
        "b: 2 in the checkpoint, 3 now", "c: None in the checkpoint, 4 now"]
    optimizer = make_optimizer(tiny(), CONFIG)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [CONFIG.weight_decay, 0.0]
    assert optimizer.param_groups[0]["betas"] == CONFIG.betas


def test_training_lowers_the_held_out_loss(tmp_path):
    config = dataclasses.replace(CONFIG, steps=60, eval_every=30, max_lr=1e-2)
    model = tiny(dropout=0.0)
    data = torch.arange(600) % 7  # a repeating pattern a tiny model learns within 60 steps
    history = train(model, data, config, held_out=torch.arange(200) % 7)
    assert history["eval_step"] == [30, 60]
    assert history["eval_loss"][-1] < 0.5 * math.log(VOCAB)
    assert len(history["loss"]) == 60 and history["train_seconds"] > 0


def test_bfloat16_autocast_trains_like_float32_and_keeps_float32_weights(tmp_path):
    # bfloat16 keeps 8 bits of mantissa (relative rounding ~4e-3): the first losses agree to
    # about 1e-2, the weights and the optimizer state stay float32, and the loss still falls.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full, _ = _run(tmp_path / "a", dropout=0.0)
    mixed, model = _run(tmp_path / "b", dropout=0.0, config=dataclasses.replace(CONFIG, precision="bfloat16"))
    assert mixed["loss"][0] == pytest.approx(full["loss"][0], abs=2e-2)
    assert mixed["loss"] != full["loss"], "autocast changed nothing: was it enabled?"
    assert np.mean(mixed["loss"][-4:]) < mixed["loss"][0]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be 'float32' or 'bfloat16'"):
        train(tiny(), tokens(0), dataclasses.replace(CONFIG, precision="float16"))
