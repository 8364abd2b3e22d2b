# GENERATED from solutions/19_agent/19_agent.ipynb by `course library`: do not edit.
# Change the solution notebook and regenerate; tests fail while this file is stale.
"""The loop of a tool-using agent: parse a model's tool call strictly, dispatch it to a registry of tools, feed the result back and stop on an answer, a malformed line or a step limit: the reference for exercise 19_agent. The format, the tools and the questions are in llmref.agent_data."""
import re
from dataclasses import dataclass
from typing import Callable

from llmref.agent_data import ANSWER, ERROR, QUESTION, RESULT


MALFORMED = ERROR + "malformed call: expected CALL name(arg,...) or A: answer"
STATUSES = ("answer", "malformed", "step_limit")


@dataclass
class AgentRun:
    """What one run of the loop did."""
    answer: str | None   # the text after "A: ", or None if the run did not end with an answer
    status: str          # one of STATUSES: why the run stopped
    transcript: str      # every line of the run, the question first, each ending in "\n"
    steps: int           # how many times the model was called


class ScriptedModel:
    """A fake model: call i returns lines[i], and the last line again once they run out.

    It records every transcript it was shown in `prompts`, so a test can see what the
    model saw at each step.
    """

    def __init__(self, lines: list[str]):
        if not lines:
            raise ValueError("a ScriptedModel needs at least one line to say")
        self.lines = list(lines)
        self.prompts: list[str] = []

    def __call__(self, transcript: str) -> str:
        self.prompts.append(transcript)
        return self.lines[min(len(self.prompts), len(self.lines)) - 1]


def parse_call(line: str) -> tuple[str, tuple[str, ...]] | None:
    """(name, args) of a well-formed call `CALL name(arg,arg,...)`, args a tuple of
    strings (empty for `CALL name()`); None for any other line."""
    match = re.fullmatch(r"CALL ([A-Za-z_][A-Za-z0-9_]*)\(([^()\s]*)\)", line)
    if match is None:
        return None
    name, inside = match.groups()
    args = tuple(inside.split(",")) if inside else ()   # "".split(",") would be ("",)
    if "" in args:                                      # two commas in a row, or one at an end
        return None
    return name, args


def dispatch(name: str, args: tuple[str, ...], tools: dict[str, Callable]) -> str:
    """The line the loop writes after the call name(*args): RESULT and the value, or an
    ERROR for an unknown tool or an exception. Never raises for an unknown name or a
    failing tool."""
    if name not in tools:  # an allow-list: nothing outside the registry is ever called
        return f"{ERROR}unknown tool {name}; the tools are {', '.join(sorted(tools))}"
    try:
        value = tools[name](*args)
    except Exception as exc:  # the tool's failure is text for the model, not a crash
        return f"{ERROR}{name} raised {type(exc).__name__}: {exc}"
    return RESULT + str(value).replace("\n", " ")


def run_agent(model: Callable[[str], str], question: str, tools: dict[str, Callable],
              max_steps: int = 4) -> AgentRun:
    """Ask `model` the question, run the tools it calls, and stop on an answer, a malformed
    line or after max_steps model calls. Raises ValueError for max_steps < 1, an empty
    registry, or a question that is empty or not one line."""
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if not tools:
        raise ValueError("tools is empty: give the agent at least one tool "
                         "(a dict from names to functions)")
    if not question or "\n" in question:
        raise ValueError(f"question must be one non-empty line, got {question!r}")
    transcript = QUESTION + question + "\n"
    for step in range(1, max_steps + 1):
        line = model(transcript).split("\n", 1)[0]   # the model writes one line, never RESULTs
        transcript += line + "\n"
        if line.startswith(ANSWER):
            return AgentRun(line[len(ANSWER):], "answer", transcript, step)
        call = parse_call(line)
        if call is None:
            return AgentRun(None, "malformed", transcript + MALFORMED + "\n", step)
        transcript += dispatch(*call, tools) + "\n"
    return AgentRun(None, "step_limit", transcript, max_steps)
