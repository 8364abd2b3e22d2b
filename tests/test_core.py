"""The shared pieces of autograder/checks/_core.py that every exercise's checks use.

Each test pins one behaviour a check relies on, so that a change to the core that breaks it
fails here, with the piece named, before it shows up as a wrong grade somewhere else.
(refuse_shortcuts and watch_calls are tested in tests/test_shortcuts.py.)
"""
from __future__ import annotations

import typing

import numpy as np
import pytest
import torch
from torch import nn

from autograder.checks import _core
from autograder.checks._core import (CheckFailure, call_learner, close, expect_class, expect_tuple,
                                     fail, fail_from, first_match, hint_on_error, matches, shape_of,
                                     to_numpy, torch_isolated, torch_seeded)


# ------------------------------------------------------------------------ fail, fail_from

def test_fail_and_fail_from_are_typed_as_never_returning():
    for fn in (fail, fail_from):
        assert typing.get_type_hints(fn)["return"] is typing.NoReturn


def test_fail_raises_a_check_failure_with_the_message():
    with pytest.raises(CheckFailure, match="^the message$") as info:
        fail("the message")
    assert info.value.__cause__ is None


def test_fail_from_keeps_the_learners_error_as_the_cause():
    error = ValueError("inner")
    with pytest.raises(CheckFailure, match="outer") as info:
        fail_from(error, "outer")
    assert info.value.__cause__ is error


# -------------------------------------------------------------------------- hint_on_error

def _raises(exc):
    def fn(*args):
        raise exc
    return fn


def test_hint_on_error_adds_the_hint_for_the_learners_error():
    seen = []

    def hint(error):
        seen.append(error)
        return "HINT: keepdims" if isinstance(error, ValueError) else None

    with pytest.raises(CheckFailure) as info:
        with hint_on_error(hint):
            call_learner(_raises(ValueError("cannot broadcast")), name="softmax")
    message = str(info.value)
    assert "`softmax` raised ValueError: cannot broadcast" in message
    assert message.endswith("\nHINT: keepdims")
    assert isinstance(info.value.__cause__, ValueError)  # the learner's frames are still shown
    assert len(seen) == 1 and seen[0] is info.value.__cause__


def test_hint_on_error_adds_nothing_when_the_hint_does_not_apply():
    with pytest.raises(CheckFailure) as info:
        with hint_on_error(lambda error: None):
            call_learner(_raises(KeyError("k")), name="f")
    assert "\n" not in str(info.value).split("points at the line in your code.")[-1]


def test_hint_on_error_leaves_the_checks_own_failures_alone():
    calls = []
    with pytest.raises(CheckFailure, match="^wrong values$"):
        with hint_on_error(lambda error: calls.append(error) or "never"):
            fail("wrong values")
    assert calls == []


def test_hint_on_error_is_silent_when_nothing_fails():
    with hint_on_error(lambda error: "never"):
        value = call_learner(lambda x: x + 1, 1, name="f")
    assert value == 2


# ----------------------------------------------------------------- to_numpy and shape_of

def test_to_numpy_detaches_tensors_and_leaves_other_values_alone():
    t = torch.ones(2, 3, requires_grad=True) * 2
    array = to_numpy(t)
    assert isinstance(array, np.ndarray) and array.shape == (2, 3) and array[0, 0] == 2
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32
    listed = [1, 2]
    assert to_numpy(listed) is listed
    assert to_numpy(None) is None


def test_shape_of_reads_arrays_tensors_and_lists_and_gives_none_for_ragged_ones():
    assert shape_of(np.zeros((2, 3))) == (2, 3)
    assert shape_of(torch.zeros(4, 1)) == (4, 1)
    assert shape_of([[1, 2], [3, 4]]) == (2, 2)
    assert shape_of(3.0) == ()
    assert shape_of([[1, 2], [3]]) is None


# -------------------------------------------------------------------------- expect_tuple

def test_expect_tuple_returns_the_values():
    assert expect_tuple([1, 2], "f", ("a", "b")) == (1, 2)
    assert expect_tuple((1, 2, 3), "f", ("a", "b", "c")) == (1, 2, 3)


