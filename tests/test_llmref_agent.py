"""The agent loop (llmref.agent, generated from exercise 19_agent) and its format, tools and
questions (llmref.agent_data): the loop reproduces the training episodes line for line, the
parser agrees with an independent one, the data are deterministic, split cleanly and fit the
course GPT, and bad input is refused in words."""
from __future__ import annotations

import random
import string

import pytest

from llmref import agent, agent_data
from llmref.corpus import load as load_corpus


@pytest.fixture(scope="module")
def tokenizer():
    return load_corpus().tokenizer


# ------------------------------------------------------------------ parse_call

def _parse_by_hand(line: str):
    """An independent parser, one character at a time, without regular expressions."""
    if not line.startswith("CALL ") or not line.endswith(")"):
        return None
    body = line[len("CALL "):-1]
    name, sep, inside = body.partition("(")
    if not sep or not name:
        return None
    first_ok = name[0] in string.ascii_letters + "_"
    if not first_ok or any(c not in string.ascii_letters + string.digits + "_" for c in name):
        return None
    if any(c in "()" or c.isspace() for c in inside):
        return None
    if inside == "":
        return name, ()
    args = tuple(inside.split(","))
    return None if "" in args else (name, args)


def test_parse_call_agrees_with_a_parser_written_another_way():
    rng = random.Random(0)
    alphabet = "CALL mul(),1 2\t\n.-_xA:" + string.ascii_letters[:5] + string.digits[:4]
    name_chars, arg_chars = "mulmulmul_9-. A", "1212xx.-,,( )\t"

    def draw(chars, most):
        return "".join(rng.choice(chars) for _ in range(rng.randint(0, most)))
    # Near-calls: a name, parentheses, arguments, each drawn from characters that break them.
    lines = [rng.choice(["CALL ", "CALL ", "CALL  ", "call ", ""]) + draw(name_chars, 4) + "("
             + draw(arg_chars, 6) + rng.choice([")", ")", ")", "", "))"]) + rng.choice(["", "", " ", "\n"])
             for _ in range(4000)]
    lines += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(2000)]
    lines += [agent_data.call_line(n, a) for n, a in [("mul", ("1", "2")), ("now", ()), ("s", ("a.b",))]]
    accepted = 0
    for line in lines:
        assert agent.parse_call(line) == _parse_by_hand(line), line
        accepted += agent.parse_call(line) is not None
    assert accepted > 50  # the random lines do include well-formed calls


def test_parse_call_reads_back_every_call_the_format_writes():
    for question in agent_data.make_questions(200, 3, "train"):
        for name, args in question.calls:
            assert agent.parse_call(agent_data.call_line(name, args)) == (name, args)


# ------------------------------------------------------------------ the loop and the format

def test_the_loop_reproduces_every_training_episode_line_for_line():
    # A model that writes exactly the model lines of an episode makes the loop write the
    # episode itself: the training data and the loop agree on every character.
    for split in ("train", "held_out"):
        for question in agent_data.make_questions(120, 5, split):
            episode = agent_data.tool_episode(question)
            lines = episode.split("\n")[:-1]
            mine = [line for line, is_model in zip(lines, agent_data.model_lines(episode)) if is_model]
            model = agent.ScriptedModel(mine)
            run = agent.run_agent(model, question.text, agent_data.TOOLS)
            assert run.transcript == episode
            assert (run.status, run.answer, run.steps) == ("answer", question.answer, len(mine))


def test_dispatch_writes_each_kind_of_line():
    tools = agent_data.TOOLS
    assert agent.dispatch("mul", ("4821", "93"), tools) == "RESULT 448353"
    assert agent.dispatch("sig", ("math.gcd",), tools) == "RESULT (*integers)"
    assert agent.dispatch("pow", ("2", "3"), tools) == "ERROR unknown tool pow; the tools are add, length, mul, sig"
    assert agent.dispatch("mul", ("1",), tools).startswith("ERROR mul raised TypeError: ")
    assert agent.dispatch("add", ("1", "1e3"), tools).startswith("ERROR add raised ValueError: ")
    assert agent.dispatch("sig", ("os.system",), tools).startswith("ERROR sig raised LookupError: ")
    assert agent.dispatch("t", (), {"t": lambda: "a\nb"}) == "RESULT a b"


@pytest.mark.parametrize("kwargs, word", [
    (dict(max_steps=0), "max_steps"), (dict(max_steps=1.5), "max_steps"),
    (dict(tools={}), "tools"), (dict(question=""), "question"), (dict(question="a\nb"), "question"),
])
def test_run_agent_refuses_bad_arguments_before_calling_the_model(kwargs, word):
    args = dict(question="1+1=?", tools=agent_data.TOOLS, max_steps=4) | kwargs
    model = agent.ScriptedModel(["A: 2"])
    with pytest.raises(ValueError, match=word):
        agent.run_agent(model, **args)
    assert model.prompts == []


def test_run_agent_stops_where_it_should():
    never = agent.ScriptedModel(["CALL add(1,1)"])
    run = agent.run_agent(never, "1+1=?", agent_data.TOOLS, max_steps=3)
    assert (run.status, run.answer, run.steps, len(never.prompts)) == ("step_limit", None, 3, 3)
    assert run.transcript.count("RESULT 2\n") == 3
    forged = agent.ScriptedModel(["CALL mul(6,7)\nRESULT 41\nA: 41", "A: 42"])
    run = agent.run_agent(forged, "6*7=?", agent_data.TOOLS)
    assert run.answer == "42" and "RESULT 41" not in run.transcript
    bad = agent.ScriptedModel(["CALL mul(6, 7)", "A: 42"])
    run = agent.run_agent(bad, "6*7=?", agent_data.TOOLS)
    assert (run.status, run.steps) == ("malformed", 1)
    assert run.transcript.endswith(agent.MALFORMED + "\n") and len(bad.prompts) == 1


