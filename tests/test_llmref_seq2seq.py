"""llmref.seq2seq against independent references: CrossAttention against
torch.nn.MultiheadAttention on the same weights (forward and backward, with and without
padding, T != S), the date task against Python's datetime.strptime, and the model's
structural properties (the encoder sees both ways, the decoder only back, padding is inert)."""
import datetime

import pytest
import torch
from torch import nn

from llmref import seq2seq as s

# float64 on both sides: the same arithmetic in another order differs by ~1e-15; 1e-10 is far
# above that and far below any real bug (a missing scale or mask moves values by ~1e-1).
TOL = 1e-10

# How each FORMATS entry reads back with strptime (POSIX two-digit years, as the task's).
STRPTIME = {"3 March 1999": "%d %B %Y", "March 3, 1999": "%B %d, %Y", "03/03/99": "%d/%m/%y",
            "Wed 3 Mar 1999": "%a %d %b %Y", "03.03.1999": "%d.%m.%Y"}


def _pair(n_embd, n_head, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    theirs = nn.MultiheadAttention(n_embd, n_head, bias=bias, batch_first=True).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64)
                    * (n_embd ** -0.5 if p.dim() == 2 else 0.5))
    mine = s.CrossAttention(n_embd, n_head, bias=bias).double()
    state = {}
    for name, w in zip(("q_proj", "k_proj", "v_proj"), theirs.in_proj_weight.detach().chunk(3)):
        state[f"{name}.weight"] = w
    if bias:
        for name, b in zip(("q_proj", "k_proj", "v_proj"), theirs.in_proj_bias.detach().chunk(3)):
            state[f"{name}.bias"] = b
        state["out_proj.bias"] = theirs.out_proj.bias.detach()
    state["out_proj.weight"] = theirs.out_proj.weight.detach()
    mine.load_state_dict(state)
    return mine, theirs


@pytest.mark.parametrize("B, T, S, C, h, bias, padded", [
    (2, 4, 6, 16, 4, True, False), (3, 7, 3, 12, 3, False, False), (2, 1, 5, 8, 1, True, True),
    (3, 5, 8, 16, 2, True, True), (2, 6, 6, 8, 2, False, True)])
def test_cross_attention_matches_torch_forward_and_backward(B, T, S, C, h, bias, padded):
    mine, theirs = _pair(C, h, bias)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, C, generator=gen, dtype=torch.float64)
    memory = torch.randn(B, S, C, generator=gen, dtype=torch.float64)
    mask = None
    if padded:
        lengths = torch.randint(1, S + 1, (B,), generator=gen)
        lengths[0] = S
        mask = torch.arange(S)[None, :] >= lengths[:, None]
    x1, m1 = x.clone().requires_grad_(), memory.clone().requires_grad_()
    x2, m2 = x.clone().requires_grad_(), memory.clone().requires_grad_()
    out, weights = mine(x1, m1, mask, return_weights=True)
    their_out, their_weights = theirs(x2, m2, m2, key_padding_mask=mask, average_attn_weights=False)
    torch.testing.assert_close(out, their_out, rtol=TOL, atol=TOL)
    torch.testing.assert_close(weights, their_weights, rtol=TOL, atol=TOL)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (out * grad).sum().backward()
    (their_out * grad).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=TOL, atol=TOL)
    torch.testing.assert_close(m1.grad, m2.grad, rtol=TOL, atol=TOL)
    torch.testing.assert_close(mine.q_proj.weight.grad, theirs.in_proj_weight.grad[:C], rtol=TOL, atol=TOL)
    torch.testing.assert_close(mine.v_proj.weight.grad, theirs.in_proj_weight.grad[2 * C:], rtol=TOL, atol=TOL)
    torch.testing.assert_close(mine.out_proj.weight.grad, theirs.out_proj.weight.grad, rtol=TOL, atol=TOL)
    if mask is not None:
        assert (weights.detach() * mask[:, None, None, :]).abs().max() == 0


def test_cross_attention_returns_the_output_alone_by_default_and_refuses_bad_sizes():
    attn = s.CrossAttention(8, 2)
    assert attn(torch.randn(1, 3, 8), torch.randn(1, 5, 8)).shape == (1, 3, 8)
    with pytest.raises(ValueError, match="not divisible"):
        s.CrossAttention(10, 3)


@pytest.mark.parametrize("fmt", s.FORMATS)
def test_every_format_reads_back_with_strptime(fmt):
    dates = [datetime.date(1969, 1, 1), datetime.date(1999, 3, 3), datetime.date(2000, 2, 29),
             datetime.date(2068, 12, 31), datetime.date(2021, 9, 30)]
    for date in dates:
        assert datetime.datetime.strptime(s.render_date(date, fmt), STRPTIME[fmt]).date() == date
    assert s.render_date(datetime.date(1999, 3, 3), fmt) == fmt  # each format is named by its example


