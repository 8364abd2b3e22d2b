"""The grader's own reading of the learner's cells (coursetools/shortcut_scan.py): the
evidence of a forbidden shortcut that a learner who switched off the kernel's watch cannot
hide, and no false alarm on any solution."""
import os

import pytest

from coursetools.shortcut_scan import Scan, given_cells, places_of
from exercise_tools import read, release_path, solution_path
from mistakes import for_exercise
from test_exercises import with_cells

NAMES = sorted(os.listdir(os.path.join(os.path.dirname(__file__), "..", "solutions")))
GIVEN = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\nimport sys\n"
LINEAR = places_of([{"object": [["torch.nn.modules.linear", "Linear"], ["torch.nn", "Linear"]],
                     "name": "nn.Linear"}])
SDPA = places_of([{"object": [["torch.nn.functional", "scaled_dot_product_attention"]],
                   "name": "F.scaled_dot_product_attention"}])


def cell(source, **nbgrader):
    return {"cell_type": "code", "source": source, "metadata": {"nbgrader": nbgrader} if nbgrader else {}}


def scan(*learner_sources, given=GIVEN):
    cells = [cell(given, locked=True)] + [cell(s, solution=True) for s in learner_sources]
    return Scan(cells, given_cells([cell(given, locked=True)]))


@pytest.mark.parametrize("source", [
    "Linear = nn.Linear\n",
    "from torch.nn import Linear\n",
    "from torch.nn import Linear as L\n",
    "class Linear(nn.Linear):\n    pass\n",
    "class Linear(nn.Module):\n    def __init__(self, i, o):\n        super().__init__()\n        self.inner = torch.nn.Linear(i, o)\n",
    "def make(i, o):\n    return getattr(nn, 'Linear')(i, o)\n",
    "import torch.nn as tnn\nLayer = tnn.Linear\n",
    "%time x = 1\nLinear = nn.Linear\n",
])
def test_a_forbidden_class_bound_used_or_looked_up_by_name_is_seen(source):
    found = scan(source).shortcuts(LINEAR)
    assert found and found[0].startswith("nn.Linear (cell 1, line"), found


def test_a_forbidden_function_called_inside_the_learners_function_is_seen_with_its_line():
    found = scan("def attention(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v)\n").shortcuts(SDPA)
    assert found == ["F.scaled_dot_product_attention (cell 1, line 2: "
                     "`return F.scaled_dot_product_attention(q, k, v)`)"]


@pytest.mark.parametrize("source", [
    # An experiment at the top level, comparing with the library: not a shortcut.
    "reference = nn.Linear(3, 2)\nprint(reference(torch.ones(3)))\n",
    # The learner's own class of the same name, built from parts.
    "class Linear(nn.Module):\n    def forward(self, x):\n        return x @ self.weight.T + self.bias\n",
    # A name that only looks alike.
    "def linear_warmup(step):\n    return min(1.0, step / 10)\n",
])
def test_what_is_not_a_shortcut_is_not_reported(source):
    assert scan(source).shortcuts({**LINEAR, **SDPA}) == []
    assert scan(source).tampering() == []


def test_a_package_is_refused_wherever_it_is_reached_in_the_learners_code():
    rank_bm25 = places_of([{"package": "rank_bm25", "name": "rank_bm25"}])
    for source in ["from rank_bm25 import BM25Okapi\n",
                   "def index(docs):\n    import rank_bm25\n    return rank_bm25.BM25Okapi(docs)\n",
                   "import importlib\ndef index(docs):\n    return importlib.import_module('rank_bm25')\n"]:
        assert scan(source).shortcuts(rank_bm25), source
    assert scan("import rank_bm25  # to compare, at the top level\n").shortcuts(rank_bm25) == []


@pytest.mark.parametrize("source, shown", [
    ("sys.setprofile(None)\n", "sys.setprofile"),
    ("import sys as s\ndef off():\n    s.settrace(None)\n", "sys.settrace"),
    ("from torch.overrides import TorchFunctionMode\n", "torch.overrides"),
    ("torch._C._set_torch_function_mode(None)\n", "torch._C._set_torch_function_mode"),
    ("import gc\nfor o in gc.get_objects():\n    pass\n", "gc.get_objects"),
    ("import autograder.checks._core as core\ncore.Watch = object\n", "autograder"),
    ("from autograder.checks import _core\n", "autograder"),
    ("__course_rpc__ = None\n", "the grader's helper"),
    ("import importlib\nimportlib.import_module('autograder.checks._core')\n", "autograder"),
    ("import ctypes\n", "ctypes"),
])
def test_what_could_switch_off_the_kernels_watch_is_seen_anywhere_in_the_learners_cells(source, shown):
    found = scan(source).tampering()
    assert found and shown in found[0].split(" in cell ")[0] and " in cell 1, line " in found[0], found


