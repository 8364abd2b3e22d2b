"""Wrong versions of the pieces of exercise 19_agent: parse_call, dispatch and run_agent.

Each mistake is a right implementation, written the way a learner would, with one change;
`edited` fails loudly if the text it changes is not in that implementation exactly once.
"""
from . import Mistake, edited

EXERCISE = "19_agent"

PARSE = '''def parse_call(line):
    match = re.fullmatch(r"CALL ([A-Za-z_][A-Za-z0-9_]*)\\((.*)\\)", line)
    if not match:
        return None
    name, inside = match.group(1), match.group(2)
    if inside == "":
        return name, ()
    args = inside.split(",")
    for arg in args:
        if arg == "" or any(c.isspace() or c in "()" for c in arg):
            return None
    return name, tuple(args)
'''

DISPATCH = '''def dispatch(name, args, tools):
    if name not in tools:
        names = ", ".join(sorted(tools))
        return f"ERROR unknown tool {name}; the tools are {names}"
    tool = tools[name]
    try:
        value = tool(*args)
    except Exception as exc:
        return f"ERROR {name} raised {type(exc).__name__}: {exc}"
    return "RESULT " + str(value).replace("\\n", " ")
'''

LOOP = '''def run_agent(model, question, tools, max_steps=4):
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if len(tools) == 0:
        raise ValueError("tools must not be empty")
    if question == "" or "\\n" in question:
        raise ValueError(f"question must be one line, got {question!r}")
    transcript = QUESTION + question + "\\n"
    steps = 0
    while steps < max_steps:
        text = model(transcript)
        steps += 1
        line = text.split("\\n")[0]
        transcript += line + "\\n"
        if line.startswith(ANSWER):
            return AgentRun(line[len(ANSWER):], "answer", transcript, steps)
        call = parse_call(line)
        if call is None:
            transcript += MALFORMED + "\\n"
            return AgentRun(None, "malformed", transcript, steps)
        name, args = call
        transcript += dispatch(name, args, tools) + "\\n"
    return AgentRun(None, "step_limit", transcript, steps)
'''


MISTAKES = [
    # ---- parse_call
    # "".split(",") is [""]: a call without arguments gets one empty argument.
    Mistake("no_args_gives_empty_string", "parse_call", edited(
        PARSE, ('    if inside == "":\n        return name, ()\n', ""),
        ('if arg == "" or any(', "if any("),
    ), says="an empty tuple"),
    # Forgetting that two commas in a row leave an empty argument.
    Mistake("empty_argument_accepted", "parse_call", edited(
        PARSE, ('if arg == "" or any(', "if any("),
    ), says="empty argument"),
    # re.match with `$`: a prefix match, and `$` also matches before a final newline.
    Mistake("match_with_dollar", "parse_call", edited(
        PARSE, ('re.fullmatch(r"CALL ([A-Za-z_][A-Za-z0-9_]*)\\((.*)\\)", line)',
                're.match(r"CALL ([A-Za-z_][A-Za-z0-9_]*)\\((.*)\\)$", line)'),
    ), says="newline"),
    # Being helpful: spaces around arguments stripped away instead of refused.
    Mistake("strips_whitespace", "parse_call", edited(
        PARSE, ("    args = inside.split(\",\")\n", "    args = [a.strip() for a in inside.split(\",\")]\n"),
    ), says="whitespace"),
    # re.match without an end anchor: anything after the call is ignored.
    Mistake("prefix_match", "parse_call", edited(
        PARSE, ('re.fullmatch(r"CALL ([A-Za-z_][A-Za-z0-9_]*)\\((.*)\\)", line)',
                're.match(r"CALL ([A-Za-z_][A-Za-z0-9_]*)\\(([^)]*)\\)", line)'),
    ), says="fill the whole line"),

    # ---- dispatch
    # Only the exception the arithmetic tools usually raise is caught.
    Mistake("catches_only_value_error", "dispatch", edited(
        DISPATCH, ("except Exception as exc:", "except ValueError as exc:"),
    ), says="catch Exception"),
    # The registry lookup inside the try: an unknown name comes out as a KeyError.
    Mistake("unknown_tool_as_key_error", "dispatch", edited(
        DISPATCH, ('    if name not in tools:\n        names = ", ".join(sorted(tools))\n'
                   '        return f"ERROR unknown tool {name}; the tools are {names}"\n'
                   '    tool = tools[name]\n    try:\n', '    try:\n        tool = tools[name]\n'),
    ), says="unknown tool"),
    # A "helpful" fallback to Python's builtins: the allow-list is gone.
    Mistake("falls_back_to_builtins", "dispatch", "import builtins\n\n" + edited(
        DISPATCH, ("    if name not in tools:\n", "    if name not in tools and not hasattr(builtins, name):\n"),
        ("    tool = tools[name]\n", "    tool = tools[name] if name in tools else getattr(builtins, name)\n"),
    ), says="allow-list"),
    # A multi-line result written as it is.
    Mistake("result_not_one_line", "dispatch", edited(
        DISPATCH, ('str(value).replace("\\n", " ")', "str(value)"),
    ), says="one line"),

    # ---- run_agent
    # The model's whole text goes into the transcript, forged RESULT lines and all.
    Mistake("keeps_all_model_text", "run_agent", edited(
        LOOP, ('line = text.split("\\n")[0]', 'line = text.rstrip("\\n")'),
    ), says="first line"),
    # A malformed call is recorded, but the loop goes on.
    Mistake("continues_after_malformed", "run_agent", edited(
        LOOP, ('            transcript += MALFORMED + "\\n"\n'
               '            return AgentRun(None, "malformed", transcript, steps)\n',
               '            transcript += MALFORMED + "\\n"\n            continue\n'),
    ), says="malformed"),
    # One step too many: <= instead of <.
    Mistake("one_step_too_many", "run_agent", edited(
        LOOP, ("while steps < max_steps:", "while steps <= max_steps:"),
    ), says="max_steps"),
    # The answer keeps its prefix.
    Mistake("answer_with_prefix", "run_agent", edited(
        LOOP, ('AgentRun(line[len(ANSWER):], "answer"', 'AgentRun(line, "answer"'),
    ), says="text after `A: `"),
    # No argument checks: max_steps=0 silently gives a step_limit run.
    Mistake("no_argument_checks", "run_agent", edited(
        LOOP, ('    if max_steps < 1:\n        raise ValueError(f"max_steps must be at least 1, got {max_steps}")\n', ""),
    ), says="must raise ValueError"),
]