def test_generated_pairs_are_right_seeded_and_split_by_date():
    train = s.make_pairs(3000, seed=0)
    held_out = s.make_pairs(1000, seed=0, split="held_out")
    assert s.make_pairs(50, seed=0) == train[:50] and s.make_pairs(50, seed=1) != train[:50]
    for source, target in train + held_out:
        fmt = next(f for f in s.FORMATS if _parses(source, STRPTIME[f]))
        assert datetime.datetime.strptime(source, STRPTIME[fmt]).date().isoformat() == target
    train_dates = {t for _, t in train}
    held_dates = {t for _, t in held_out}
    assert not train_dates & held_dates
    assert all(datetime.date.fromisoformat(t).toordinal() % s.HELD_OUT_EVERY == 0 for t in held_dates)
    assert {f for f in s.FORMATS for src, _ in train[:200] if _parses(src, STRPTIME[f])} == set(s.FORMATS)
    assert max(len(src) for src, _ in train) <= s.Seq2SeqConfig().max_src_len
    with pytest.raises(ValueError, match="split"):
        s.make_pairs(1, 0, split="test")
    with pytest.raises(ValueError, match="unknown format"):
        s.render_date(datetime.date(1999, 3, 3), "1999-03-03")


def _parses(source, pattern):
    try:
        datetime.datetime.strptime(source, pattern)
        return True
    except ValueError:
        return False


def test_encode_batch_pads_and_marks_padding():
    pairs = [("3 March 1999", "1999-03-03"), ("03/03/99", "1999-03-03")]
    src, mask, targets = s.encode_batch(pairs)
    assert src.shape == mask.shape == (2, 12) and targets.shape == (2, s.TARGET_LEN)
    assert mask[1].tolist() == [False] * 8 + [True] * 4 and not mask[0].any()
    assert (src[mask] == s.PAD_ID).all()
    assert s.TOKENIZER.decode(targets[0]) == "1999-03-03$"
    assert (s.PAD_ID, s.BOS_ID, s.EOS_ID) == (0, 1, 2)
    assert s.TOKENIZER.chars[:3] == (s.PAD, s.BOS, s.EOS)


def _model(seed=0):
    torch.manual_seed(seed)
    model = s.Seq2Seq(s.Seq2SeqConfig(n_embd=16, n_head=2)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def test_encoder_sees_both_ways_and_padding_changes_nothing():
    model = _model()
    src, mask, targets = s.encode_batch([("3 March 1999", ""), ("03/03/99", "")])
    memory = model.encode(src, mask)
    changed = src.clone()
    changed[0, 11] = s.TOKENIZER.encode("8")[0]           # the last digit of the first input
    assert (model.encode(changed, mask)[0, 0] - memory[0, 0]).abs().max() > 1e-3  # position 0 sees it
    # Four more padded positions: the real positions' memory and the decoder's logits stay.
    wider = torch.cat([src, torch.full((2, 4), s.PAD_ID)], dim=1)
    wider_mask = torch.cat([mask, torch.ones(2, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model.encode(wider, wider_mask)[:, :12][~mask], memory[~mask], rtol=TOL, atol=TOL)
    tgt_in = torch.cat([torch.full((2, 1), s.BOS_ID), targets[:, :-1]], dim=1)
    torch.testing.assert_close(model(wider, wider_mask, tgt_in), model(src, mask, tgt_in), rtol=TOL, atol=TOL)


def test_decoder_is_causal_and_greedy_agrees_with_teacher_forcing():
    model = _model(1)
    src, mask, _ = s.encode_batch(s.make_pairs(4, seed=5))
    tgt_in = torch.randint(3, s.TOKENIZER.vocab_size, (4, 8))
    logits = model(src, mask, tgt_in)
    later = tgt_in.clone()
    later[:, 5:] = s.BOS_ID
    torch.testing.assert_close(model(src, mask, later)[:, :5], logits[:, :5], rtol=TOL, atol=TOL)
    written = s.greedy_decode(model, src, mask, max_len=8)
    fed = torch.cat([torch.full((4, 1), s.BOS_ID), written[:, :-1]], dim=1)
    again = model(src, mask, fed).argmax(-1)
    for b in range(4):
        row = written[b].tolist()
        n = row.index(s.EOS_ID) + 1 if s.EOS_ID in row else len(row)
        assert again[b, :n].tolist() == row[:n]
        assert all(t == s.PAD_ID for t in row[n:])


def test_loss_is_the_mean_over_real_targets():
    model = _model(2)
    src, mask, targets = s.encode_batch(s.make_pairs(3, seed=6))
    targets[1, 7:] = s.PAD_ID
    tgt_in = torch.cat([torch.full((3, 1), s.BOS_ID), targets[:, :-1]], dim=1)
    log_probs = torch.log_softmax(model(src, mask, tgt_in), dim=-1)
    picked = log_probs.gather(-1, targets[..., None])[..., 0]
    real = targets != s.PAD_ID
    expected = -(picked * real).sum() / real.sum()
    torch.testing.assert_close(s.seq2seq_loss(model, src, mask, targets), expected, rtol=TOL, atol=TOL)


def test_the_model_refuses_inputs_longer_than_its_positions():
    model = _model()
    with pytest.raises(ValueError, match="max_src_len"):
        model.encode(torch.zeros(1, 30, dtype=torch.long), None)


@pytest.mark.slow
def test_the_reference_learns_the_task_from_another_seed():
    # The graded run uses seed 0; another seed shows the 95 % bar is not luck (~10 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(3)
        model = s.Seq2Seq(s.Seq2SeqConfig())
        s.train(model, s.TrainConfig(seed=3))
        assert s.exact_match(model, s.make_pairs(500, seed=2, split="held_out")) >= 0.97
    finally:
        torch.set_num_threads(threads)