@pytest.mark.parametrize("source", [
    "from autograder.checks import attention as checks\nchecks.check_softmax(softmax)\n",
    "import autograder.checks\n",
    "def f(x):\n    \"\"\"Passes the autograder.\"\"\"\n    return x\n",
])
def test_using_the_checks_as_given_or_naming_the_autograder_is_not_tampering(source):
    assert scan(source).tampering() == []


def test_the_given_cells_and_the_checks_they_import_are_not_the_learners():
    given = GIVEN + "from autograder.checks import attention as checks\nFOLDER = checks.DATA\n"
    # A given cell that is not locked (nbgrader leaves it alone) still counts as given
    # while it is as the assignment gives it.
    cells = [cell(given), cell("sys.setprofile(None)\n"),
             cell("checks.check_softmax(lambda x: x)\nprint(FOLDER)\n", solution=True)]
    found = Scan(cells, given_cells([cell(given), cell("sys.setprofile(None)\n")])).tampering()
    assert found == []
    changed = Scan([cell(given), cell("checks._core = None\n", solution=True)], given_cells([cell(given)]))
    assert changed.tampering()


@pytest.mark.parametrize("name", NAMES)
def test_no_solution_nor_release_trips_the_scan(name):
    solution = read(solution_path(name))
    given = given_cells(solution.cells)
    for nb in (solution, read(release_path(name))):
        found = Scan(nb.cells, given)
        assert found.tampering() == []
        # The solution's own references inside its functions: none is a forbidden package.
        assert not [r for r in found.references if r.defined and r.dotted.split(".")[0]
                    in ("scipy", "rank_bm25", "peft", "tokenizers", "transformers")]


# What each known shortcut mistake's cell makes the scan see: every one of them but
# `gradient_by_autograd` (09), whose `.backward()` is a method of a tensor the scan cannot
# know the type of; the kernel's watch is its only evidence.
SEEN = {
    "softmax_from_scipy": "scipy.special.softmax",
    "torch_scaled_dot_product_attention": "torch.nn.functional.scaled_dot_product_attention",
    "softmax_backward_by_autograd": "torch.softmax",
    "adam_step_by_torch": "torch.optim.Adam",
    "adamw_step_by_torch": "torch.optim.AdamW",
    "linear_is_torchs": "torch.nn.Linear",
    "layernorm_subclasses_torchs": "torch.nn.LayerNorm",
    "uses_scaled_dot_product_attention": "torch.nn.functional.scaled_dot_product_attention",
    "subclasses_nn_multiheadattention": "torch.nn.MultiheadAttention",
    "get_batch_from_part_iii": "llmref.pretrain.get_batch",
    "clips_with_clip_grad_norm_": "torch.nn.utils.clip_grad_norm_",
    "lookup_by_f_embedding": "torch.nn.functional.embedding",
    "lookup_by_nn_embedding": "torch.nn.Embedding",
    "uses_transformer_encoder_layer": "torch.nn.TransformerEncoderLayer",
    "adamw_is_torchs": "torch.optim.AdamW",
    "clip_by_torch": "torch.nn.utils.clip_grad_norm_",
    "block_uses_sdpa": "torch.nn.functional.scaled_dot_product_attention",
    "cross_attention_by_sdpa": "torch.nn.functional.scaled_dot_product_attention",
    "top_k_with_torch": "torch.topk",
    "attend_by_sdpa": "torch.nn.functional.scaled_dot_product_attention",
    "bm25_by_rank_bm25": "rank_bm25.BM25Okapi",
    "lora_by_peft": "peft.tuners.lora.Linear",
}
UNSEEN = {"gradient_by_autograd"}
SHORTCUTS = [(name, m) for name in NAMES for m in for_exercise(name)
             if "exercise for you" in m.says or m.says.startswith("uses ")]


def test_the_list_of_shortcut_mistakes_is_the_one_above():
    assert {m.name for _, m in SHORTCUTS} == set(SEEN) | UNSEEN


