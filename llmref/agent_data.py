"""The tool-call format of exercise 19_agent, its tools and its generated questions.

An *episode* is a few short lines of text that the course GPT (characters, context 128) can
learn to continue. The question comes first; every later line is either the model's (a
tool call or the answer) or the loop's (the tool's result, or an error):

    Q: 4821*93=?                  the question (the prompt)
    CALL mul(4821,93)             the model: a tool call
    RESULT 448353                 the loop: the tool's result, fed back
    A: 448353                     the model: the answer; the loop stops

Five kinds of question, each a few dozen characters:

    mul     Q: 4821*93=?               one call:  mul(4821,93)
    add     Q: 73410+9921=?            one call:  add(73410,9921)
    muladd  Q: 512*37+6034=?           two calls: mul(512,37), then add(18944,6034)
    sig     Q: signature of math.gcd?  one call:  sig(math.gcd) -> RESULT (*integers)
    length  Q: length of abracadabra?  one call:  length(abracadabra) -> RESULT 11

The tools are the registry TOOLS (name -> callable). Each takes its arguments as the strings
written in the call and returns a string; a bad argument raises, which the loop (exercise
19_agent, llmref.agent) turns into an ERROR line. `sig` looks names up only in the modules
of SIG_MODULES, never by importing what the model wrote: the registry and this list are
allow-lists.

The *direct* format asks the same questions without tools, the baseline the chapter
compares with: `Q: 4821*93=? (no tools)` then `A: 448353`.

Questions are drawn with random.Random(seed). The held-out split is by question: an
arithmetic question whose text has CRC-32 % HELD_OUT_EVERY == 0, a signature question whose function name
has it and a length question whose text has it are held out, so the model is measured on
questions (and, for `sig` and `length`, functions and words) it has never been trained on,
in any format. The words of `length` are half words of the corpus, half random letters:
the model has to copy what it is given, not recall a name it has learnt.

`encode_episode` turns an episode into token ids and the loss mask of supervised fine-tuning
(True on the characters of the model's own lines), and `gpt_next_line` is the model side of
the loop for a GPT: greedy characters up to the end of the line.
"""
from __future__ import annotations

import importlib
import inspect
import random
import re
import string
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

# ------------------------------------------------------------------ the format
QUESTION, CALL, RESULT, ANSWER, ERROR = "Q: ", "CALL ", "RESULT ", "A: ", "ERROR "
NO_TOOLS = " (no tools)"          # the direct format's question ends with this
CONTEXT = 128                     # the course GPT's context: a whole episode must fit
HELD_OUT_EVERY = 4                # CRC-32 % 4 == 0: a quarter of the questions are held out
KINDS = ("mul", "add", "muladd", "sig", "length")

# ------------------------------------------------------------------ the tools
# Modules `sig` may look in; the model's text never chooses what gets imported.
SIG_MODULES = ("base64", "binascii", "bisect", "calendar", "colorsys", "copy", "csv",
               "fnmatch", "glob", "heapq", "html", "math", "operator", "os.path", "random",
               "re", "secrets", "shlex", "shutil", "statistics", "textwrap", "urllib.parse",
               "uuid", "zlib")
MAX_SIGNATURE = 30   # characters of a signature the generated questions use
MAX_NAME = 22        # characters of a dotted function name they use


def _integer(text: str) -> int:
    """A decimal integer written by the model: digits with an optional minus sign."""
    body = text[1:] if text.startswith("-") else text
    if not (body.isascii() and body.isdigit()) or len(body) > 100:
        raise ValueError(f"not an integer of at most 100 digits: {text!r}")
    return int(text)


def add(a: str, b: str) -> str:
    """a + b, both decimal integers."""
    return str(_integer(a) + _integer(b))


def mul(a: str, b: str) -> str:
    """a * b, both decimal integers."""
    return str(_integer(a) * _integer(b))


def _sig_modules() -> dict[str, object]:
    return {name: importlib.import_module(name) for name in SIG_MODULES}


def resolve(dotted: str) -> Callable:
    """The public function `module.name` of one of SIG_MODULES, or LookupError."""
    module_name, _, name = dotted.rpartition(".")
    if module_name not in SIG_MODULES:
        raise LookupError(f"module {module_name or dotted!r} is not one sig may read")
    if not name.isidentifier() or name.startswith("_"):
        raise LookupError(f"{name!r} is not a public name")
    obj = getattr(importlib.import_module(module_name), name, None)
    if obj is None or not callable(obj):
        raise LookupError(f"{dotted} is not a function")
    return obj


def sig(dotted: str) -> str:
    """The signature of a standard-library function, as inspect.signature writes it."""
    return str(inspect.signature(resolve(dotted)))


