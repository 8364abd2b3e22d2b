"""The checks behind exercise 19_agent, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference quickly, rejects wrong code with a message that
names the mistake, and turns bad input into a CheckFailure, not a traceback."""
from __future__ import annotations

import time

import pytest

from autograder.checks import CheckFailure
from autograder.checks import agent as checks
from llmref import agent as ref

FAST = [(checks.check_parse_call, ref.parse_call), (checks.check_dispatch, ref.dispatch),
        (checks.check_run_agent, ref.run_agent)]


@pytest.mark.parametrize("check, piece", FAST, ids=lambda x: getattr(x, "__name__", ""))
def test_reference_passes_each_check_quickly(check, piece, capsys):
    start = time.perf_counter()
    check(piece)
    # A few milliseconds on an idle machine; the margin is for a busy 2-core CI runner.
    assert time.perf_counter() - start < 2.0
    assert "\N{CHECK MARK}" in capsys.readouterr().out


def test_every_fixed_parse_case_is_what_it_says():
    # A case explained as malformed must be refused by the reference, and the other way round.
    for line, why in checks.PARSE_CASES:
        well_formed = why.startswith(("a well-formed call", "a call with no arguments"))
        assert (ref.parse_call(line) is not None) == well_formed, line


def test_broken_calls_are_all_malformed():
    import random
    rng = random.Random(7)
    for _ in range(300):
        line, name, args = checks._random_call(rng)
        assert ref.parse_call(line) == (name, args)
        broken, _ = checks._broken(rng, line)
        assert ref.parse_call(broken) is None, broken


@pytest.mark.parametrize("bad, phrase", [
    (lambda line: [], r"a pair \(name, args\)"),
    (lambda line: ("mul", "4821,93") if line.startswith("CALL mul(4821,93)") else ref.parse_call(line),
     r"a pair \(name, args\)"),
    ("not a function", "Expected `parse_call` to be a function"),
    (lambda line: 1 / 0, "raised ZeroDivisionError"),
], ids=["list", "args as a string", "not callable", "crash"])
def test_bad_parse_call_gets_a_clear_message(bad, phrase):
    with pytest.raises(CheckFailure, match=phrase):
        checks.check_parse_call(bad)


def test_a_parse_that_returns_lists_is_accepted():
    def as_lists(line):
        found = ref.parse_call(line)
        return None if found is None else [found[0], list(found[1])]
    checks.check_parse_call(as_lists)


@pytest.mark.parametrize("bad, phrase", [
    (lambda name, args, tools: ref.dispatch(name, args, tools) + "\n", "without it"),
    (lambda name, args, tools: None, "return the line as a string"),
    (lambda name, args, tools: (tools.clear(), ref.dispatch(name, args, {"x": len}))[1],
     "expected"),
    (lambda name, args, tools: (tools.pop("boom", None), ref.dispatch(name, args, dict(tools,
     boom=lambda *a: 1 / 0)))[1], "changed the registry"),
    (lambda name, args, tools: str(tools[name](*args)), "never raise"),
], ids=["newline", "None", "wrong registry", "mutates", "no error handling"])
def test_bad_dispatch_gets_a_clear_message(bad, phrase):
    with pytest.raises(CheckFailure, match=phrase):
        checks.check_dispatch(bad)


def _uses_repr(name, args, tools):
    line = ref.dispatch(name, args, tools)
    if " raised " in line:
        try:
            tools[name](*args)
        except Exception as exc:
            return f"ERROR {name} raised {exc!r}"
    return line


def test_an_error_written_with_repr_is_caught_with_its_reason():
    with pytest.raises(CheckFailure, match=r"MESSAGE = str\(exc\)"):
        checks.check_dispatch(_uses_repr)


def _never_validates(model, question, tools, max_steps=4):
    if max_steps < 1 or not tools or not question or "\n" in question:
        return ref.AgentRun(None, "step_limit", "", 0)
    return ref.run_agent(model, question, tools, max_steps)


def _validates_late(model, question, tools, max_steps=4):
    model("Q: peek\n")
    return ref.run_agent(model, question, tools, max_steps)


def _wrong_error_type(model, question, tools, max_steps=4):
    if max_steps < 1:
        raise RuntimeError("no")
    return ref.run_agent(model, question, tools, max_steps)


def _vague_message(model, question, tools, max_steps=4):
    try:
        return ref.run_agent(model, question, tools, max_steps)
    except ValueError:
        raise ValueError("bad input") from None


@pytest.mark.parametrize("bad, phrase", [
    (lambda *a, **k: None, "returned None"),
    (lambda *a, **k: {"answer": "x"}, "without answer, status, transcript, steps"),
    (_never_validates, "without raising"),
    (_validates_late, "the model was shown|called the model before"),
    (_wrong_error_type, "raised RuntimeError"),
    (_vague_message, "should name `max_steps`"),
], ids=["None", "dict", "no checks", "calls model early", "RuntimeError", "vague message"])
def test_bad_run_agent_gets_a_clear_message(bad, phrase):
    with pytest.raises(CheckFailure, match=phrase):
        checks.check_run_agent(bad)


def test_a_run_agent_that_shows_the_model_less_is_caught():
    # Right transcript, but the model only ever sees the question: the result was not fed back.
    def forgetful(model, question, tools, max_steps=4):
        shown = []
        def peek(transcript):
            shown.append(transcript)
            return model("Q: " + question + "\n")
        run = ref.run_agent(peek, question, tools, max_steps)
        return run
    with pytest.raises(CheckFailure, match="the model was shown"):
        checks.check_run_agent(forgetful)