@pytest.mark.parametrize("name, mistake", SHORTCUTS, ids=[f"{n}-{m.name}" for n, m in SHORTCUTS])
def test_each_known_shortcut_is_in_plain_sight_of_the_scan(name, mistake):
    solution = read(solution_path(name))
    nb = with_cells(read(solution_path(name)), {mistake.cell: mistake.source})
    defined = {r.dotted for r in Scan(nb.cells, given_cells(solution.cells)).references if r.defined}
    if mistake.name in UNSEEN:
        assert defined == {r.dotted for r in Scan(solution.cells, given_cells(solution.cells)).references
                           if r.defined}
    else:
        assert SEEN[mistake.name] in defined, sorted(defined)


# Graded end to end, in one process, by a kernel whose watch was switched off (it never
# reports a shortcut, as a learner's tampering would leave it): the scan alone must still
# cost each shortcut its points, and leave the solution its full marks.
JUDGED_HERE = ["01_softmax", "02_attention", "05_modules", "06_multihead", "10_block", "17_retrieval"]


def _judged_outputs(name, nb):
    from coursetools import judge
    from test_judge import Local

    class Blind(Local):
        def ask(self, request):
            if request.get("op") in ("watch_start", "watch_look"):
                return None
            if request.get("op") == "watch_stop":
                return []
            return super().ask(request)

    import importlib
    checks = importlib.import_module(f"autograder.checks.{judge.checks_module_name(nb.cells)}")
    namespace = {"__name__": "__main__"}
    for c in nb.cells:
        if c.cell_type == "code" and not judge.is_test_cell(c):
            try:
                exec(compile(c.source, "<learner cell>", "exec"), namespace)
            except Exception:  # a wrong solution cell may fail, as in a kernel
                pass
    connection = Blind(namespace)
    connection.built_here = judge.BUILT_IN_KERNEL.get(name, ())
    connection.scan = Scan(nb.cells, given_cells(read(solution_path(name)).cells))
    outputs = {}
    for c in nb.cells:
        if judge.is_test_cell(c):
            shown, ok = judge.run_cell(c.source, checks, connection)
            outputs[c.metadata.nbgrader.grade_id] = (ok, " ".join(o.get("evalue", "") for o in shown))
    return outputs


def _judged(name, nb):
    from autograder.checks._core import SHORTCUT_PHRASE
    return {cell: (ok, SHORTCUT_PHRASE in text) for cell, (ok, text) in _judged_outputs(name, nb).items()}


@pytest.mark.parametrize("name", JUDGED_HERE)
def test_with_the_kernels_watch_switched_off_the_scan_still_refuses_each_shortcut(name):
    solution = _judged(name, read(solution_path(name)))
    assert all(ok for ok, _ in solution.values()), solution
    for n, mistake in SHORTCUTS:
        if n != name:
            continue
        result = _judged(name, with_cells(read(solution_path(name)), {mistake.cell: mistake.source}))
        assert any(refused and not ok for ok, refused in result.values()), (mistake.name, result)


def test_a_package_the_given_cells_import_is_left_to_the_watch():
    # 11_gpt refuses torch in count_parameters only: the rest of the notebook is torch.
    torch_package = places_of([{"package": "torch", "name": None}])
    learner = "def count(config):\n    return sum(p.numel() for p in torch.nn.Linear(2, 2).parameters())\n"
    assert scan(learner).shortcuts(torch_package, ["torch"]) == []
    numpy_given = "import numpy as np\nimport torch\n"  # a NumPy exercise's learner importing torch
    alone = [cell("import numpy as np\n", locked=True), cell(numpy_given + learner, solution=True)]
    found = Scan(alone, given_cells([cell("import numpy as np\n", locked=True)])).shortcuts(torch_package, ["torch"])
    assert found and found[0].startswith("torch (cell 1, line 4")


def test_tampering_costs_each_watched_check_with_a_reason_of_its_own():
    from mistakes import solution_source
    name = "05_modules"
    tampered = solution_source(name, "Linear") + "\nimport sys\nsys.setprofile(None)\n"
    nb = with_cells(read(solution_path(name)), {"Linear": tampered})
    result = _judged_outputs(name, nb)
    failed = {cell: text for cell, (ok, text) in result.items() if not ok}
    assert failed, result
    for text in failed.values():
        assert "reach for what watches the checks" in text and "sys.setprofile in cell" in text, text