def length(text: str) -> str:
    """How many characters `text` has: a control, a question the course GPT, which reads
    characters one by one, may well answer without a tool."""
    return str(len(text))


TOOLS: dict[str, Callable[..., str]] = {"add": add, "length": length, "mul": mul, "sig": sig}


# ------------------------------------------------------------------ questions and episodes
@dataclass(frozen=True)
class Question:
    kind: str                       # one of KINDS
    text: str                       # the question, without "Q: "
    calls: tuple[tuple[str, tuple[str, ...]], ...]   # the right calls, in order
    answer: str                     # the right answer


def held_out(key: str) -> bool:
    """Whether a question (its text, or for `sig` the function's name) is held out."""
    return zlib.crc32(key.encode()) % HELD_OUT_EVERY == 0


def _sig_episode(dotted: str, signature: str) -> str:
    return (f"{QUESTION}signature of {dotted}?\n{CALL}sig({dotted})\n{RESULT}{signature}\n"
            f"{ANSWER}{signature}\n")


def _signature_functions() -> list[str]:
    """Dotted names of the functions `sig` questions ask about: short, printable signatures
    made of characters the course GPT knows, sorted."""
    from llmref.corpus import load  # the vocabulary of the course GPT
    vocab = set(load().tokenizer.chars)
    found = []
    for module_name, module in _sig_modules().items():
        for name in sorted(dir(module)):
            dotted = f"{module_name}.{name}"
            try:
                text = sig(dotted)
            except (LookupError, ValueError, TypeError):
                continue  # private, not a function, or no signature (some C functions)
            if (inspect.isclass(resolve(dotted)) or len(text) > MAX_SIGNATURE
                    or len(dotted) > MAX_NAME or "0x" in text or not set(text + dotted) <= vocab
                    or len(_sig_episode(dotted, text)) > CONTEXT + 1):
                continue
            found.append(dotted)
    return sorted(found)


_FUNCTIONS: list[str] | None = None


def signature_functions() -> list[str]:
    global _FUNCTIONS
    if _FUNCTIONS is None:
        _FUNCTIONS = _signature_functions()
    return list(_FUNCTIONS)


_WORDS: list[str] | None = None


def _words() -> list[str]:
    """Lower-case words of 8 to 16 letters in the course corpus, sorted."""
    global _WORDS
    if _WORDS is None:
        from llmref.corpus import text
        _WORDS = sorted(set(re.findall(r"\b[a-z]{8,16}\b", text())))
    return list(_WORDS)


def _number(rng: random.Random, digits: tuple[int, int]) -> int:
    n = rng.randint(*digits)
    return rng.randint(10 ** (n - 1), 10 ** n - 1)


def _draw(rng: random.Random, kind: str, functions: list[str]) -> Question:
    if kind == "mul":
        a, b = _number(rng, (3, 4)), _number(rng, (2, 3))
        return Question(kind, f"{a}*{b}=?", (("mul", (str(a), str(b))),), str(a * b))
    if kind == "add":
        a, b = _number(rng, (4, 6)), _number(rng, (3, 6))
        return Question(kind, f"{a}+{b}=?", (("add", (str(a), str(b))),), str(a + b))
    if kind == "muladd":
        a, b, c = _number(rng, (2, 3)), _number(rng, (2, 2)), _number(rng, (3, 4))
        return Question(kind, f"{a}*{b}+{c}=?",
                        (("mul", (str(a), str(b))), ("add", (str(a * b), str(c)))), str(a * b + c))
    if kind == "length":
        if rng.random() < 0.5:   # a word of the corpus, or letters the model has never seen together
            text = rng.choice(_words())
        else:
            text = rng.choice(string.ascii_lowercase) + "".join(
                rng.choice(string.ascii_lowercase + "_.") for _ in range(rng.randint(4, 15)))
        return Question(kind, f"length of {text}?", (("length", (text,)),), str(len(text)))
    if kind == "sig":
        dotted = rng.choice(functions)
        question = Question(kind, f"signature of {dotted}?", (("sig", (dotted,)),), sig(dotted))
        assert tool_episode(question) == _sig_episode(dotted, question.answer)
        return question
    raise ValueError(f"unknown kind {kind!r}; the kinds are {KINDS}")


