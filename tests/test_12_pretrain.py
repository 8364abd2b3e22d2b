"""The checks behind exercise 12_pretrain, beyond what tests/test_exercises.py runs for every
exercise: each check accepts the reference and implementations that differ from it only in
harmless ways, names the mistakes that the graded run leaves out for time (tests/mistakes/
pretrain.py EXTRA), and turns bad input into a CheckFailure in words, never a traceback."""
from __future__ import annotations

import inspect
import time

import pytest
import torch

import llmref.pretrain as reference
from autograder.checks import CheckFailure
from autograder.checks import pretrain as checks
from mistakes import pretrain as known

CHECKS = {
    "adamw_steps": lambda ns: checks.check_adamw_steps(ns["AdamW"]),
    "adamw_steps_no_grad": lambda ns: checks.check_adamw_steps(ns["AdamW"], seed=11, steps=8,
                                                               missing_grad=True),
    "adamw_gpt": lambda ns: checks.check_adamw_gpt(ns["AdamW"], steps=30),
    "param_groups": lambda ns: checks.check_param_groups(ns["param_groups"]),
    "param_groups_other": lambda ns: checks.check_param_groups(ns["param_groups"], model="other",
                                                               weight_decay=0.3),
    "lr_at": lambda ns: checks.check_lr_at(ns["lr_at"]),
    "lr_at_no_warmup": lambda ns: checks.check_lr_at(ns["lr_at"], warmup_steps=0, total_steps=30),
    "clip": lambda ns: checks.check_clip_grad_norm(ns["clip_grad_norm"]),
    "get_batch": lambda ns: checks.check_get_batch(ns["get_batch"]),
    "evaluate": lambda ns: checks.check_evaluate(ns["evaluate"]),
    "evaluate_exact_fit": lambda ns: checks.check_evaluate(ns["evaluate"], n_windows=9, batch_size=4,
                                                           exact_fit=True),
    "checkpoint": lambda ns: checks.check_checkpoint(ns["save_checkpoint"], ns["restore_checkpoint"]),
    "resume": lambda ns: checks.check_resume(ns["train"]),
    "resume_errors": lambda ns: checks.check_resume_errors(
        ns["save_checkpoint"], ns["restore_checkpoint"], field="steps", value=13,
        model_change={"n_head": 4}),
}

@pytest.fixture(autouse=True)
def one_thread():
    # The checks run on one thread themselves; the tests' own training does too, so that a
    # busy 2-core machine does not make it crawl.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Which checks test which solution cell.
BY_CELL = {"AdamW": ["adamw_steps_no_grad"], "param_groups": ["param_groups_other"],
           "lr_at": ["lr_at"], "clip_grad_norm": ["clip"], "get_batch": ["get_batch"],
           "evaluate": ["evaluate", "evaluate_exact_fit"],
           "checkpoint": ["checkpoint", "resume_errors"]}


def namespace(*sources: str) -> dict:
    """The reference module's namespace with `sources` run in it, and train re-defined there
    so that it calls the functions of this namespace (as in a learner's notebook)."""
    ns = dict(vars(reference))
    for source in sources:
        exec(compile(source, "<learner>", "exec"), ns)
    exec(compile(inspect.getsource(reference.train), "<train>", "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def reference_namespace():
    return namespace()


@pytest.mark.parametrize("check", CHECKS, ids=str)
def test_reference_passes_each_check_quickly(check, reference_namespace, capsys):
    start = time.perf_counter()
    CHECKS[check](reference_namespace)
    # A fraction of a second on an idle machine (AdamW on the GPT about one); the margin is
    # for a busy 2-core CI runner.
    assert time.perf_counter() - start < 10.0
    assert "\N{CHECK MARK}" in capsys.readouterr().out


# --- implementations that differ from the reference only in harmless ways must pass

TORCH_STYLE_ADAMW = '''
class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "step" not in state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"].item()
                p.mul_(1 - group["lr"] * group["weight_decay"])
                state["exp_avg"].lerp_(p.grad, 1 - beta1)  # torch's way to the same average
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad.conj(), value=1 - beta2)
                step_size = group["lr"] / (1 - beta1 ** t)
                denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-step_size)
'''

LOOPING_PARAM_GROUPS = '''
def param_groups(model, weight_decay):
    decay = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay = [p for i, p in decay.items() if i not in embedded]
    rest = [p for p in model.parameters() if id(p) not in {id(q) for q in decay}]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]
'''

EQUIVALENT = {
    "AdamW as torch writes it (lerp, bias corrections folded into the step size)":
        (TORCH_STYLE_ADAMW, ["adamw_steps", "adamw_steps_no_grad", "adamw_gpt"]),
    "param_groups from sets of ids": (LOOPING_PARAM_GROUPS, ["param_groups", "param_groups_other"]),
    "clip_grad_norm with a sum of squares": (known.CLIP, ["clip"]),
    "get_batch with torch.stack of slices": (known.GET_BATCH, ["get_batch"]),
    "a learner's checkpoint with its own keys": (known.CHECKPOINT, ["checkpoint", "resume", "resume_errors"]),
    "lr_at written with math only": (known.LR_AT, ["lr_at"]),
    "evaluate as a learner writes it": (known.EVALUATE, ["evaluate", "evaluate_exact_fit"]),
}


@pytest.mark.parametrize("case", EQUIVALENT, ids=str)
def test_equivalent_implementations_pass(case, capsys):
    source, names = EQUIVALENT[case]
    ns = namespace(source)
    for name in names:
        CHECKS[name](ns)


# --- the mistakes left out of the graded runs are still named by their check

@pytest.mark.parametrize("mistake", known.EXTRA, ids=lambda m: m.name)
def test_extra_mistakes_are_diagnosed(mistake):
    ns = namespace(mistake.source)
    messages = []
    for name in BY_CELL[mistake.cell]:
        try:
            CHECKS[name](ns)
        except CheckFailure as failure:
            messages.append(str(failure))
    assert messages, f"{mistake.name} passed every check of its cell"
    assert any(mistake.says in m for m in messages), messages


def test_a_lost_piece_of_state_breaks_the_resumed_run():
    wrong = next(m for m in known.ALL if m.name == "checkpoint_without_torch_rng")
    with pytest.raises(CheckFailure) as caught:
        checks.check_resume(namespace(wrong.source)["train"])
    assert "check_checkpoint names which" in str(caught.value)


# --- shortcuts are noticed

def test_delegating_to_torch_is_noticed():
    class Lazy(torch.optim.AdamW):
        pass

    with pytest.raises(CheckFailure, match="uses torch.optim.AdamW.*which does the exercise for you"):
        checks.check_adamw_steps(Lazy)

    def lazy_clip(parameters, max_norm):
        return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))

    with pytest.raises(CheckFailure, match="uses torch.nn.utils.clip_grad_norm_"):
        checks.check_clip_grad_norm(lazy_clip)


