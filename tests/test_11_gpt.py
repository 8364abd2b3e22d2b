"""The checks behind exercise 11_gpt, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, bad input fails in words, not tracebacks, and
the tolerances separate right from wrong."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks import gpt as checks
from llmref.gpt import GPT as Reference
from llmref.gpt import count_parameters


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors this small gain nothing from threads, and on a busy 2-core machine threads that
    wait for each other make a 0.1 s check take seconds (as the notebook, which sets the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

ALL_MODEL_CHECKS = [checks.check_structure, checks.check_forward, checks.check_causal,
                    checks.check_loss, checks.check_initial_loss, checks.check_generate,
                    checks.check_generate_refuses_bad_arguments]


@pytest.mark.parametrize("check", ALL_MODEL_CHECKS, ids=lambda c: c.__name__)
def test_reference_passes_each_check_quickly(check, capsys):
    start = time.perf_counter()
    check(Reference)
    # ~0.1 s on an idle machine; the margin is for a busy 2-core CI runner.
    assert time.perf_counter() - start < 3.0
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_reference_formula_passes_the_count_check(capsys):
    checks.check_count_parameters(count_parameters)
    checks.check_count_parameters(count_parameters, configs=[
        dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)])
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    checks.check_structure(Reference)
    checks.check_initial_loss(Reference)
    checks.check_generate(Reference)
    assert torch.equal(torch.get_rng_state(), before)


# ------------------------------------------------------------------ learner stand-ins

def _variant(name: str = "GPT", **methods) -> type:
    """A subclass of the reference with some methods replaced, named like the learner's."""
    return type(name, (Reference,), methods)


class _InitRaises(nn.Module):
    def __init__(self, config):
        super().__init__()
        raise NotImplementedError()


class _CopiedHead(Reference):
    def __init__(self, config):
        super().__init__(config)
        self.lm_head.weight = nn.Parameter(self.transformer.wte.weight.detach().clone())


class _NoModuleDict(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)


class _WithBuffer(Reference):
    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("pos", torch.arange(config.block_size))


class _NoConfig(Reference):
    def __init__(self, config):
        super().__init__(config)
        del self.config
        self.block_size = config.block_size


class _UnusedLayer(Reference):
    def __init__(self, config):
        super().__init__(config)
        self.extra = nn.Parameter(torch.zeros(3))


STRUCTURE_FAILURES = {
    "not a class": (lambda config: None, "a class that subclasses nn.Module"),
    "an instance": (Reference(checks._config()), "a class that subclasses nn.Module"),
    "stub": (_InitRaises, "still raises NotImplementedError"),
    "head copied, not tied": (_CopiedHead, "two tensors"),
    "no ModuleDict": (_NoModuleDict, "nn.ModuleDict"),
    "buffer saved": (_WithBuffer, "persistent=False"),
    "config not kept": (_NoConfig, "self.config"),
    "extra parameter": (_UnusedLayer, "Not expected: extra (3,)"),
}


