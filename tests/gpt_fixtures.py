"""Small GPTs with seeded random weights, shared by tests/test_llmref_gpt.py and
tests/test_llmref_kvcache.py, which compare llmref.gpt and llmref.kvcache with independent
computations on the same models."""
from __future__ import annotations

import math
from typing import Iterator

import pytest
import torch

from llmref.gpt import GPT, GPTConfig


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tensors this small gain nothing from threads, and on a busy 2-core machine threads that
    wait for each other make a 0.1 s check take seconds (as the notebook, which sets the same).

    Autouse in every test module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded_gpt(config: GPTConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> GPT:
    """GPT(config) in eval mode with seeded random weights everywhere, LayerNorms and biases
    included: GPT's own initialisation leaves those at 1 and 0, where a mistake in them would
    not show."""
    torch.manual_seed(seed)
    model = GPT(config).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=dtype)
            if p.dim() == 2 and "transformer.w" not in name:
                p.copy_(noise / math.sqrt(p.shape[1]))  # linear layers: outputs of order 1
            elif ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * noise)
            else:
                p.copy_(0.5 * noise)
    return model.eval()


def random_tokens(config: GPTConfig, *shape: int, seed: int = 1) -> torch.Tensor:
    """Token ids of `shape` drawn uniformly from config's vocabulary by a generator of its own
    (`seed`), so that drawing them leaves torch's global random state alone."""
    return torch.randint(config.vocab_size, shape, generator=torch.Generator().manual_seed(seed))
