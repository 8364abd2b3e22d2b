"""The judge (coursetools/judge.py): what crosses between the grader and a learner's kernel,
and a check run in the grader on handles.

Here the kernel's side (judge_kernel.py, loaded from the same source text the grader sends
into a kernel) serves a plain namespace in this process, so these tests need no kernel. The
hostile corpus (test_hostile_corpus.py) grades the same path through nbgrader in the sandbox.
"""
from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest
import torch

from coursetools import judge, judge_codec
from exercise_tools import read, solution_path


def _server(namespace: dict):
    codec = types.ModuleType("course_judge_codec")
    exec(compile(judge.SOURCES["judge_codec"], judge.HELPER_FILE, "exec"), codec.__dict__)
    server: dict = {}
    exec(compile(judge.SOURCES["judge_kernel"], judge.HELPER_FILE, "exec"), server)
    return server["serve"](codec, namespace)


class Local(judge.Connection):
    """A connection to a namespace of this process, through the kernel side's own code."""

    def __init__(self, namespace: dict):
        super().__init__()
        self.rpc = _server(namespace)
        self.rpc.channel[0] = self.callback_text  # the kernel's requests about lent objects
        self.requests = 0

    def ask_text(self, text: str) -> str:
        self.requests += 1
        return repr(self.rpc(text))


def _round_trip(value):
    return judge_codec.decode(json.loads(json.dumps(judge_codec.encode(value, _no_handle))), _no_unhandle)


def _no_handle(obj):
    raise judge_codec.Unencodable(type(obj).__name__)


def _no_unhandle(number, info):
    raise AssertionError("no handle expected")


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int8", "uint16", "bool", "complex128", "<U7"])
def test_numpy_arrays_cross_with_their_dtype_shape_and_values(dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    back = _round_trip(array)
    assert type(back) is np.ndarray and back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)
    assert back.flags.writeable  # a copy the check may change, not a view of the message


def test_values_of_every_kind_cross_unchanged():
    value = {"a": [1, 2.5, None, True], (1, "k"): (np.float32(1.5), np.int64(-3)), 3: {1, 2},
             "nan": math.nan, "inf": -math.inf, "big": 2**80, "s": slice(1, None, 2), "e": ...,
             "b": b"\x00\xff", "c": 1 + 2j, "size": torch.Size([2, 3]), "dt": torch.bfloat16}
    back = _round_trip(value)
    assert math.isnan(back.pop("nan")) and math.isnan(value.pop("nan"))
    assert back == value
    assert type(back[(1, "k")][0]) is np.float32 and type(back["size"]) is torch.Size


