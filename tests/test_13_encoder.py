"""The checks behind exercise 13_encoder, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks, and the
tolerances separate right from wrong with room to spare."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks import encoder as checks
from llmref.encoder import Encoder, EncoderBlock, WordPieceTokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """As in the notebook: small tensors gain nothing from threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_each_check_accepts_the_reference(capsys):
    checks.check_tokenizer(WordPieceTokenizer)
    checks.check_tokenizer(WordPieceTokenizer, sentences=[checks.LONG_TEXT, "a"], max_length=5)
    checks.check_block(EncoderBlock, seed=3, n_embd=24, n_head=3, n_inner=40, batch=5, length=6)
    checks.check_encoder(Encoder)
    checks.check_padding(Encoder)
    checks.check_embeddings(Encoder, sentences=checks.SENTENCES[:6], batch_size=3)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 6


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    checks.check_block(EncoderBlock)
    checks.check_padding(Encoder)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_hidden_sentences_are_more_than_twenty():
    assert len(checks.SENTENCES + checks.MORE_SENTENCES) >= 20


# ------------------------------------------------------------------- bad input, in words

@pytest.mark.parametrize("check", [checks.check_tokenizer, checks.check_block, checks.check_encoder,
                                   checks.check_padding, checks.check_embeddings])
def test_not_a_class_fails_in_words(check):
    with pytest.raises(CheckFailure):
        check(lambda *args: None)


def test_a_tokenizer_returning_a_tuple_fails_in_words():
    class Tuple(WordPieceTokenizer):
        def encode(self, texts, max_length=None):
            batch = super().encode(texts, max_length)
            return batch["input_ids"], batch["attention_mask"]

    with pytest.raises(CheckFailure, match="dict with the keys"):
        checks.check_tokenizer(Tuple)


def test_padding_to_max_length_is_named():
    class PadsToMax(WordPieceTokenizer):
        def encode(self, texts, max_length=None):
            batch = super().encode(texts, max_length)
            extra = 20
            return {k: F.pad(v, (0, extra)) for k, v in batch.items()}

    with pytest.raises(CheckFailure, match="pad every text to the longest"):
        checks.check_tokenizer(PadsToMax)


def test_a_mask_that_is_all_ones_is_named():
    class AllOnes(WordPieceTokenizer):
        def encode(self, texts, max_length=None):
            batch = super().encode(texts, max_length)
            batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
            return batch

    with pytest.raises(CheckFailure, match="0 at padding"):
        checks.check_tokenizer(AllOnes)


def test_a_block_with_other_names_is_refused_by_name():
    class Renamed(EncoderBlock):
        def __init__(self, *args):
            super().__init__(*args)
            self.q = self.query
            del self.query

    with pytest.raises(CheckFailure, match="Missing: query.weight"):
        checks.check_block(Renamed)


def test_a_block_that_raises_shows_the_call():
    class Raises(EncoderBlock):
        def forward(self, x, attention_mask):
            raise RuntimeError("shape mismatch in my code")

    with pytest.raises(CheckFailure, match="shape mismatch in my code"):
        checks.check_block(Raises)


def test_library_attention_is_refused():
    class Library(EncoderBlock):
        def __init__(self, *args):
            super().__init__(*args)
            self.extra = nn.MultiheadAttention(args[0], args[1])

    with pytest.raises(CheckFailure, match="does the exercise for you"):
        checks.check_block(Library)


def test_masking_the_queries_is_named():
    class MasksQueries(EncoderBlock):
        def forward(self, x, attention_mask):
            out = super().forward(x, attention_mask)
            return out.masked_fill(~attention_mask.bool()[..., None], float("nan"))

    with pytest.raises(CheckFailure, match="at padded positions"):
        checks.check_block(MasksQueries)


# ----------------------------------------------------------------- tolerances, measured

def test_tanh_gelu_moves_the_block_by_more_than_the_tolerance():
    # The closest known mistake: through one block it must move the output by well over
    # BLOCK_TOL of the output's scale, or the check could not tell it from rounding.
    # Measured on the checks' own weights (the default case and the hidden ones): 7.6 to 12
    # times the tolerance.
    for seed, (C, h, inner) in [(0, (32, 4, 64)), (11, (48, 6, 96)), (12, (16, 1, 16))]:
        gen = torch.Generator().manual_seed(seed)
        block = EncoderBlock(C, h, inner)
        checks._randomise(block, gen)
        block = block.double()
        x = 2 * torch.randn(3, 7, C, generator=gen, dtype=torch.float64)
        mask = torch.ones(3, 7)
        with torch.no_grad():
            right = checks._block_variant(block, x, mask)
            wrong = checks._block_variant(block, x, mask, act="tanh")
        scale = float(right.abs().max())
        assert float((right - wrong).abs().max()) > 5 * checks.BLOCK_TOL * scale


def test_float32_block_is_well_inside_the_tolerance():
    torch.manual_seed(1)
    block = EncoderBlock(48, 6, 96)
    x = 2 * torch.randn(4, 9, 48)
    mask = (torch.arange(9)[None] < torch.tensor([9, 5, 2, 7])[:, None]).long()
    with torch.no_grad():
        got = block(x, mask).numpy()
        expected = EncoderBlock(48, 6, 96).double()
        expected.load_state_dict(block.state_dict())
        expected = expected(x.double(), mask).numpy()
    real = mask.bool().numpy()
    scale = float(np.abs(expected[real]).max())
    assert np.abs(got[real] - expected[real]).max() < 0.1 * checks.BLOCK_TOL * scale