def make_questions(n: int, seed: int, split: str = "train",
                   kinds: tuple[str, ...] = KINDS) -> list[Question]:
    """n distinct questions of the split ("train" or "held_out"), each of a kind drawn
    uniformly from `kinds`, with random.Random(seed)."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty selection of {KINDS}, got {kinds!r}")
    rng = random.Random(seed)
    functions = [f for f in signature_functions() if held_out(f) == (split == "held_out")]
    if "sig" in kinds and not functions:
        raise ValueError(f"no standard-library function is in the {split} split on this Python")
    questions, seen = [], set()
    while len(questions) < n:
        kind = rng.choice(kinds)   # first the kind, so that each is as frequent in either split
        while True:
            question = _draw(rng, kind, functions)
            key = question.calls[0][1][0] if kind in ("sig", "length") else question.text
            # Arithmetic questions are distinct; functions and words may repeat (they are few).
            if held_out(key) == (split == "held_out") and (kind in ("sig", "length") or key not in seen):
                break
        seen.add(question.text)
        questions.append(question)
    return questions


def call_line(name: str, args: tuple[str, ...]) -> str:
    """The model's line that calls tool `name` with `args`: CALL name(a,b)."""
    return f"{CALL}{name}({','.join(args)})"


def tool_episode(question: Question) -> str:
    """The whole right episode with tools, every line ending in a newline."""
    lines = [QUESTION + question.text]
    for name, args in question.calls:
        lines += [call_line(name, args), RESULT + TOOLS[name](*args)]
    lines.append(ANSWER + question.answer)
    return "\n".join(lines) + "\n"


def direct_episode(question: Question) -> str:
    """The same question answered without tools: the question, then the answer."""
    return f"{QUESTION}{question.text}{NO_TOOLS}\n{ANSWER}{question.answer}\n"


def model_lines(episode: str) -> list[bool]:
    """For each line of an episode, whether the model writes it (a call or the answer)."""
    return [line.startswith((CALL, ANSWER)) for line in episode.split("\n")[:-1]]


# ------------------------------------------------------------------ the GPT's side
def encode_episode(episode: str, tokenizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, loss_mask), each (len(episode) - 1,), for supervised fine-tuning:
    targets[t] is the character after inputs[t], and loss_mask[t] is True where that
    character belongs to one of the model's own lines (CALL and A: lines, their newline
    included), never to the question, a RESULT or an ERROR line."""
    if not episode.endswith("\n"):
        raise ValueError("an episode ends with a newline; got one ending in "
                         f"{episode[-10:]!r}")
    if len(episode) > CONTEXT + 1:
        raise ValueError(f"an episode of {len(episode)} characters does not fit the context of "
                         f"{CONTEXT} (+1 for the shift): shorten it")
    ids = tokenizer.encode(episode)
    mine = np.zeros(len(episode), dtype=bool)
    start = 0
    for line, is_model in zip(episode.split("\n")[:-1], model_lines(episode)):
        end = start + len(line) + 1      # the newline belongs to its line
        mine[start:end] = is_model
        start = end
    return ids[:-1], ids[1:], mine[1:]


def gpt_next_line(model, tokenizer, transcript: str, max_chars: int = 40) -> str:
    """The model side of the agent loop for a GPT: greedy characters after `transcript`
    until a newline (not returned) or max_chars characters. The prompt is cropped to the
    model's context; a character outside the vocabulary in it becomes '?'."""
    import torch

    known = set(tokenizer.chars)
    prompt = "".join(c if c in known else "?" for c in transcript)
    idx = torch.from_numpy(tokenizer.encode(prompt))[None, :]
    block = model.config.block_size
    out = []
    with torch.no_grad():
        for _ in range(max_chars):
            logits, _ = model(idx[:, -block:])
            next_id = int(logits[0, -1].argmax())
            char = tokenizer.chars[next_id]
            if char == "\n":
                break
            out.append(char)
            idx = torch.cat([idx, torch.tensor([[next_id]])], dim=1)
    return "".join(out)


# ------------------------------------------------------------------ the fine-tuned model
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
AGENT_CHECKPOINT = RESULTS / "agent_gpt.pt"   # written by benchmarks/agent.py


def load_agent_model(path: Path = AGENT_CHECKPOINT):
    """(model, tokenizer): the course GPT as benchmarks/agent.py fine-tuned it, in eval mode."""
    import torch

    from llmref import course_model, pretrain
    from llmref.gpt import GPT, GPTConfig

    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: it is committed with the course; rebuild it "
                                "with `.venv/bin/python benchmarks/agent.py`")
    saved = torch.load(path, weights_only=True)
    base = course_model.load()
    if saved["tokenizer_chars"] != "".join(base.tokenizer.chars):
        raise ValueError(f"{path} was fine-tuned with another vocabulary than the course GPT's: "
                         "rebuild it with `.venv/bin/python benchmarks/agent.py`")
    model = GPT(GPTConfig(**saved["model_config"]))
    pretrain.load_state(model, saved["model"])
    model.eval()
    return model, base.tokenizer
