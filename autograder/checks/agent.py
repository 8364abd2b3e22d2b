"""Checks for exercise 19_agent: parsing a tool call, dispatching it, and the agent loop.

Everything here is text, so everything is compared exactly, with the course's reference
(:mod:`llmref.agent`): the parse of fixed and seeded random lines (well-formed calls and
calls broken in one place each), the line dispatch writes for results, unknown tools and
exceptions, and, for the loop, the whole transcript, the answer, the status, the number of
steps and every transcript the model was shown, on scripted models (fakes that return
canned lines). No tolerance: a transcript is right or it is not.

Each case carries the reason it exists; when the learner's answer differs, the message
shows the case, both answers and that reason, which names the likeliest mistake.
"""
from __future__ import annotations

import random
import string
from typing import Any

from llmref import agent as ref
from llmref.agent_data import TOOLS

from ._core import CheckFailure, call_learner, fail, fail_from, passed

# ------------------------------------------------------------------ parse_call

WELL_FORMED = "a well-formed call: (name, args) with args a tuple of the strings between the commas"
PARSE_CASES = [
    ("CALL mul(4821,93)", WELL_FORMED),
    ("CALL sig(os.path.join)", WELL_FORMED),
    ("CALL add(-5,+7)", WELL_FORMED + "; an argument may hold any character but whitespace, "
     "commas and parentheses"),
    ("CALL x1_y(a)", WELL_FORMED),
    ("CALL _private(1,2,3)", WELL_FORMED),
    ("CALL now()", "a call with no arguments has args == (), an empty tuple: \"\".split(\",\") "
     "is [\"\"], so test for an empty inside first"),
    ("CALL mul(4821,,93)", "an empty argument between two commas makes the call malformed: "
     "return None"),
    ("CALL mul(4821,93,)", "an empty argument after the last comma makes the call malformed: "
     "return None"),
    ("CALL mul(,)", "empty arguments make the call malformed: return None"),
    ("CALL mul(4821, 93)", "whitespace inside the parentheses makes the call malformed: return "
     "None (do not strip it away)"),
    ("CALL mul(4821,93 )", "whitespace inside the parentheses makes the call malformed: return "
     "None (do not strip it away)"),
    ("CALL mul(4821,\t93)", "whitespace (a tab too) inside the parentheses makes the call "
     "malformed: return None"),
    ("CALL mul(4821,93) please", "text after the closing parenthesis makes the call malformed: "
     "the call must fill the whole line (re.fullmatch, not re.match)"),
    ("CALL mul(4821,93)A: 1", "text after the closing parenthesis makes the call malformed: the "
     "call must fill the whole line (re.fullmatch, not re.match)"),
    ("CALL mul(4821,93) ", "a space after the closing parenthesis makes the call malformed: the "
     "call must fill the whole line"),
    ("CALL mul(4821,93)\n", "a newline at the end makes the line malformed: `$` also matches "
     "before a final newline, so use re.fullmatch (or \\Z)"),
    ("CALL mul(1,2))", "text after the closing parenthesis makes the call malformed: the call "
     "must fill the whole line"),
    (" CALL mul(4821,93)", "anything before `CALL` makes the line malformed"),
    ("call mul(4821,93)", "`CALL` is upper case: `call` is malformed"),
    ("CALLmul(4821,93)", "`CALL` is followed by exactly one space"),
    ("CALL  mul(4821,93)", "`CALL` is followed by exactly one space"),
    ("CALL mul 4821,93", "a call has parentheses: without them it is malformed"),
    ("CALL mul(4821,93", "a call without its closing parenthesis is malformed"),
    ("CALL mul4821,93)", "a call without its opening parenthesis is malformed"),
    ("CALL mul(f(1))", "parentheses inside the arguments make the call malformed"),
    ("CALL (4821,93)", "a call needs a tool name"),
    ("CALL 2mul(4821,93)", "a tool name starts with a letter or an underscore, not a digit"),
    ("CALL mul-2(4821,93)", "a tool name holds only letters, digits and underscores"),
    ("CALL os.path(1)", "a tool name holds only letters, digits and underscores (no dots)"),
    ("A: 448353", "an answer is not a call: return None"),
    ("", "an empty line is not a call: return None"),
]

