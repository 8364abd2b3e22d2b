"""The one mechanism that refuses library shortcuts (autograder/checks/_core.py): what it
catches (torch functions, Python functions, classes used, built or subclassed, packages), and
that it watches only what runs inside it."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.checks import CheckFailure
from autograder.checks._core import call_learner, refuse_shortcuts, watch_calls

X = torch.randn(2, 3)


def _used(forbidden, fn):
    with watch_calls(forbidden) as watch:
        fn()
    return watch.used


class Sub(nn.Linear):
    pass


PRE_BUILT = nn.Linear(3, 2)


@pytest.mark.parametrize("forbidden, fn, expected", [
    ({F.linear: "F.linear"}, lambda: PRE_BUILT(X), ["F.linear"]),
    ({nn.Linear: "nn.Linear"}, lambda: nn.Linear(3, 2), ["nn.Linear"]),
    ({nn.Linear: "nn.Linear"}, lambda: Sub(3, 2), ["nn.Linear"]),
    ({nn.Linear: "nn.Linear"}, lambda: PRE_BUILT(X), ["nn.Linear"]),       # built before
    ({torch.nn.utils.clip_grad_norm_: "clip"},
     lambda: torch.nn.utils.clip_grad_norm_(PRE_BUILT.parameters(), 1.0), ["clip"]),
    ({torch.optim.AdamW: "AdamW"}, lambda: torch.optim.AdamW(PRE_BUILT.parameters()), ["AdamW"]),
    ({"torch.softmax": None}, lambda: X.softmax(-1), ["torch.softmax"]),
    ({"scipy.special": "scipy"}, lambda: __import__("scipy.special").special.softmax([1.0]),
     ["scipy"]),
    ({nn.Linear: "nn.Linear", F.linear: "F.linear"}, lambda: (X @ X.T).sum(), []),
])
def test_watch_sees_each_kind_of_shortcut(forbidden, fn, expected):
    assert _used(forbidden, fn) == expected


def test_an_alias_of_a_forbidden_class_is_caught_and_the_profile_restored():
    Linear = nn.Linear
    before = sys.getprofile()
    with pytest.raises(CheckFailure, match="uses nn.Linear, which does the exercise for you.*Why"):
        with refuse_shortcuts({nn.Linear: "nn.Linear"}, "Linear", "Why."):
            call_learner(Linear, 3, 2)
    assert sys.getprofile() is before


def test_a_subclass_is_caught_even_if_it_overrides_everything():
    class Hollow(nn.Linear):
        def __init__(self, *args):
            nn.Module.__init__(self)

    with pytest.raises(CheckFailure, match="uses nn.Linear"):
        with refuse_shortcuts({nn.Linear: "nn.Linear"}, "Linear", "Why.", learner=Hollow):
            call_learner(Hollow, 3, 2)


def test_the_shortcut_is_named_even_when_the_learners_code_also_failed():
    def broken():
        return nn.Linear(3, 2)(torch.ones(4))  # a shape error, after the shortcut

    with pytest.raises(CheckFailure, match="uses nn.Linear"):
        with refuse_shortcuts({nn.Linear: "nn.Linear"}, "f", "Why."):
            call_learner(broken)


def test_only_what_runs_inside_is_watched():
    reference = nn.Linear(3, 2)  # the check's own reference, outside the watch
    with refuse_shortcuts({nn.Linear: "nn.Linear", F.linear: "F.linear"}, "f", "Why."):
        call_learner(lambda: X @ reference.weight.detach().T)
    reference(X)                  # and after it
