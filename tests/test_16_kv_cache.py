"""The checks behind exercise 16_kv_cache, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference quickly, leaves the random state and the
learner's names as it found them, and bad returns fail in words, not tracebacks."""
from __future__ import annotations

import inspect
import time

import pytest
import torch

from autograder.checks import CheckFailure
from autograder.checks import kvcache as checks
from llmref import kvcache as ref


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _notebook(source: str = "") -> dict:
    """A namespace like the notebook's: the reference's functions defined in it from their
    source (so that they call each other by name through its globals, as the learner's do),
    then `source` run on top."""
    namespace: dict = {"__name__": "__main__"}
    exec(inspect.getsource(ref) + "\nfrom llmref import kvcache as _ref\n" + source, namespace)
    return namespace


CHECKS = {
    "attend": (checks.check_attend, "attend_with_cache"),
    "attend_padding": (checks.check_attend_padding, "attend_with_cache"),
    "incremental": (checks.check_incremental, "forward_with_cache"),
    "left_padding": (checks.check_left_padding, "forward_with_cache"),
    "generate": (checks.check_generate, "generate_with_cache"),
}


@pytest.mark.parametrize("case", CHECKS)
def test_reference_passes_each_check_quickly(case, capsys):
    check, name = CHECKS[case]
    start = time.perf_counter()
    check(getattr(ref, name))
    check(_notebook()[name])
    # ~0.05 s each on an idle machine; the margin is for a busy 2-core CI runner.
    assert time.perf_counter() - start < 4.0
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 2


def test_checks_restore_the_learner_s_names_and_the_random_state():
    namespace = _notebook()
    mine = namespace["attend_with_cache"], namespace["forward_with_cache"]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    checks.check_incremental(namespace["forward_with_cache"])
    checks.check_left_padding(namespace["forward_with_cache"])
    checks.check_generate(namespace["generate_with_cache"])
    assert (namespace["attend_with_cache"], namespace["forward_with_cache"]) == mine
    assert torch.equal(torch.get_rng_state(), before)


def test_the_forward_check_grades_forward_alone():
    """A broken attend_with_cache does not fail forward_with_cache's checks: the reference
    stands in for it there (its own test cell catches it)."""
    namespace = _notebook("def attend_with_cache(attn, x, past_kv=None, attention_mask=None):\n"
                          "    raise NotImplementedError()\n")
    with pytest.raises(CheckFailure, match="NotImplementedError"):
        checks.check_attend(namespace["attend_with_cache"])
    checks.check_incremental(namespace["forward_with_cache"])
    checks.check_left_padding(namespace["forward_with_cache"])


ATTEND_FAILURES = {
    "stub": ("    raise NotImplementedError()\n", "still raises NotImplementedError"),
    "None": ("    return None\n", "should return a pair"),
    "output only": ("    return _ref.attend_with_cache(attn, x, past_kv, attention_mask)[0]\n",
                    "should return a pair"),
    "cache not a pair": ("    y, kv = _ref.attend_with_cache(attn, x, past_kv, attention_mask)\n"
                         "    return y, kv[0]\n", "should be a pair of tensors"),
    "NaN": ("    y, kv = _ref.attend_with_cache(attn, x, past_kv, attention_mask)\n"
            "    return y * float('nan'), kv\n", "NaN"),
    "keys out of order": ("    y, (k, v) = _ref.attend_with_cache(attn, x, past_kv, attention_mask)\n"
                          "    return y, (k.flip(2), v)\n", "not those of positions"),
}


@pytest.mark.parametrize("case", ATTEND_FAILURES)
def test_attend_failures_are_named(case):
    body, phrase = ATTEND_FAILURES[case]
    namespace = _notebook("def attend_with_cache(attn, x, past_kv=None, attention_mask=None):\n" + body)
    with pytest.raises(CheckFailure) as caught:
        checks.check_attend(namespace["attend_with_cache"])
    assert phrase in str(caught.value)


FORWARD_FAILURES = {
    "logits only": ("    return _ref.forward_with_cache(model, idx, past, attention_mask)[0]\n",
                    "should return a pair (logits, present)"),
    "cache of one layer": ("    logits, present = _ref.forward_with_cache(model, idx, past, attention_mask)\n"
                           "    return logits, present[:1]\n", "one (k, v) pair per layer"),
    "last position only": ("    logits, present = _ref.forward_with_cache(model, idx, past, attention_mask)\n"
                           "    return logits[:, -1:], present\n", "has shape"),
    "no message": ("    if idx.shape[1] + (0 if past is None else past[0][0].shape[2]) > model.config.block_size:\n"
                   "        raise ValueError('too long')\n"
                   "    return _ref.forward_with_cache(model, idx, past, attention_mask)\n",
                   "does not name both lengths"),
    "shifted logits": ("    logits, present = _ref.forward_with_cache(model, idx, past, attention_mask)\n"
                       "    return logits + 0.01, present\n", "differ from the full forward pass"),
}


@pytest.mark.parametrize("case", FORWARD_FAILURES)
def test_forward_failures_are_named(case):
    body, phrase = FORWARD_FAILURES[case]
    namespace = _notebook("def forward_with_cache(model, idx, past=None, attention_mask=None):\n" + body)
    with pytest.raises(CheckFailure) as caught:
        checks.check_incremental(namespace["forward_with_cache"])
    assert phrase in str(caught.value)


def test_padding_ignored_everywhere_is_named():
    namespace = _notebook("def forward_with_cache(model, idx, past=None, attention_mask=None):\n"
                          "    return _ref.forward_with_cache(model, idx, past, None)\n")
    with pytest.raises(CheckFailure) as caught:
        checks.check_left_padding(namespace["forward_with_cache"])
    assert "differ from the full forward pass" in str(caught.value)


GENERATE_FAILURES = {
    "calls GPT.generate": ("    return model.generate(idx, max_new_tokens, temperature, top_k, generator)\n",
                           "never called forward_with_cache"),
    "a list": ("    return _ref.generate_with_cache(model, idx, max_new_tokens, temperature, top_k,"
               " generator, attention_mask).tolist()\n", "return the token ids"),
    "new tokens only": ("    out = _ref.generate_with_cache(model, idx, max_new_tokens, temperature, top_k,"
                        " generator, attention_mask)\n    return out[:, idx.shape[1]:]\n", "expected"),
    "left in eval mode": ("    out = _ref.generate_with_cache(model, idx, max_new_tokens, temperature, top_k,"
                          " generator, attention_mask)\n    model.eval()\n    return out\n",
                          "restore it with model.train"),
}


@pytest.mark.parametrize("case", GENERATE_FAILURES)
def test_generate_failures_are_named(case):
    body, phrase = GENERATE_FAILURES[case]
    namespace = _notebook("def generate_with_cache(model, idx, max_new_tokens, temperature=1.0, "
                          "top_k=None, generator=None, attention_mask=None):\n" + body)
    with pytest.raises(CheckFailure) as caught:
        checks.check_generate(namespace["generate_with_cache"])
    assert phrase in str(caught.value)


def test_the_tolerance_separates_right_from_wrong():
    """A forward pass off by 1e-3 in every logit fails; the reference passes at 1e-5."""
    namespace = _notebook("def forward_with_cache(model, idx, past=None, attention_mask=None):\n"
                          "    logits, present = _ref.forward_with_cache(model, idx, past, attention_mask)\n"
                          "    return logits * (1 + 1e-3), present\n")
    with pytest.raises(CheckFailure):
        checks.check_incremental(namespace["forward_with_cache"])