@pytest.mark.parametrize("result, says", [
    (None, "`attend` returned None. It should end with `return output, weights` like nn.X."),
    (np.zeros(3), "`attend` should return a pair `(output, weights)` like nn.X, but returned "
                  "array of shape (3,)."),
    ((1, 2, 3), "`attend` should return a pair `(output, weights)` like nn.X, but returned "
                "tuple of length 3."),
])
def test_expect_tuple_says_what_was_returned_instead(result, says):
    with pytest.raises(CheckFailure) as info:
        expect_tuple(result, "attend", ("output", "weights"), like=" like nn.X")
    assert str(info.value) == says


def test_expect_tuple_names_three_values_as_asked():
    with pytest.raises(CheckFailure, match=r"should return three gradients `\(dQ, dK, dV\)`, "
                                           r"but returned tuple of length 2\.$"):
        expect_tuple((1, 2), "attention_backward", ("dQ", "dK", "dV"), what="three gradients")
    with pytest.raises(CheckFailure, match=r"should return a tuple `\(a, b, c\)`, but returned "
                                           r"list of length 1"):
        expect_tuple([1], "f", ("a", "b", "c"))


# -------------------------------------------------------------------------- expect_class

def test_expect_class_accepts_a_class_and_refuses_anything_else():
    class Mine(nn.Module):
        pass

    assert expect_class(Mine, "Mine") is Mine
    assert expect_class(Mine, "Mine", base=nn.Module) is Mine
    with pytest.raises(CheckFailure, match=r"Expected `Adam` to be a class, but got function"):
        expect_class(lambda: None, "Adam")
    with pytest.raises(CheckFailure, match=r"to be a class that subclasses nn.Module, but got "
                                           r"Mine\. Pass the class itself"):
        expect_class(Mine(), "Mine", base=nn.Module)
    with pytest.raises(CheckFailure, match=r"subclasses nn.Module, but got the class int\."):
        expect_class(int, "Mine", base=nn.Module)


# ------------------------------------------------------------------ close and matches

def test_close_uses_the_tolerance_it_is_given():
    expected = np.array([1.0, 2.0])
    assert close(expected + 1e-7, expected, rtol=1e-6, atol=0.0)
    assert not close(expected + 1e-5, expected, rtol=1e-6, atol=0.0)
    assert close(np.array([1e-7, 2.0]), np.array([0.0, 2.0]), rtol=0.0, atol=1e-6)
    assert not close(np.array([1e-5, 2.0]), np.array([0.0, 2.0]), rtol=0.0, atol=1e-6)
    # relative to the expected value, as np.allclose: |a - e| <= atol + rtol * |e|
    assert close([1.5], [1.0], rtol=0.5, atol=0.0) and not close([1.0], [1.5], rtol=0.3, atol=0.0)


def test_close_never_broadcasts_and_refuses_what_is_not_numbers():
    assert not close(np.ones((2, 2)), np.ones(2), rtol=1.0, atol=1.0)
    assert not close(np.ones(1), 1.0, rtol=1.0, atol=1.0)
    assert not close(np.ones((2, 3)), np.ones((3, 2)), rtol=1.0, atol=1.0)
    assert not close(["a", "b"], [1.0, 2.0], rtol=1.0, atol=1.0)
    assert not close([[1.0], [1.0, 2.0]], [1.0, 2.0], rtol=1.0, atol=1.0)


def test_close_reads_tensors_and_lists():
    assert close(torch.tensor([1.0, 2.0], requires_grad=True), [1.0, 2.0], rtol=0, atol=0)
    assert close([0.5, 0.25], np.array([0.5, 0.25]), rtol=0, atol=0)


def test_close_treats_nan_as_equal_only_when_asked():
    a = np.array([np.nan, np.inf, 1.0])
    assert not close(a, a.copy(), rtol=1e-6, atol=1e-6)
    assert close(a, a.copy(), rtol=1e-6, atol=1e-6, equal_nan=True)
    assert not close(a, np.array([np.nan, -np.inf, 1.0]), rtol=1e-6, atol=1e-6, equal_nan=True)