@pytest.mark.parametrize("case", STRUCTURE_FAILURES, ids=str)
def test_structure_failures_are_named(case):
    cls, phrase = STRUCTURE_FAILURES[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_structure(cls)
    assert phrase in str(caught.value)


def _returning(change) -> type:
    """The reference with forward's (logits, loss) passed through `change`."""
    def forward(self, idx, targets=None):
        return change(*Reference.forward(self, idx, targets))
    return _variant(forward=forward)


FORWARD_FAILURES = {
    "logits only": (_returning(lambda logits, loss: logits), "should return a pair"),
    "flat logits": (_returning(lambda logits, loss: (logits.reshape(-1, logits.shape[-1]), loss)),
                    "return them as (B, T, V)"),
    "a loss without targets": (_returning(lambda logits, loss: (logits, torch.tensor(0.0))),
                               "return None when targets is None"),
    "not numbers": (_returning(lambda logits, loss: ("logits", loss)), "array of numbers"),
    "NaN": (_returning(lambda logits, loss: (logits * float("nan"), loss)), "NaN"),
    "forward raises": (_variant(forward=lambda self, idx, targets=None: {}["missing"]), "raised KeyError"),
}


@pytest.mark.parametrize("case", FORWARD_FAILURES, ids=str)
def test_forward_failures_are_named(case):
    cls, phrase = FORWARD_FAILURES[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_forward(cls)
    assert phrase in str(caught.value)


def test_a_model_that_sees_the_future_fails_the_causality_check():
    def forward(self, idx, targets=None):
        logits, loss = Reference.forward(self, idx, targets)
        return logits + logits.mean(dim=1, keepdim=True), loss  # every position sees all of them
    with pytest.raises(CheckFailure) as caught:
        checks.check_causal(_variant(forward=forward))
    assert "an earlier position sees the future" in str(caught.value)


def test_a_model_that_ignores_its_tokens_fails_the_causality_check():
    def forward(self, idx, targets=None):
        return Reference.forward(self, torch.zeros_like(idx), targets)
    with pytest.raises(CheckFailure) as caught:
        checks.check_causal(_variant(forward=forward))
    assert "does not read its input tokens" in str(caught.value)


LOSS_FAILURES = {
    "no loss": (_returning(lambda logits, loss: (logits, None)), "returned None as the loss"),
    "per-position losses": (_returning(lambda logits, loss: (logits, None if loss is None else loss.repeat(3))),
                            "should be one number"),
    "detached": (_returning(lambda logits, loss: (logits, None if loss is None else loss.detach())),
                 "not connected to the parameters"),
    "scaled": (_returning(lambda logits, loss: (logits, None if loss is None else 1.5 * loss)),
               "the reference's"),
    "wrong logits": (_returning(lambda logits, loss: (logits + 1e-2 * torch.arange(logits.shape[-1]), loss)),
                     "the forward test says what to fix first"),
}


@pytest.mark.parametrize("case", LOSS_FAILURES, ids=str)
def test_loss_failures_are_named(case):
    cls, phrase = LOSS_FAILURES[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_loss(cls)
    assert phrase in str(caught.value)


class _DefaultInit(Reference):
    @staticmethod
    def _init_weights(module):
        pass  # PyTorch's own initialisation stays


class _WideInit(Reference):
    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.05)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class _LinearDefault(Reference):
    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)


@pytest.mark.parametrize("cls, phrase", [
    (_DefaultInit, "confidently wrong"),
    (_WideInit, "logits are too large"),
    (_LinearDefault, "PyTorch's default initialisation"),
], ids=["PyTorch's init", "std 0.05", "Linear layers left alone"])
def test_initialisation_failures_are_named(cls, phrase):
    with pytest.raises(CheckFailure) as caught:
        checks.check_initial_loss(cls)
    assert phrase in str(caught.value)


def _generating(change) -> type:
    """The reference with generate's result passed through change(result, idx)."""
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        return change(Reference.generate(self, idx, max_new_tokens, temperature, top_k, generator), idx)
    return _variant(generate=generate)


def _in_place(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    out = Reference.generate(self, idx, max_new_tokens, temperature, top_k, generator)
    idx.zero_()
    return out


def _sampling_in_training_mode(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    out = Reference.generate(self, idx, max_new_tokens, temperature, top_k, generator)
    self(idx[:, -self.config.block_size:])  # one extra forward pass, still in training mode
    return out


def _always_train(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    out = Reference.generate(self, idx, max_new_tokens, temperature, top_k, generator)
    self.train()
    return out


def _multiplied(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return Reference.generate(self, idx, max_new_tokens, 1 / temperature, top_k, generator)


def _no_generator(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return Reference.generate(self, idx, max_new_tokens, temperature, top_k, None)


GENERATE_FAILURES = {
    "new tokens only": (_generating(lambda out, idx: out[:, idx.shape[1]:]), "only the 6 new tokens"),
    "a list": (_generating(lambda out, idx: out.tolist()), "return a tensor"),
    "floats": (_generating(lambda out, idx: out.float()), "int64"),
    "prompt lost": (_generating(lambda out, idx: out.flip(1)), "are not the prompt"),
    "idx changed in place": (_variant(generate=_in_place), "changed the idx"),
    "training mode": (_variant(generate=_sampling_in_training_mode), "runs the model in training mode"),
    "always train()": (_variant(generate=_always_train), "switched a model that was in eval mode"),
    "temperature multiplied": (_variant(generate=_multiplied), "multiplied by the temperature"),
    "global generator": (_variant(generate=_no_generator), "generator=generator"),
    "no generate": (type("GPT", (nn.Module,), {"__init__": lambda self, config: nn.Module.__init__(self)}),
                    "has no generate method"),
}


@pytest.mark.parametrize("case", GENERATE_FAILURES, ids=str)
def test_generate_failures_are_named(case):
    cls, phrase = GENERATE_FAILURES[case]
    with pytest.raises(CheckFailure) as caught:
        checks.check_generate(cls)
    assert phrase in str(caught.value)


def test_generate_gets_the_reference_forward_even_when_the_learners_is_broken():
    # The sampling test grades the sampling loop alone: a broken forward does not fail it.
    broken = _variant(forward=lambda self, idx, targets=None: (None, None))
    checks.check_generate(broken)


def test_a_refusal_that_raises_the_wrong_error_is_named():
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        assert temperature > 0, "temperature"
        return Reference.generate(self, idx, max_new_tokens, temperature, top_k or None, generator)
    with pytest.raises(CheckFailure) as caught:
        checks.check_generate_refuses_bad_arguments(_variant(generate=generate))
    assert "raised AssertionError" in str(caught.value) and "ValueError" in str(caught.value)


@pytest.mark.parametrize("fn, phrase", [
    (lambda config: float(count_parameters(config)), "return an int"),
    (lambda config: count_parameters(config) + 1, "parameters. Count wte"),
    (lambda config: sum(p.numel() for p in Reference(config).parameters()), "without building a model"),
    (lambda config: int(torch.tensor(count_parameters(config))), "calls torch"),
    (lambda config: None, "returned None"),
], ids=["float", "off by one", "builds the model", "uses a tensor", "None"])
def test_count_failures_are_named(fn, phrase):
    with pytest.raises(CheckFailure) as caught:
        checks.check_count_parameters(fn)
    assert phrase in str(caught.value)


def test_count_accepts_numpy_integers():
    checks.check_count_parameters(lambda config: np.int64(count_parameters(config)))


# ------------------------------------------------------------------ tolerances, variants

def test_every_logit_variant_is_far_outside_the_tolerance():
    case = checks._make_case(1, batch=3, length=10)
    for kwargs, _ in checks._logit_variants(case):
        wrong = checks._variant_logits(case, **kwargs)
        assert np.abs(wrong - case.expected_logits).max() > 100 * checks.ATOL, kwargs
    assert np.allclose(checks._variant_logits(case), case.expected_logits, rtol=0, atol=1e-12)


def test_float32_reference_passes_with_room_to_spare():
    for overrides in ({}, {"bias": False, "n_layer": 3, "n_embd": 24, "n_head": 3}):
        case = checks._make_case(4, batch=3, length=12, **overrides)
        model = checks._reference(case.config, case.state, dtype=torch.float32)
        with torch.no_grad():
            logits, loss = model(case.idx, case.targets)
        assert np.abs(logits.numpy() - case.expected_logits).max() < checks.ATOL / 10
        assert abs(float(loss) - case.expected_loss) < checks.LOSS_TOL / 10


def test_every_loss_variant_is_far_from_the_right_loss():
    case = checks._make_case(3, batch=4, length=9)
    for wrong, description in checks._variant_losses(case, torch.from_numpy(case.expected_logits)):
        assert abs(float(wrong) - case.expected_loss) > 1e3 * checks.LOSS_TOL, description


def test_sampling_without_a_mistake_is_the_reference_and_every_mistake_shows():
    config = checks._config()
    state = checks._random_state(config, 5)
    reference = checks._reference(config, state, dtype=torch.float32)
    prompt = torch.randint(config.vocab_size, (2, config.block_size - 2),
                           generator=torch.Generator().manual_seed(5))
    shown = set()
    for i, (temperature, top_k) in enumerate(checks.DEFAULT_SETTINGS):
        expected = reference.generate(prompt, 6, temperature, top_k, torch.Generator().manual_seed(i))
        assert torch.equal(checks._sample(reference, prompt, 6, temperature, top_k, i), expected)
        for kwargs, description in checks._sampling_variants(temperature, top_k):
            if not torch.equal(checks._sample(reference, prompt, 6, temperature, top_k, i, **kwargs), expected):
                shown.add(description)
    every = {d for t, k in checks.DEFAULT_SETTINGS for _, d in checks._sampling_variants(t, k)}
    assert shown == every  # each known sampling mistake changes the tokens of some default setting


def test_count_variants_are_distinct_from_the_right_count():
    for overrides in checks.DEFAULT_COUNT_CONFIGS:
        config = checks.GPTConfig(**overrides)
        right = count_parameters(config)
        assert all(wrong != right for wrong, _ in checks._count_variants(config, right))


def test_failure_display_hides_our_frames_and_keeps_the_learners():
    def forward(self, idx, targets=None):
        return idx @ idx  # the learner's bug
    with pytest.raises(CheckFailure) as caught:
        checks.check_forward(_variant(forward=forward))
    shown = "\n".join(caught.value._render_traceback_())
    assert "return idx @ idx" in shown
    assert "_core.py" not in shown and "autograder" not in shown
