"""The checks behind exercise 20_export, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference, and bad submissions fail in words, not tracebacks."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.checks import CheckFailure
from autograder.checks import export as checks
from llmref.export import export_gpt, export_gpt_with_cache


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_reference_passes_every_check(capsys):
    checks.check_export_gpt(export_gpt)
    checks.check_export_refuses_training_mode(export_gpt)
    checks.check_export_with_cache(export_gpt_with_cache)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 3


def _writes(content: bytes):
    def export(model, path):
        Path(path).write_bytes(content)
        return Path(path)
    return export


def _stub(model, path):
    raise NotImplementedError()


def _crashes(model, path):
    return {}["missing"]


@pytest.mark.parametrize("fn, phrase", [
    (lambda model, path: None, "wrote no file"),
    (_writes(b"not an onnx file"), "onnx.checker rejects"),
    (_stub, "still raises NotImplementedError"),
    (_crashes, "raised KeyError"),
], ids=["nothing written", "garbage written", "stub", "crash"])
@pytest.mark.parametrize("check", [checks.check_export_gpt, checks.check_export_with_cache],
                         ids=["plain", "cached"])
def test_broken_exports_are_named(check, fn, phrase):
    with pytest.raises(CheckFailure) as caught:
        check(fn)
    assert phrase in str(caught.value)


def _refuses(error):
    def export(model, path):
        raise error
    return export


def _switches_to_eval(model, path):
    model.eval()
    raise ValueError("the model was in training mode; I switched it to eval")


@pytest.mark.parametrize("fn, phrase", [
    (_refuses(ValueError("no")), "does not say why"),
    (_refuses(TypeError("training mode")), "raised TypeError"),
    (_stub, "still raises NotImplementedError"),
    (_switches_to_eval, "switched the caller's model to eval mode"),
], ids=["silent ValueError", "wrong error type", "stub", "switched mode"])
def test_wrong_refusals_of_training_mode_are_named(fn, phrase):
    with pytest.raises(CheckFailure) as caught:
        checks.check_export_refuses_training_mode(fn)
    assert phrase in str(caught.value)


def test_a_refusal_that_names_training_mode_passes(capsys):
    checks.check_export_refuses_training_mode(_refuses(ValueError("model in training mode")))
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_the_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    checks.check_export_refuses_training_mode(_refuses(ValueError("training mode")))
    assert torch.equal(torch.get_rng_state(), before)