def test_matches_computes_the_candidate_and_survives_one_that_raises():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert matches(x * 2, lambda: x + x, rtol=1e-9, atol=0)
    assert matches(x * 2, x + x, rtol=1e-9, atol=0)       # a value is a candidate too
    assert not matches(x * 2, lambda: x * 3, rtol=1e-9, atol=0)
    assert not matches(x, lambda: x @ np.ones(3), rtol=1e-9, atol=0)  # cannot multiply: no match
    overflowed = np.array([np.nan, 1.0])
    with np.errstate(all="raise"):  # the candidate's overflow is silenced, not raised
        assert matches(overflowed, lambda: np.array([np.exp(1000.0) - np.exp(1000.0), 1.0]),
                       rtol=1e-9, atol=0)


def test_first_match_names_the_first_matching_candidate_and_stops_there():
    x = np.arange(4.0)
    computed = []

    def candidate(value, label):
        def compute():
            computed.append(label)
            return value
        return compute, label

    candidates = [candidate(x + 1, "plus one"), candidate(x * 1.0, "itself"),
                  candidate(x, "also itself"), candidate(-x, "never computed")]
    assert first_match(x, candidates, rtol=1e-9, atol=1e-12) == "itself"
    assert computed == ["plus one", "itself"]
    assert first_match(x, [(x + 1, "plus one")], rtol=1e-9, atol=1e-12) is None
    assert first_match(x, iter([]), rtol=1e-9, atol=1e-12) is None


def test_first_match_honours_the_tolerance():
    x = np.array([1.0, 2.0])
    near = x * (1 + 1e-4)
    assert first_match(near, [(x, "x")], rtol=1e-3, atol=0) == "x"
    assert first_match(near, [(x, "x")], rtol=1e-6, atol=0) is None


# ---------------------------------------------------------------------- seeding torch

def test_torch_seeded_seeds_inside_and_gives_the_learners_state_back():
    torch.manual_seed(1234)
    learner_next = torch.rand(3)
    torch.manual_seed(1234)
    with torch_seeded(7):
        inside = torch.rand(3)
        nn.Linear(4, 4)  # building a module draws from the global generator too
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(inside, torch.rand(3))
    assert torch.equal(after, learner_next)


def test_torch_seeded_without_a_seed_only_protects_the_learners_state():
    torch.manual_seed(99)
    first, second = torch.rand(2), torch.rand(2)
    torch.manual_seed(99)
    with torch_seeded():
        inside = torch.rand(2)  # continues the learner's stream...
    assert torch.equal(inside, first)
    assert torch.equal(torch.rand(2), first)  # ...which is rewound afterwards
    assert torch.equal(torch.rand(2), second)


def test_torch_seeded_gives_the_state_back_when_the_inside_fails():
    torch.manual_seed(5)
    learner_next = torch.rand(2)
    torch.manual_seed(5)
    with pytest.raises(CheckFailure):
        with torch_seeded(0):
            torch.rand(10)
            fail("stop")
    assert torch.equal(torch.rand(2), learner_next)


def test_torch_isolated_also_runs_on_one_thread_and_restores_the_count():
    threads = torch.get_num_threads()
    torch.manual_seed(3)
    learner_next = torch.rand(2)
    torch.manual_seed(3)
    with torch_isolated(11):
        assert torch.get_num_threads() == 1
        inside = torch.rand(2)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(2), learner_next)
    torch.manual_seed(11)
    assert torch.equal(inside, torch.rand(2))


# ------------------------------------------------------- as_float_array reads tensors

def test_as_float_array_reads_a_tensor_that_needs_grad_and_a_bfloat16_one():
    t = torch.ones(2, 2, requires_grad=True) * 3
    assert _core.as_float_array(t, "x", (2, 2)).sum() == 12
    assert _core.as_float_array(torch.ones(2, dtype=torch.bfloat16), "x", (2,)).dtype == np.float64