# --- bad input: a clear CheckFailure, never a traceback from our code

def _raises(error):
    def learner(*args, **kwargs):
        raise error
    return learner


class _Plain:
    def __init__(self, params, **kwargs):
        self.params = params

    def step(self):
        pass


BAD = {
    "AdamW is not a class": (lambda: checks.check_adamw_steps(lambda *a, **k: None), "to be a class"),
    "AdamW is no Optimizer": (lambda: checks.check_adamw_steps(_Plain), "subclass of torch.optim.Optimizer"),
    "AdamW stub": (lambda: checks.check_adamw_steps(namespace(
        "class AdamW(torch.optim.Optimizer):\n    def __init__(self, params, **kw):\n"
        "        super().__init__(params, kw)\n    def step(self, closure=None):\n"
        "        raise NotImplementedError()\n")["AdamW"]), "still raises NotImplementedError"),
    "param_groups returns None": (lambda: checks.check_param_groups(lambda m, wd: None), "returned None"),
    "param_groups returns a dict": (lambda: checks.check_param_groups(
        lambda m, wd: {"params": list(m.parameters())}), "list of two dicts"),
    "param_groups forgets parameters": (lambda: checks.check_param_groups(
        lambda m, wd: [{"params": [], "weight_decay": wd}]), "in no group"),
    "param_groups copies": (lambda: checks.check_param_groups(
        lambda m, wd: [{"params": [p.clone() for p in m.parameters()], "weight_decay": 0.0}]),
        "not a parameter of the model"),
    "lr_at returns a tensor": (lambda: checks.check_lr_at(
        lambda step, **k: torch.tensor(reference.lr_at(step, **k))), "should return a Python float"),
    "lr_at raises": (lambda: checks.check_lr_at(_raises(KeyError("x"))), "raised KeyError"),
    "clip returns a string": (lambda: checks.check_clip_grad_norm(
        lambda ps, m: str(reference.clip_grad_norm(ps, m))), "should return a Python float"),
    "clip drops gradients": (lambda: checks.check_clip_grad_norm(
        lambda ps, m: [setattr(p, "grad", None) for p in ps] and 1.0), "set a gradient to None"),
    "get_batch returns one tensor": (lambda: checks.check_get_batch(
        lambda t, b, s, g: reference.get_batch(t, b, s, g)[0]), "should return a tuple (x, y)"),
    "get_batch returns floats": (lambda: checks.check_get_batch(
        lambda t, b, s, g: tuple(z.float() for z in reference.get_batch(t, b, s, g))), "has dtype"),
    "get_batch transposed": (lambda: checks.check_get_batch(
        lambda t, b, s, g: tuple(z.T for z in reference.get_batch(t, b, s, g))), "has shape"),
    "evaluate returns a tensor": (lambda: checks.check_evaluate(
        lambda m, t, s, b: torch.tensor(reference.evaluate(m, t, s, b))), "should return a Python float"),
    "evaluate never runs the model": (lambda: checks.check_evaluate(lambda m, t, s, b: 1.0),
                                      "never ran the model"),
    "restore returns None": (lambda: checks.check_checkpoint(
        reference.save_checkpoint, lambda *a: (reference.restore_checkpoint(*a), None)[1]), "returned None"),
    "save writes nothing": (lambda: checks.check_checkpoint(lambda *a: None, reference.restore_checkpoint),
                            "did not create the file"),
    "train stub": (lambda: checks.check_resume(namespace(
        "def get_batch(*args):\n    raise NotImplementedError()\n")["train"]), "finish the cells above"),
    "restore stub in the error check": (lambda: checks.check_resume_errors(
        reference.save_checkpoint, _raises(NotImplementedError())), "still raises NotImplementedError"),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_input_gives_a_clear_failure(case):
    run, phrase = BAD[case]
    with pytest.raises(CheckFailure) as caught:
        run()
    assert phrase in str(caught.value)


def test_checks_leave_threads_and_random_state_alone(reference_namespace, capsys):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for name in ("adamw_steps", "get_batch", "evaluate", "checkpoint", "resume"):
        CHECKS[name](reference_namespace)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_failure_display_hides_our_frames_and_keeps_the_learners():
    def get_batch(tokens, batch_size, block_size, generator):
        starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
        return tokens[starts], tokens[starts + block_size + 100]  # the bug

    with pytest.raises(CheckFailure) as caught:
        checks.check_get_batch(get_batch)
    shown = "\n".join(caught.value._render_traceback_())
    assert "block_size + 100" in shown and "run past the end" in shown
    assert "autograder" not in shown