def test_tensors_keep_dtype_grad_flag_and_parameter_kind():
    t = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    back = _round_trip(t)
    assert back.dtype == torch.float64 and back.requires_grad and torch.equal(back, t.detach())
    p = torch.nn.Parameter(torch.randn(2, 2))
    assert isinstance(_round_trip(p), torch.nn.Parameter)
    half = _round_trip(torch.randn(5, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16
    assert _round_trip(torch.arange(4)).dtype == torch.int64


def test_what_is_not_a_plain_value_becomes_a_handle_and_object_arrays_are_refused():
    handles = []
    encoded = judge_codec.encode([print, object()], lambda obj: handles.append(obj) or len(handles))
    assert encoded == {"$l": [{"$r": 1}, {"$r": 2}]} and handles[0] is print
    with pytest.raises(judge_codec.Unencodable, match="dtype object"):
        judge_codec.encode(np.array([1, "x"], dtype=object), _no_handle)


@pytest.mark.parametrize("data, problem", [
    ({"$a": "AAAA", "dt": "|O", "sh": [1]}, "dtype object"),
    ({"$a": "AAAA", "dt": "<f8", "sh": [2]}, "bytes do not match"),
    ({"$a": "", "dt": "|V8", "sh": [0]}, "refused an array"),
    ({"$T": {"$a": "", "dt": "<f4", "sh": [0]}, "dt": "Tensor"}, "refused a tensor"),
    ([1, 2], "bare list"),
    ({"$pickle": "gASV"}, "cannot decode"),
])
def test_the_grader_refuses_data_it_cannot_trust(data, problem):
    with pytest.raises(ValueError, match=problem):
        judge_codec.decode(data, _no_unhandle)


def test_nesting_deeper_than_the_limit_is_refused_both_ways():
    deep: list = []
    for _ in range(judge_codec.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(judge_codec.Unencodable, match="nested too deeply"):
        judge_codec.encode(deep, _no_handle)
    data: dict = {"$l": []}
    for _ in range(judge_codec.MAX_DEPTH + 2):
        data = {"$l": [data]}
    with pytest.raises(ValueError, match="nested too deeply"):
        judge_codec.decode(data, _no_unhandle)


def test_handles_call_index_iterate_and_read_attributes_in_the_kernel():
    class Thing:
        scale = 3

        def __call__(self, x, *, add=0):
            return x * self.scale + add

    namespace = {"thing": Thing(), "table": {"a": np.ones(2)}, "seq": [1, 2, 3]}
    connection = Local(namespace)
    thing = connection.ask({"op": "global", "name": "thing"})
    assert isinstance(thing, judge.Remote)
    assert np.array_equal(thing(np.arange(3), add=1), np.arange(3) * 3 + 1)
    assert thing.scale == 3
    thing.scale = 5  # the kernel's object changes, not a copy
    assert namespace["thing"].scale == 5
    table = connection.ask({"op": "global", "name": "table"})
    assert isinstance(table, dict) and np.array_equal(table["a"], np.ones(2))
    seq = connection.ask({"op": "global", "name": "seq"})
    assert seq == [1, 2, 3]


def test_an_exception_of_the_learner_is_raised_here_as_its_built_in_class():
    class OutOfRange(IndexError):
        pass

    def lookup(i):
        raise OutOfRange(f"id {i} is outside the table")

    connection = Local({"lookup": lookup})
    remote = connection.ask({"op": "global", "name": "lookup"})
    with pytest.raises(IndexError, match="id 7 is outside") as raised:
        remote(7)
    assert isinstance(raised.value, judge.LearnerError)
    assert "OutOfRange" in raised.value.remote_traceback
    with pytest.raises(judge.LearnerError, match="not defined"):
        connection.ask({"op": "global", "name": "missing"})


def test_an_exception_that_needs_more_than_a_message_comes_back_as_its_nearest_base():
    def decode(data):
        return data.decode("ascii")
    remote = Local({"decode": decode}).ask({"op": "global", "name": "decode"})
    with pytest.raises(ValueError, match="can't decode byte") as raised:
        remote(b"\xff")
    assert type(raised.value).__name__ in ("UnicodeError", "ValueError")


def test_an_answer_that_is_not_json_means_the_kernel_is_gone():
    class Broken(judge.Connection):
        def ask_text(self, text):
            return "<function forged at 0x1>"
    with pytest.raises(judge.KernelGone, match="broke the grader.s connection: .*not JSON"):
        Broken().ask({"op": "global", "name": "x"})


def test_the_cell_names_that_become_handles():
    source = "checks.check_unmasked(attention)\nresult = helper(seed=1)\nprint(result, len(table))"
    assert sorted(judge.global_names(source)) == ["attention", "checks", "helper", "table"]


def _learner_namespace(name: str, replace: dict[str, str] | None = None) -> dict:
    """The namespace a kernel holds after the non-test cells of `name`'s solution ran."""
    namespace: dict = {}
    for cell in read(solution_path(name)).cells:
        if cell.cell_type == "code" and not judge.is_test_cell(cell):
            source = cell.source
            for old, new in (replace or {}).items():
                source = source.replace(old, new)
            exec(compile(source, "<learner cell>", "exec"), namespace)
    return namespace


def _test_cells(name: str) -> list[str]:
    return [c.source for c in read(solution_path(name)).cells if judge.is_test_cell(c)]


def test_a_test_cell_run_here_passes_the_solution_and_prints_its_lines():
    from autograder.checks import attention
    connection = Local(_learner_namespace("02_attention"))
    for source in _test_cells("02_attention"):
        outputs, ok = judge.run_cell(source, attention, connection)
        assert ok, outputs
        assert outputs[0]["output_type"] == "stream" and "✓" in outputs[0]["text"]
    assert connection.requests > 10


def test_a_test_cell_run_here_fails_a_wrong_answer_with_the_checks_own_message():
    from autograder.checks import attention
    namespace = _learner_namespace("02_attention", {"np.sqrt(d_k)": "d_k"})
    outputs, ok = judge.run_cell(_test_cells("02_attention")[1], attention, Local(namespace))
    assert not ok
    error = outputs[-1]
    assert error["output_type"] == "error" and error["ename"] == "CheckFailure"
    assert "sqrt" in error["evalue"]


def test_a_library_shortcut_is_watched_where_the_learner_code_runs():
    from autograder.checks import attention
    namespace = _learner_namespace("02_attention")

    def shortcut(Q, K, V, mask=None):
        import torch.nn.functional as F
        q, k, v = (torch.from_numpy(np.ascontiguousarray(a)) for a in (Q, K, V))
        out = F.scaled_dot_product_attention(q, k, v)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return out.numpy(), weights.numpy()

    namespace["scaled_dot_product_attention"] = shortcut
    outputs, ok = judge.run_cell(_test_cells("02_attention")[0], attention, Local(namespace))
    assert not ok and "by hand" in outputs[-1]["evalue"], outputs


def test_a_name_the_notebook_never_defined_fails_the_cell_as_in_a_kernel():
    from autograder.checks import attention
    outputs, ok = judge.run_cell(_test_cells("02_attention")[0], attention, Local({}))
    assert not ok and outputs[-1]["ename"] == "NameError"


def test_a_call_that_changes_its_input_changes_the_graders_copy_as_it_would_in_place():
    def scale_in_place(x, items, table):
        x *= 2
        items.append(4)
        table["t"] += 1
    connection = Local({"f": scale_in_place})
    f = connection.ask({"op": "global", "name": "f"})
    x, items, table = np.arange(3.0), [1, 2, 3], {"t": torch.zeros(2)}
    f(x, items, table)
    assert np.array_equal(x, [0.0, 2.0, 4.0]) and items == [1, 2, 3, 4]
    assert torch.equal(table["t"], torch.ones(2))


def test_a_read_only_input_stays_read_only_in_the_kernel():
    def change(x):
        x[0] = 1
    connection = Local({"change": change})
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        connection.ask({"op": "global", "name": "change"})(frozen)


def test_a_random_generator_crosses_with_its_state_and_comes_back_advanced():
    def draw(rng, gen):
        return rng.integers(0, 100, size=3), torch.randint(0, 100, (3,), generator=gen)
    connection = Local({"draw": draw})
    rng, gen = np.random.default_rng(5), torch.Generator().manual_seed(5)
    got = connection.ask({"op": "global", "name": "draw"})(rng, gen)
    rng_here, gen_here = np.random.default_rng(5), torch.Generator().manual_seed(5)
    assert np.array_equal(got[0], rng_here.integers(0, 100, size=3))
    assert torch.equal(got[1], torch.randint(0, 100, (3,), generator=gen_here))
    # The grader's generators moved on exactly as far as the learner's draws took them.
    assert rng.integers(1 << 30) == rng_here.integers(1 << 30)
    assert torch.equal(torch.rand(2, generator=gen), torch.rand(2, generator=gen_here))


def test_a_failure_shows_the_learners_frames_and_the_message_but_none_of_the_graders():
    from autograder.checks import attention
    namespace = _learner_namespace("02_attention", {"np.swapaxes(K, -1, -2)": "K.T"})
    outputs, ok = judge.run_cell(_test_cells("02_attention")[0], attention, Local(namespace))
    shown = "\n".join(outputs[-1]["traceback"])
    assert not ok and "Your code raised an error" in shown and "K.T" in shown, shown
    assert "CheckFailure: " in shown
    for ours in ("coursetools", "autograder", "judge"):
        assert ours not in shown, (ours, shown)


class _Scale(torch.nn.Module):
    """A learner's module: y = x * w, with a parameter w."""

    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(1.0, n + 1))

    def forward(self, x):
        return x * self.w


def test_a_learners_class_is_a_class_and_a_module_to_the_checks():
    from autograder.checks._core import expect_class
    remote = Local({"Scale": _Scale}).ask({"op": "global", "name": "Scale"})
    assert isinstance(remote, type) and issubclass(remote, torch.nn.Module)
    assert expect_class(remote, "Scale", base=torch.nn.Module) is remote
    built = remote(3)
    assert isinstance(built, torch.nn.Module) and not isinstance(built, type)
    function = Local({"f": len}).ask({"op": "global", "name": "f"})
    with pytest.raises(Exception, match="to be a class"):
        expect_class(function, "f")


def test_a_kernel_can_name_only_library_classes_loaded_here():
    mro = [["__main__", "Scale"], ["os", "system"], ["llmref.attention", "Anything"],
           ["subprocess", "Popen"], ["torch.nn.modules.module", "Module"], ["builtins", "object"],
           ["builtins", "eval"], "junk", ["torch", 3]]
    assert judge._library_classes(mro) == [torch.nn.Module, object]


def test_backward_through_a_learners_module_fills_its_gradients_and_the_inputs():
    connection = Local({"Scale": _Scale})
    module = connection.ask({"op": "global", "name": "Scale"})(3)
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = module(x)
    assert out.grad_fn is not None and torch.equal(out.detach(), torch.tensor([1.0, 4.0, 9.0]))
    (out * torch.tensor([1.0, 10.0, 100.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 20.0, 300.0]))        # d/dx = w * g
    grads = {name: p.grad for name, p in module.named_parameters()}
    assert torch.equal(grads["w"], torch.tensor([1.0, 20.0, 300.0]))    # d/dw = x * g
    with torch.no_grad():
        assert module(x).grad_fn is None  # grad mode follows the check into the kernel


def test_a_learners_optimizer_updates_the_graders_tensors_and_arrays_in_place():
    class SGD:
        def __init__(self, params, lr):
            self.params, self.lr = list(params), lr

        def step(self, grads=None):
            for i, p in enumerate(self.params):
                if isinstance(p, np.ndarray):
                    p -= self.lr * grads[i]
                else:
                    with torch.no_grad():
                        p -= self.lr * p.grad

    connection = Local({"SGD": SGD})
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([1.0, 2.0])
    array = np.ones(3)
    optimizer = connection.ask({"op": "global", "name": "SGD"})([weight, array], lr=0.5)
    optimizer.step([None, np.array([2.0, 2.0, 2.0])])
    assert torch.equal(weight.detach(), torch.tensor([0.5, 0.0]))
    assert np.array_equal(array, [0.0, 0.0, 0.0])
    weight.grad = torch.tensor([1.0, 1.0])  # changed here: the kernel sees it at the next step
    optimizer.step([None, np.zeros(3)])
    assert torch.equal(weight.detach(), torch.tensor([0.0, -0.5]))


def test_a_config_crosses_as_the_notebooks_own_class_and_a_path_as_a_path():
    import dataclasses
    import pathlib

    @dataclasses.dataclass
    class Config:  # the grader's (llmref's) config
        n_embd: int
        names: tuple

    def notebook_config_class():
        @dataclasses.dataclass
        class Config:  # the notebook's class of the same name
            n_embd: int
            names: tuple
        return Config

    mine = notebook_config_class()

    def describe(config, folder):
        return type(config) is mine, config.n_embd, config.names, isinstance(folder, pathlib.Path), str(folder)

    connection = Local({"Config": mine, "describe": describe})
    got = connection.ask({"op": "global", "name": "describe"})(Config(8, ("a", "b")), pathlib.Path("/x/y"))
    assert got == (True, 8, ("a", "b"), True, "/x/y")
    # Without a class of that name in the notebook, the fields still arrive.
    bare = Local({"describe": lambda c, f: (c.n_embd, type(c).__name__)})
    assert bare.ask({"op": "global", "name": "describe"})(Config(3, ()), pathlib.Path(".")) == (3, "SimpleNamespace")


def test_the_grader_builds_no_object_a_kernel_names():
    for data in ({"$dc": "Config", "f": []}, {"$path": "/etc/passwd"}):
        with pytest.raises(ValueError, match="refused a dataclass or a path"):
            judge_codec.decode(data, judge._Incoming(Local({})))


# ------------------------------------------------------------------ the grader's objects, lent

def _learner(source: str) -> Local:
    namespace: dict = {}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    return Local(namespace)


def test_a_function_lent_to_the_learners_code_runs_here_and_its_errors_arrive_as_built_ins():
    connection = _learner(
        "def use(fn, x):\n"
        "    try:\n"
        "        return fn(x)\n"
        "    except KeyError as error:\n"
        "        return ('KeyError', error.args, str(error))\n")
    use = connection.ask({"op": "global", "name": "use"})
    ran_here = []

    def double(x):
        ran_here.append(x)
        return x * 2

    assert use(double, 21) == 42 and ran_here == [21]
    assert use({"a": 1}.__getitem__, "b") == ("KeyError", ("b",), "'b'")


def test_a_lent_module_trains_in_the_kernel_with_its_forward_and_weights_here():
    connection = _learner(
        "import torch\n"
        "from torch import nn\n"
        "def train(model, x, y, steps):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    for _ in range(steps):\n"
        "        loss = ((model(x) - y) ** 2).mean()\n"
        "        optimizer.zero_grad()\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "    model.eval()\n"
        "    return isinstance(model, nn.Linear), model.in_features, float(loss)\n")
    torch.manual_seed(0)
    model, x, y = torch.nn.Linear(3, 2), torch.randn(8, 3), torch.randn(8, 2)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    forwards = []
    model.register_forward_pre_hook(lambda module, inputs: forwards.append(inputs[0].shape))
    is_linear, width, loss = connection.ask({"op": "global", "name": "train"})(model, x, y, 5)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(5):
        expected = ((twin(x) - y) ** 2).mean()
        optimizer.zero_grad()
        expected.backward()
        optimizer.step()
    assert is_linear and width == 3  # the learner's code sees an nn.Linear
    assert len(forwards) == 5  # the forward passes ran here, with the grader's hooks
    assert torch.allclose(model.weight, twin.weight) and torch.allclose(model.bias, twin.bias)
    assert not torch.equal(model.weight, twin.weight.detach() * 0)
    assert loss == pytest.approx(float(expected)) and model.training is False


def test_links_nothing_holds_are_dropped_on_both_sides_so_a_long_loop_stays_cheap():
    # A learner's loop calling a lent model: each call links its input and output. Kept
    # for the whole cell, every later message would fingerprint all of them (16_kv_cache's
    # generation took minutes); dropped once nothing holds them, the tables stay small.
    connection = _learner(
        "import torch\n"
        "def loop(model, steps):\n"
        "    x = torch.zeros(1, 3)\n"
        "    with torch.no_grad():\n"
        "        for _ in range(steps):\n"
        "            x = model(x)\n"
        "    return x\n")
    model = torch.nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
        model.bias.fill_(1.0)
    result = connection.ask({"op": "global", "name": "loop"})(model, 300)
    assert torch.equal(result, torch.full((1, 3), 300.0))
    # The model's weight and bias stay linked (the model holds them); of the 600 inputs and
    # outputs, only the few that the last messages still name.
    assert len(connection._links) < 10, len(connection._links)
    assert connection.ask({"op": "global", "name": "loop"})(model, 2).tolist() == [[2.0, 2.0, 2.0]]


def test_what_the_grader_wrote_into_a_link_it_then_dropped_still_reaches_the_kernel():
    # The grader's copy of the kernel's `x` is held by nothing once `fill` returns: dropped
    # with the reply, but only after the reply carried what `fill` wrote into it.
    connection = _learner(
        "import torch\n"
        "def run(fill):\n"
        "    x = torch.zeros(3)\n"
        "    fill(x)\n"
        "    return x.tolist()\n")
    def fill(t):
        t.fill_(7.0)
    assert connection.ask({"op": "global", "name": "run"})(fill) == [7.0, 7.0, 7.0]


def test_the_learners_code_reaches_nothing_of_a_lent_object_but_its_public_face():
    secret = {"answer": 42}

    def tool(x):
        return x + secret["answer"] * 0

    connection = _learner(
        "def probe(fn):\n"
        "    found = []\n"
        "    for name in ('__globals__', '__closure__', '__code__', '_secret'):\n"
        "        try:\n"
        "            getattr(fn, name)\n"
        "            found.append(name)\n"
        "        except AttributeError:\n"
        "            pass\n"
        "    try:\n"
        "        fn.__dict__['x'] = 1\n"
        "        found.append('__dict__')\n"
        "    except (AttributeError, TypeError):\n"
        "        pass\n"
        "    try:\n"
        "        fn.patched = True\n"
        "        found.append('setattr')\n"
        "    except AttributeError:\n"
        "        pass\n"
        "    return found, fn(1)\n")
    assert connection.ask({"op": "global", "name": "probe"})(tool) == ([], 1)
    with pytest.raises(judge_codec.Unencodable, match="module"):
        connection.encode(types.ModuleType("autograder.checks.attention"))


def test_an_object_lent_for_one_test_cell_is_gone_in_the_next():
    namespace: dict = {}
    exec("kept = []\ndef keep(fn):\n    kept.append(fn)\ndef call_kept():\n    return kept[0]()\n", namespace)
    first = Local(namespace)
    first.ask({"op": "global", "name": "keep"})(lambda: "the first cell's")
    second = Local(namespace)
    second.rpc = first.rpc
    second.rpc.channel[0] = second.callback_text
    with pytest.raises(LookupError, match="lent for an earlier test cell"):
        second.ask({"op": "global", "name": "call_kept"})()


def test_checks_set_inside_swap_globals_and_watch_optimizer_steps_where_the_learner_runs():
    from autograder.checks import _core
    checks = types.ModuleType("checks")

    def check(make_optimizer, outer):
        p = torch.zeros(2, requires_grad=True)
        optimizer = make_optimizer([p])
        rates = []
        # (In this one process the kernel's step also runs the hook registered here: only
        # the call that came through the judge, with a handle on the optimizer, counts.)
        def seen(opt, args, kwargs):
            if isinstance(opt, judge.Remote):
                rates.append([group["lr"] for group in opt.param_groups])

        hook = _core.on_optimizer_step(seen)
        _core.set_inside(optimizer, ("param_groups", 0, "lr"), 0.5)
        p.grad = torch.ones(2)
        optimizer.step()
        hook.remove()
        optimizer.step()
        assert rates == [[0.5]], rates
        assert torch.equal(p.detach(), torch.full((2,), -1.0)), p
        with _core.global_replaced(outer, "helper", lambda x: x + 100):
            assert outer(1) == 1010
        assert outer(1) == 20

    checks.check = check
    connection = _learner(
        "import torch\n"
        "def make_optimizer(params):\n"
        "    return torch.optim.SGD(params, lr=0.1)\n"
        "def helper(x):\n"
        "    return x + 1\n"
        "def outer(x):\n"
        "    return helper(x) * 10\n")
    outputs, ok = judge.run_cell("checks.check(make_optimizer, outer)", checks, connection)
    assert ok, outputs
    # Without the hooks the same check fails: the rate set in a copy, the step unseen.
    plain = _learner("import torch\ndef make_optimizer(params):\n    return torch.optim.SGD(params, lr=0.1)\n"
                     "def helper(x):\n    return x + 1\ndef outer(x):\n    return helper(x) * 10\n")
    rates: list = []
    optimizer = plain.ask({"op": "global", "name": "make_optimizer"})([torch.zeros(2, requires_grad=True)])
    optimizer.param_groups[0]["lr"] = 0.5  # a copy's item: the kernel's rate stays 0.1
    assert optimizer.param_groups[0]["lr"] == 0.1 and rates == []


def test_a_kernel_asking_about_lent_objects_gets_errors_for_anything_but_their_public_face():
    connection = Local({})
    number = connection.lend(lambda x: x)
    hostile = [
        {"op": "getattr", "target": number, "name": "__globals__"},
        {"op": "getattr", "target": number, "name": "_private"},
        {"op": "getattr", "target": number, "name": 3},
        {"op": "call", "target": number + 1000, "args": {"$t": [1]}, "kwargs": {"$d": []}},
        {"op": "call", "target": number, "args": {"$l": [1]}, "kwargs": {"$d": [[1, 2]]}},
        {"op": "setattr", "target": number, "name": "x", "value": 1},
        {"op": "backward", "node": 12345, "grad": None},
        {"op": "train", "target": number, "mode": True},
    ]
    for request in hostile:
        reply = json.loads(connection.callback_text(json.dumps({"cb": request, "sync": []})))
        assert "cberr" in reply and "cbok" not in reply, (request, reply)
    ok = json.loads(connection.callback_text(json.dumps(
        {"cb": {"op": "call", "target": number, "args": {"$t": [7]}, "kwargs": {"$d": []}}, "sync": []})))
    assert ok["cbok"] == 7  # the same channel still answers a fair request


def test_torchs_generator_is_one_stream_across_the_grader_and_the_kernel():
    class Canned(judge.Connection):
        def __init__(self, answer: dict):
            super().__init__()
            self.answer, self.sent = answer, []

        def ask_text(self, text: str) -> str:
            self.sent.append(json.loads(text))
            return json.dumps(self.answer)

    torch.manual_seed(7)
    kernels = torch.get_rng_state()
    torch.manual_seed(1)
    connection = Canned({"ok": None, "rng": judge_codec.array_data(kernels.numpy())})
    connection.ask({"op": "sync"})
    assert "rng" not in connection.sent[0]  # the first request takes the learner's state
    assert torch.equal(torch.get_rng_state(), kernels)
    connection.answer = {"ok": None}
    torch.manual_seed(3)  # a check seeds: the kernel's draws follow
    connection.ask({"op": "sync"})
    sent = judge_codec.array_from(connection.sent[1]["rng"])
    torch.manual_seed(3)
    assert np.array_equal(sent, torch.get_rng_state().numpy())
    connection.ask({"op": "sync"})
    assert "rng" not in connection.sent[2]  # unchanged since: nothing to carry
    with pytest.raises(judge.KernelGone, match="random state"):
        Canned({"ok": None, "rng": judge_codec.array_data(np.zeros(3, np.uint8))}).ask({"op": "sync"})


def test_a_module_of_a_class_the_kernel_may_build_is_built_there_as_itself():
    connection = _learner(
        "import torch\n"
        "def scale(model):\n"
        "    with torch.no_grad():\n"
        "        model.weight.mul_(2)\n"
        "    return type(model) is torch.nn.Linear, model(torch.ones(1, 2)).shape\n")
    connection.built_here = ("torch.nn",)
    model = torch.nn.Linear(2, 3)
    before = model.weight.detach().clone()
    forwards = []
    model.register_forward_pre_hook(lambda module, inputs: forwards.append(1))
    assert connection.ask({"op": "global", "name": "scale"})(model) == (True, torch.Size([1, 3]))
    assert forwards == []  # its forward ran in the kernel
    assert torch.equal(model.weight.detach(), 2 * before)  # its weights are the grader's


def test_a_check_adopts_a_model_into_the_kernel_and_grafts_the_learners_methods_onto_one():
    from autograder.checks import _core
    checks = types.ModuleType("checks")

    def check(add_layer, Learner):
        model = _core.in_learners_process(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        add_layer(model)
        assert len(list(model.parameters())) == 4, "the learner's layer is in the adopted model"

        class Recorder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.calls = []

            def forward(self, x):
                self.calls.append(tuple(x.shape))
                return x + 1

        recorder = Recorder()
        grafted = _core.with_methods_of(recorder, Learner, exclude=("forward",), require=("twice",))
        assert torch.equal(grafted.twice(torch.zeros(3)), torch.full((3,), 2.0))
        assert recorder.calls == [(3,)], "the learner's method called the grader's forward"
        try:
            _core.with_methods_of(Recorder(), Learner, require=("thrice",))
        except AttributeError as error:
            assert "thrice" in str(error)
        else:
            raise AssertionError("a missing method must be refused")

    checks.check = check
    source = ("import torch\n"
              "def add_layer(model):\n"
              "    model.append(torch.nn.Linear(2, 2))\n"
              "class Learner(torch.nn.Module):\n"
              "    def forward(self, x):\n"
              "        return x * 100\n"
              "    def twice(self, x):\n"
              "        return 2 * self(x)\n")
    connection = _learner(source)
    connection.built_here = ("torch.nn",)
    outputs, ok = judge.run_cell("checks.check(add_layer, Learner)", checks, connection)
    assert ok, outputs


def test_a_strided_tensor_arrives_strided_so_that_view_fails_there_as_here():
    targets = torch.arange(12).reshape(3, 4)[:, 1:]  # not contiguous
    connection = _learner(
        "def flatten(t):\n"
        "    try:\n"
        "        t.view(-1)\n"
        "        return 'viewed'\n"
        "    except RuntimeError:\n"
        "        return t.reshape(-1)\n")
    got = connection.ask({"op": "global", "name": "flatten"})(targets)
    assert torch.equal(got, targets.reshape(-1))
    assert connection.ask({"op": "global", "name": "flatten"})(targets.contiguous()) == "viewed"


class Counting(Local):
    """A Local connection that keeps the size of every answer."""

    def __init__(self, namespace: dict):
        super().__init__(namespace)
        self.sizes: list[int] = []

    def ask_text(self, text: str) -> str:
        answer = super().ask_text(text)
        self.sizes.append(len(answer))
        return answer


def test_a_linked_tensor_comes_back_by_its_number_not_its_values():
    big = torch.randn(256, 256)  # 256 KiB of values
    connection = Counting({"same": lambda t: t, "scaled": lambda t: t.mul_(2)})
    assert connection.ask({"op": "global", "name": "same"})(big) is big
    assert connection.sizes[-1] < 10_000, "the values came back although the kernel had them"
    before = big.clone()
    assert connection.ask({"op": "global", "name": "scaled"})(big) is big
    assert torch.equal(big, 2 * before)  # a change still crosses, with the sync
    assert connection.sizes[-1] > big.numel() * 4


def test_a_modules_layout_is_read_without_its_values():
    from autograder.checks import _core
    checks = types.ModuleType("checks")

    def check(Wide):
        shapes = _core.saved_shapes(Wide(), "Wide()")
        assert shapes == {"layer.weight": (512, 512), "layer.bias": (512,)}, shapes

    checks.check = check
    namespace: dict = {}
    exec("import torch\nclass Wide(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
         "        self.layer = torch.nn.Linear(512, 512)\n", namespace)
    connection = Counting(namespace)
    outputs, ok = judge.run_cell("checks.check(Wide)", checks, connection)
    assert ok, outputs
    assert max(connection.sizes) < 100_000  # a megabyte of weights stayed in the kernel


def test_a_linked_parameter_turned_double_there_is_double_here():
    namespace: dict = {}
    exec("import torch\nlayer = torch.nn.Linear(3, 2)\n", namespace)
    kernel = Local({**namespace, "widen": lambda m: m.double(), "weight": lambda m: m.weight})
    layer = kernel.ask({"op": "global", "name": "layer"})
    weight = kernel.ask({"op": "global", "name": "weight"})(layer)  # crosses once, float32
    assert weight.dtype == torch.float32
    kernel.ask({"op": "global", "name": "widen"})(layer)
    again = kernel.ask({"op": "global", "name": "weight"})(layer)  # by its number now
    assert again is weight and weight.dtype == torch.float64