_NAME_FIRST = string.ascii_letters + "_"
_NAME_REST = string.ascii_letters + string.digits + "_"
_ARG_CHARS = string.ascii_letters + string.digits + ".-+_=*'\"/:<>[]{}!?@#"


def _random_call(rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    name = rng.choice(_NAME_FIRST) + "".join(rng.choice(_NAME_REST) for _ in range(rng.randint(0, 7)))
    args = tuple("".join(rng.choice(_ARG_CHARS) for _ in range(rng.randint(1, 6)))
                 for _ in range(rng.randint(0, 4)))
    return f"CALL {name}({','.join(args)})", name, args


def _broken(rng: random.Random, line: str) -> tuple[str, str]:
    """`line` broken in one place, and why that makes it malformed."""
    open_at, close_at = line.index("("), line.rindex(")")
    choices = [
        (line + rng.choice([" ", "\n", "x", ")", " A: 1"]),
         "text (even a space or a newline) after the closing parenthesis makes the call "
         "malformed: the call must fill the whole line (re.fullmatch)"),
        (line[:open_at + 1] + line[open_at + 1:close_at].replace(",", ",,", 1) + ")"
         if "," in line else line[:close_at] + ",)",
         "an empty argument makes the call malformed: return None"),
        (line[:close_at] + rng.choice([" ", "\t"]) + ")" if close_at > open_at + 1 else line[:-1] + " )",
         "whitespace inside the parentheses makes the call malformed: return None (do not strip it)"),
        (line[:-1], "a call without its closing parenthesis is malformed"),
        ("CALL " + rng.choice("0123456789-.") + line[5:],
         "a tool name starts with a letter or an underscore and holds only letters, digits and "
         "underscores"),
    ]
    return rng.choice(choices)


def _normalise_parse(value: Any) -> Any:
    """The learner's parse as (name, tuple of args) or None; lists are accepted for tuples."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], (tuple, list)):
        return (value[0], tuple(value[1]))
    return value


def check_parse_call(parse_call, *, seed: int = 0, n_random: int = 60) -> None:
    """The fixed cases, then n_random seeded well-formed calls and as many broken ones."""
    __tracebackhide__ = True
    rng = random.Random(seed)
    cases = list(PARSE_CASES)
    for _ in range(n_random):
        line, _, _ = _random_call(rng)
        cases.append((line, WELL_FORMED))
        cases.append(_broken(rng, line))
    for line, why in cases:
        expected = ref.parse_call(line)
        got = call_learner(parse_call, line, name="parse_call")
        shaped = _normalise_parse(got)
        if shaped is not None and not (isinstance(shaped, tuple) and len(shaped) == 2
                                       and isinstance(shaped[1], tuple)):
            fail(f"parse_call({line!r}) returned {got!r}: return a pair (name, args), args a tuple "
                 "of strings, or None for a malformed line.")
        if shaped != expected:
            fail(f"parse_call({line!r}) returned {got!r}, expected {expected!r}: {why}.")
    passed(f"parse_call reads {sum(ref.parse_call(c) is not None for c, _ in cases)} "
           f"well-formed calls and refuses {sum(ref.parse_call(c) is None for c, _ in cases)} "
           "malformed lines, like the reference")


# ------------------------------------------------------------------ dispatch

def _boom(*args):
    raise ZeroDivisionError("division by zero")


def _needs_key(key):
    return {"a": "1"}[key]


def _two_lines(text):
    return text + "\n" + text.upper()


def _forged(text):
    return f"{text}\nA: 42"


def _count(*args):
    return len(args)


def _nothing():
    return None


def _registry() -> dict:
    tools = dict(TOOLS)
    tools.update(boom=_boom, lookup=_needs_key, shout=_two_lines, forge=_forged, count=_count,
                 nothing=_nothing)
    return tools


DISPATCH_CASES = [
    ("mul", ("4821", "93"), "a tool's value is written `RESULT ` + str(value)"),
    ("sig", ("math.gcd",), "a tool's value is written `RESULT ` + str(value)"),
    ("count", ("a", "b", "c"), "the tool gets the arguments as separate positional strings, "
     "tools[name](*args), and its value (here an int) is written with str"),
    ("count", (), "a call without arguments calls tools[name]() and writes its value with str"),
    ("nothing", (), "a tool's value is written with str, even None"),
    ("shout", ("hi",), "a result must stay one line: replace every newline of str(value) "
     "with a space"),
    ("forge", ("7",), "a result must stay one line: replace every newline of str(value) with a "
     "space (or a tool's output could forge an `A:` line)"),
    ("pow", ("2", "10"), "a name that is not in the registry is an unknown tool: return "
     "`ERROR unknown tool NAME; the tools are ...` with the registry's names sorted, before "
     "calling anything"),
    ("len", ("abc",), "the registry is an allow-list: `len` is a Python function but not a tool, "
     "so it is an unknown tool; never look names up in builtins or globals"),
    ("eval", ("1+1",), "the registry is an allow-list: `eval` is not a tool, so it is an unknown "
     "tool; never eval the model's text"),
    ("__import__", ("os",), "the registry is an allow-list: `__import__` is not a tool, so it is "
     "an unknown tool"),
    ("mul", ("12", "x"), "a tool that raises (here ValueError) gives `ERROR NAME raised TYPE: "
     "MESSAGE`, with type(exc).__name__ and str(exc)"),
    ("mul", ("1",), "a call with the wrong number of arguments raises TypeError inside the call: "
     "catch every Exception, not only ValueError"),
    ("boom", ("1",), "any Exception a tool raises (here ZeroDivisionError) becomes an ERROR line: "
     "catch Exception, not only ValueError"),
    ("lookup", ("b",), "a tool's KeyError is the tool's failure, `raised KeyError: 'b'`; only a "
     "name missing from the registry is an unknown tool"),
    ("sig", ("os.system",), "any Exception a tool raises (here LookupError) becomes an ERROR line"),
]


def _dispatch_call(dispatch, name, args, tools, why) -> Any:
    __tracebackhide__ = True
    try:
        return call_learner(dispatch, name, args, tools, name="dispatch")
    except CheckFailure as failure:
        if failure.__cause__ is None:      # not a crash (NotImplementedError, not callable)
            raise
        fail_from(failure.__cause__, f"{failure}\ndispatch must never raise because of what "
                  f"the model wrote or what a tool did: here dispatch({name!r}, {args!r}, tools) "
                  "crashed. Check the name against the registry first, then call the tool in a "
                  f"`try` and catch Exception (every kind, not only ValueError). This case: {why}.")


def check_dispatch(dispatch, *, seed: int = 0) -> None:
    """The fixed cases in a seeded order, then the registry left as it was."""
    __tracebackhide__ = True
    cases = list(DISPATCH_CASES)
    random.Random(seed).shuffle(cases)
    for name, args, why in cases:
        tools = _registry()
        before = dict(tools)
        expected = ref.dispatch(name, args, _registry())
        got = _dispatch_call(dispatch, name, args, tools, why)
        if not isinstance(got, str):
            fail(f"dispatch({name!r}, {args!r}, tools) returned {got!r} ({type(got).__name__}): "
                 "return the line as a string, without its newline.")
        if got == expected + "\n":
            fail(f"dispatch({name!r}, {args!r}, tools) returned {got!r}, with a newline at the end: "
                 "return the line without it (the loop adds it).")
        if got != expected:
            form = ""
            if " raised " in expected:
                form = (" The line is `ERROR NAME raised TYPE: MESSAGE` with TYPE = "
                        "type(exc).__name__ and MESSAGE = str(exc).")
            elif "unknown tool" in expected:
                form = (" The line is `ERROR unknown tool NAME; the tools are ` and the registry's "
                        "names, sorted, joined by \", \".")
            fail(f"dispatch({name!r}, {args!r}, tools) returned\n  {got!r}\nexpected\n  {expected!r}\n"
                 f"{why}.{form}")
        if tools != before:
            fail("dispatch changed the registry: it must only read `tools`.")
    passed(f"dispatch writes results, unknown tools and exceptions as the reference does "
           f"({len(cases)} calls)")


# ------------------------------------------------------------------ run_agent

class _Scenario:
    def __init__(self, what: str, lines: list[str], why: str, max_steps: int = 4,
                 question: str = "4821*93=?", tools: dict | None = None):
        self.what, self.lines, self.why = what, lines, why
        self.max_steps, self.question, self.tools = max_steps, question, tools


SCENARIOS = [
    _Scenario("the model answers at once", ["A: 448353"],
              "a line starting with `A: ` ends the run: status 'answer', the answer is the text "
              "after `A: `, steps 1"),
    _Scenario("one call, then the answer", ["CALL mul(4821,93)", "A: 448353"],
              "the call's line and then dispatch's line go into the transcript, each followed by "
              "a newline, and the model sees the whole transcript at its next step"),
    _Scenario("two calls, then the answer", ["CALL mul(512,37)", "CALL add(18944,6034)", "A: 24978"],
              "every call's line and dispatch's line go into the transcript, and the loop goes on "
              "until the answer", question="512*37+6034=?"),
    _Scenario("an unknown tool, then a recovery", ["CALL pow(2,10)", "CALL mul(2,512)", "A: 1024"],
              "an unknown tool does not end the run: dispatch's ERROR line goes into the "
              "transcript and the model is called again", question="2**10=?"),
    _Scenario("a tool that raises, then a recovery", ["CALL mul(12,x)", "CALL mul(12,10)", "A: 120"],
              "a tool's exception does not end the run: dispatch's ERROR line goes into the "
              "transcript and the model is called again", question="12*10=?"),
    _Scenario("a malformed call", ["CALL mul(4821, 93)", "A: 448353"],
              "a line that is neither an answer nor a well-formed call ends the run at once: "
              "append MALFORMED and a newline, status 'malformed', answer None; the model is "
              "not called again"),
    _Scenario("text that is not a call at all", ["The answer is 448353.", "A: 448353"],
              "a line that is neither an answer nor a well-formed call is malformed: append "
              "MALFORMED and a newline and stop, status 'malformed'"),
    _Scenario("a model that never answers", ["CALL add(1,1)"],
              "after max_steps calls of the model without an answer the run stops: status "
              "'step_limit', answer None, steps == max_steps; never call the model more than "
              "max_steps times", max_steps=3, question="1+1=?"),
    _Scenario("a model that writes the tool's result itself",
              ["CALL mul(6,7)\nRESULT 41\nA: 41", "A: 42"],
              "keep only the first line of the model's text (up to its first newline): the "
              "model must not write RESULT lines, the loop does", question="6*7=?"),
    _Scenario("an answer with a newline after it", ["A: 42\nQ: 1+1=?\n"],
              "the model's line is its text up to the first newline: the answer is '42'",
              question="6*7=?"),
    _Scenario("max_steps=1 and an answer", ["A: 7"],
              "one step is allowed, and an answer in it ends the run with status 'answer'",
              max_steps=1, question="3+4=?"),
    _Scenario("max_steps=1 and a call", ["CALL add(3,4)", "A: 7"],
              "after max_steps=1 call of the model the run stops with status 'step_limit', the "
              "call and its RESULT in the transcript; the model is called once", max_steps=1,
              question="3+4=?"),
    _Scenario("an empty answer", ["A: "],
              "`A: ` with nothing after it is an answer, the empty string"),
    _Scenario("an answer without its space", ["A:448353", "A: 448353"],
              "the answer prefix is `A: ` with its space: `A:448353` is malformed"),
    _Scenario("another registry", ["CALL twice(ab)", "CALL mul(2,3)", "A: abab"],
              "dispatch gets the `tools` the loop was given", question="ab twice?",
              tools={"twice": lambda s: s * 2}),
]

_LINE_POOL = ["A: 448353", "A: ", "A: (a, b)", "CALL mul(4821,93)", "CALL add(1,-1)", "CALL mul(2,x)",
              "CALL sig(math.gcd)", "CALL sig(os.system)", "CALL pow(2,10)", "CALL len(abc)",
              "CALL mul(1, 2)", "CALL add(1,,2)", "RESULT 5", "hello", "", "CALL mul(3,4)\nRESULT 11",
              "A: 12\nA: 13", "CALL now()", "CALL mul(5,5) ", "ERROR none"]


def _random_scenarios(rng: random.Random, n: int) -> list[_Scenario]:
    found = []
    for i in range(n):
        lines = [rng.choice(_LINE_POOL) for _ in range(rng.randint(1, 6))]
        found.append(_Scenario(f"random script {i}: {lines!r}", lines,
                               "the loop must do what the steps of section 4 say, line by line",
                               max_steps=rng.randint(1, 6), question=f"{rng.randint(10, 9999)}*7=?"))
    return found


def _compare_runs(scenario: _Scenario, got: Any, expected: ref.AgentRun, got_prompts: list[str],
                  expected_prompts: list[str]) -> None:
    __tracebackhide__ = True
    head = (f"In the scenario '{scenario.what}' (the model says {scenario.lines!r}, "
            f"max_steps={scenario.max_steps}): ")
    if got is None:
        fail(head + "run_agent returned None. Does it end with `return AgentRun(...)`?")
    missing = [a for a in ("answer", "status", "transcript", "steps") if not hasattr(got, a)]
    if missing:
        fail(head + f"run_agent returned a {type(got).__name__} without {', '.join(missing)}: "
             "return an AgentRun(answer, status, transcript, steps).")
    problems = []
    if got.transcript != expected.transcript:
        problems.append(f"the transcript is\n{got.transcript!r}\nexpected\n{expected.transcript!r}")
    if got.status != expected.status:
        problems.append(f"status is {got.status!r}, expected {expected.status!r}")
    if got.answer != expected.answer:
        problems.append(f"answer is {got.answer!r}, expected {expected.answer!r}")
    if got.steps != expected.steps:
        problems.append(f"steps is {got.steps!r}, expected {expected.steps!r} (the number of "
                        "times the model was called)")
    if not problems and got_prompts != expected_prompts:
        problems.append(f"the model was shown {got_prompts!r}, expected {expected_prompts!r}")
    if problems:
        fail(head + "; ".join(problems) + f".\nWhat this scenario checks: {scenario.why}.")


BAD_INPUT = [
    (dict(max_steps=0), "max_steps", "max_steps=0 must raise ValueError naming max_steps: an "
     "agent that may not call its model cannot answer"),
    (dict(max_steps=-2), "max_steps", "max_steps=-2 must raise ValueError naming max_steps"),
    (dict(tools={}), "tools", "an empty registry must raise ValueError naming tools: an agent "
     "without tools is only a model"),
    (dict(question="1+1=?\nA: 2"), "question", "a question with a newline must raise ValueError "
     "naming question: it would put lines in the model's mouth"),
    (dict(question=""), "question", "an empty question must raise ValueError naming question"),
]


def _check_bad_input(run_agent) -> None:
    __tracebackhide__ = True
    for change, word, why in BAD_INPUT:
        kwargs = dict(question="1+1=?", tools=dict(TOOLS), max_steps=4)
        kwargs.update(change)
        model = ref.ScriptedModel(["A: 2"])
        try:
            run_agent(model, kwargs["question"], kwargs["tools"], max_steps=kwargs["max_steps"])
        except NotImplementedError:
            fail("`run_agent` still raises NotImplementedError. Replace the "
                 "`raise NotImplementedError()` line with your implementation.")
        except ValueError as exc:
            if word not in str(exc):
                fail(f"run_agent raised ValueError({str(exc)!r}) for {change}: fine, but the "
                     f"message should name `{word}` and say what is allowed.")
            if model.prompts:
                fail(f"run_agent called the model before refusing {change}: check the arguments "
                     "first.")
            continue
        except Exception as exc:
            fail_from(exc, f"run_agent raised {type(exc).__name__}: {exc} for {change}; {why} "
                      "(a ValueError, raised before the model is called).")
        fail(f"run_agent accepted {change} without raising: {why}.")


def check_run_agent(run_agent, *, seed: int = 0, n_random: int = 20) -> None:
    """The fixed scenarios, n_random seeded random scripts, then bad arguments."""
    __tracebackhide__ = True
    scenarios = SCENARIOS + _random_scenarios(random.Random(seed), n_random)
    for scenario in scenarios:
        tools = scenario.tools if scenario.tools is not None else dict(TOOLS)
        ref_model = ref.ScriptedModel(scenario.lines)
        expected = ref.run_agent(ref_model, scenario.question, tools, scenario.max_steps)
        model = ref.ScriptedModel(scenario.lines)
        got = call_learner(run_agent, model, scenario.question, tools, name="run_agent",
                           max_steps=scenario.max_steps)
        _compare_runs(scenario, got, expected, model.prompts, ref_model.prompts)
    _check_bad_input(run_agent)
    passed(f"run_agent writes the reference's transcript in {len(scenarios)} scripted runs "
           "and refuses bad arguments")