def test_scripted_model_needs_a_line():
    with pytest.raises(ValueError, match="at least one line"):
        agent.ScriptedModel([])


# ------------------------------------------------------------------ the tools

@pytest.mark.parametrize("dotted", ["os.system", "builtins.eval", "subprocess.run", "math._private",
                                    "math.pi", "math", "os.path.__loader__", "math.nonexistent"])
def test_sig_reads_only_public_functions_of_the_allow_listed_modules(dotted):
    with pytest.raises(LookupError):
        agent_data.sig(dotted)


def test_arithmetic_tools_refuse_what_is_not_a_plain_integer():
    assert agent_data.mul("-12", "3") == "-36" and agent_data.add("7", "-7") == "0"
    for bad in ["1e3", "1_000", " 1", "", "-", "٣", "1" * 101]:
        with pytest.raises(ValueError, match="integer"):
            agent_data.mul(bad, "2")


# ------------------------------------------------------------------ the questions

def test_questions_are_deterministic_and_the_splits_disjoint():
    a = agent_data.make_questions(300, 11, "train")
    assert a == agent_data.make_questions(300, 11, "train")
    assert a != agent_data.make_questions(300, 12, "train")
    held = agent_data.make_questions(1000, 11, "held_out")
    train = agent_data.make_questions(3000, 12, "train")
    assert not {q.text for q in held} & {q.text for q in train}
    functions = {q.calls[0][1][0] for q in held if q.kind == "sig"}
    assert functions and not functions & {q.calls[0][1][0] for q in train if q.kind == "sig"}
    assert {q.kind for q in held} == set(agent_data.KINDS)


def test_the_answers_are_right():
    for q in agent_data.make_questions(400, 2, "held_out"):
        if q.kind == "sig":
            import inspect
            assert q.answer == str(inspect.signature(agent_data.resolve(q.calls[0][1][0])))
        elif q.kind == "length":
            assert int(q.answer) == len(q.text[len("length of "):-1])
        else:  # "a*b=?", "a+b=?" or "a*b+c=?", read by hand
            terms = [t.split("*") for t in q.text[:-2].split("+")]
            assert int(q.answer) == sum(int(t[0]) * (int(t[1]) if len(t) == 2 else 1) for t in terms)


def test_every_episode_fits_the_course_gpt(tokenizer):
    vocab = set(tokenizer.chars)
    for split in ("train", "held_out"):
        for q in agent_data.make_questions(2000, 4, split):
            for episode in (agent_data.tool_episode(q), agent_data.direct_episode(q)):
                assert len(episode) <= agent_data.CONTEXT + 1, episode
                assert set(episode) <= vocab, set(episode) - vocab


def test_the_loss_mask_covers_exactly_the_models_lines(tokenizer):
    q = agent_data.make_questions(1, 0, "train", kinds=("muladd",))[0]
    episode = agent_data.tool_episode(q)
    inputs, targets, mask = agent_data.encode_episode(episode, tokenizer)
    assert len(inputs) == len(targets) == len(mask) == len(episode) - 1
    assert tokenizer.decode(inputs) == episode[:-1] and tokenizer.decode(targets) == episode[1:]
    learned = tokenizer.decode(targets[mask])
    lines = [line + "\n" for line in episode.split("\n")[:-1]
             if line.startswith((agent_data.CALL, agent_data.ANSWER))]
    assert learned == "".join(lines)
    direct = agent_data.direct_episode(q)
    _, targets, mask = agent_data.encode_episode(direct, tokenizer)
    assert tokenizer.decode(targets[mask]) == f"A: {q.answer}\n"


@pytest.mark.parametrize("call, phrase", [
    (lambda: agent_data.make_questions(3, 0, "test"), "split"),
    (lambda: agent_data.make_questions(-1, 0), "n must be"),
    (lambda: agent_data.make_questions(3, 0, kinds=("div",)), "kinds"),
    (lambda: agent_data.make_questions(3, 0, kinds=()), "kinds"),
    (lambda: agent_data.encode_episode("Q: 1+1=?", load_corpus().tokenizer), "newline"),
    (lambda: agent_data.encode_episode("Q: " + "1" * 200 + "\n", load_corpus().tokenizer), "context"),
])
def test_bad_input_to_the_data_is_refused_in_words(call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()


def test_gpt_next_line_stops_at_a_newline_and_at_max_chars(tokenizer):
    import torch

    from llmref.gpt import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2,
                          n_embd=16)).eval()
    line = agent_data.gpt_next_line(model, tokenizer, "Q: 1+1=?\u2603\n" * 3, max_chars=7)
    assert "\n" not in line and len(line) <= 7
    # A model that always writes a newline ends its line at once: the final norm outputs all
    # ones whatever its input, and only the newline's (tied) output row is non-zero.
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.transformer.wte.weight.zero_()
        model.transformer.wte.weight[int(tokenizer.encode("\n")[0])] = 1.0
    assert model.lm_head.weight is model.transformer.wte.weight
    assert agent_data.gpt_next_line(model, tokenizer, "Q: x\n") == ""
