"""The learner's bundle of a graded class (coursetools/bundle.py, autograder/replay.py).

What a learner of a graded class installs holds the release notebook and the visible checks
but not solutions/, hidden tests or the reference implementations: the checks' calls to
llmref are answered from snapshots recorded on the instructor's side. These tests prove
(a) the committed snapshots are current, (b) a bundle holds no answers, and (c) in a Python
that sees only the bundle, the visible checks give the same verdicts as with the real
references: the solution passes, the release stub fails, every known mistake fails the same
graded cells.
"""
from __future__ import annotations

import json
import zipfile

import nbformat
import numpy as np
import pytest

from coursetools import bundle, release, selfcheck
from exercise_tools import ROOT

COVERED = bundle.covered(ROOT)
# End to end: a NumPy exercise, a class with state (numpy), a PyTorch module with gradients,
# a reference model class (GPT, with an earlier exercise's Block shipped for real), and an
# agent loop driven by the check's own scripted tools and a scripted model it changes.
END_TO_END = ["02_attention", "04_adam", "06_multihead", "11_gpt", "19_agent"]
# Given code shipped for real (coursetools/bundle.py's PASSTHROUGH), where running every known
# mistake would take minutes: the solution, the release stub and the mistakes named here (the
# solution's run already takes the new paths). 07's CharMLP trains for real under the learner's
# train, and check_train_learns measures it itself (two mistakes that still learn: a replay of
# the reference's bits_per_char could not score their models). 12's make_optimizer builds torch's AdamW over
# the replayed param_groups, the model's own parameters (check_param_groups compares them by
# identity); 13's load_encoder reads MiniLM's weights from its package into the stand-in
# Encoder; 14's exact_match decodes the learner's trained model with their greedy_decode;
# 17's evaluate scores rankings the recording never saw (idf_without_the_one's) with the
# learner's recall_at_k and reciprocal_rank, over the book's pages shipped as data.
A_FEW = {"07_training": ["forgets_zero_grad", "warmup_off_by_one"], "12_pretrain": [], "13_encoder": [], "14_seq2seq": ["no_shift"],
         "17_retrieval": ["idf_without_the_one", "recall_divided_by_k"]}


def test_every_assignment_is_covered_or_says_why():
    names = release.assignment_names(ROOT)
    assert set(COVERED) | set(bundle.NOT_COVERED) == set(names)
    assert not set(COVERED) & set(bundle.NOT_COVERED)
    assert all(len(why) > 40 for why in bundle.NOT_COVERED.values())
    readme = (ROOT / "README.md").read_text()
    for name in bundle.NOT_COVERED:
        assert name in readme.split("## Learners of a graded class: the bundle")[1], name


# ------------------------------------------------------------------ (a) current snapshots

@pytest.mark.parametrize("name", COVERED)
def test_snapshot_is_current(name):
    """Cheap, for every covered assignment: the snapshot was recorded from today's notebooks,
    checks, llmref modules, replay layer, recorder and numpy/torch versions."""
    problems = bundle.stale_sources(ROOT, ROOT / bundle.SNAPSHOTS, name)
    assert not problems, "\n".join(problems)


def test_snapshots_are_small():
    sizes = {p.name: p.stat().st_size for p in (ROOT / bundle.SNAPSHOTS).iterdir()}
    # 5.9 MB for the 20 assignments: 13_encoder's 1.5 MB (MiniLM's vocabulary and hidden
    # states), 07_training's 1.2 MB (its 222 batches, each with the 5 KB state of the torch
    # generator it leaves behind: random bytes, which do not compress).
    assert sum(sizes.values()) < 8 * 2**20, sizes
    stray = {p.split(".")[0] for p in sizes} - set(COVERED)
    assert not stray, f"snapshots of assignments the bundle does not cover: {stray}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["02_attention", "11_gpt"])
def test_recording_again_gives_the_committed_snapshot(name, tmp_path):
    """The recorder is deterministic: the same calls (keys hash the exact inputs) and the same
    results (up to float rounding, rtol 1e-6, for a CPU whose kernels round differently)."""
    bundle.snapshot(ROOT, name, tmp_path)
    assert bundle.compare_snapshots(ROOT / bundle.SNAPSHOTS, tmp_path, name) == []


def test_compare_snapshots_sees_a_changed_answer(tmp_path):
    name = "02_attention"
    data, arrays = bundle.load_snapshot(ROOT / bundle.SNAPSHOTS, name)
    key = sorted(arrays)[0]
    arrays[key] = arrays[key] + 1e-3
    (tmp_path / f"{name}.json").write_text(json.dumps(data))
    np.savez(tmp_path / f"{name}.npz", **arrays)
    assert any("differ" in p for p in bundle.compare_snapshots(ROOT / bundle.SNAPSHOTS, tmp_path, name))


# ------------------------------------------------------------------- (b) no answers in it

@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    return {name: bundle.build(ROOT, name, out) for name in [*END_TO_END, *A_FEW]}


@pytest.mark.parametrize("name", [*END_TO_END, *A_FEW])
def test_bundle_holds_no_answers(name, bundles):
    folder = bundles[name]
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert f"{name}.ipynb" in files and "pyproject.toml" in files
    assert f"autograder/snapshots/{name}.json" in files
    assert not any(part in ("solutions", "tests", "coursetools") for f in files for part in f.split("/"))
    assert bundle.scan(ROOT, name, folder) == []
    # The exercise's own reference is a stand-in; no module of this or a later exercise is real.
    own = bundle.library_module(ROOT, name)
    assert "GENERATED" not in (folder / "llmref" / f"{own}.py").read_text()
    assert "replay" in (folder / "llmref" / f"{own}.py").read_text()
    solution = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    hidden = [line for cell in solution.cells for line in release.regions(cell.source)["hidden test"]]
    everything = "\n".join(p.read_text(errors="replace") for p in folder.rglob("*")
                           if p.suffix in (".py", ".ipynb", ".json", ".md", ".toml"))
    assert hidden and not [line for line in hidden if len(line) > 12 and line in everything]
    with zipfile.ZipFile(folder.parent / f"{name}.zip") as zf:
        assert {n.split("/", 1)[1] for n in zf.namelist()} == files


def test_scan_finds_a_planted_reference(bundles, tmp_path):
    import shutil
    folder = tmp_path / "02_attention"
    shutil.copytree(bundles["02_attention"], folder)
    shutil.copy2(ROOT / "llmref" / "attention.py", folder / "llmref" / "attention.py")
    problems = bundle.scan(ROOT, "02_attention", folder)
    assert any("reference implementation of 02_attention" in p for p in problems)
    assert any("solution line" in p for p in problems)


def test_an_earlier_exercise_ships_only_when_the_notebook_imports_it():
    plan = bundle.plan(ROOT, "03_backprop")  # its notebook imports 02's attention and 01's softmax
    assert plan.real == {"attention", "probability"} and plan.replayed == {"backprop"}
    plan = bundle.plan(ROOT, "10_block")  # its checks use 06's multihead: replayed, not shipped
    assert plan.real == set() and plan.replayed == {"block", "multihead"}


def test_given_code_ships_only_from_the_release_notebook(monkeypatch):
    """A name in PASSTHROUGH ships for real only if the release notebook shows its source word
    for word: an answer (whose body the release notebook replaces by a stub) never does."""
    sources = bundle.given_sources(ROOT, "17_retrieval")["retrieval"]
    assert "def evaluate(" in sources["evaluate"] and "WORD = re.compile" in sources["WORD"]
    monkeypatch.setitem(bundle.PASSTHROUGH, "17_retrieval", {"retrieval": ["recall_at_k"]})
    with pytest.raises(bundle.BundleError, match="not given code"):
        bundle.given_sources(ROOT, "17_retrieval")


def test_not_covered_assignments_are_refused(tmp_path, monkeypatch):
    # Every assignment is covered today; the refusal stays for one that a change leaves out.
    monkeypatch.setitem(bundle.NOT_COVERED, "02_attention", "left out, for this test, with its reason")
    with pytest.raises(bundle.BundleError, match="not covered.*with its reason"):
        bundle.build(ROOT, "02_attention", tmp_path)
    assert "02_attention" not in bundle.covered(ROOT)


# --------------------------------------------------------- (c) the checks with only the bundle

def _verdicts(outcome: dict) -> set[str]:
    return {cell for cell, message in outcome.items() if message}


@pytest.mark.slow
@pytest.mark.parametrize("name", END_TO_END)
def test_bundle_checks_agree_with_the_references(name, bundles):
    """In a Python that sees only the bundle (-I -S, the course's editable install and
    PYTHONPATH left out): the solution passes every visible check, the release stub fails
    each, and every known mistake fails exactly the graded cells it fails with the real
    references; nothing is imported from the repository."""
    solution = selfcheck.solution_cells(ROOT, name)
    mistakes = selfcheck.known_mistakes(ROOT, name)
    variants = {"solution": solution, "release": {}}
    variants.update({m.name: {**solution, m.cell: m.source} for m in mistakes})
    report = bundle.run_bundle(bundles[name], name, variants, repo=ROOT)
    assert report["foreign"] == []
    own = f"llmref.{bundle.library_module(ROOT, name)}"
    assert own in report["llmref"]  # imported, and it was the stand-in (no GENERATED file there)
    outcome = report["variants"]
    assert _verdicts(outcome["solution"]) == set(), outcome["solution"]
    assert all(outcome["release"].values()) and outcome["release"], outcome["release"]
    release_nb = nbformat.read(ROOT / "notebooks" / name / f"{name}.ipynb", as_version=4)
    caught = 0
    for mistake in mistakes:
        real = bundle.run_cells(selfcheck.with_cells(release_nb, variants[mistake.name]))
        assert _verdicts(outcome[mistake.name]) == _verdicts(real), (mistake.name, outcome[mistake.name])
        caught += bool(_verdicts(real))
    assert caught >= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", A_FEW)
def test_bundle_checks_agree_on_a_few_variants(name, bundles):
    """As above, for the solution, the release stub and the known mistakes named in A_FEW."""
    solution = selfcheck.solution_cells(ROOT, name)
    mistakes = [m for m in selfcheck.known_mistakes(ROOT, name) if m.name in A_FEW[name]]
    assert len(mistakes) == len(A_FEW[name])
    variants = {"solution": solution, "release": {}}
    variants.update({m.name: {**solution, m.cell: m.source} for m in mistakes})
    report = bundle.run_bundle(bundles[name], name, variants, repo=ROOT)
    assert report["foreign"] == []
    outcome = report["variants"]
    assert _verdicts(outcome["solution"]) == set(), outcome["solution"]
    assert all(outcome["release"].values()) and outcome["release"], outcome["release"]
    release_nb = nbformat.read(ROOT / "notebooks" / name / f"{name}.ipynb", as_version=4)
    for mistake in mistakes:
        real = bundle.run_cells(selfcheck.with_cells(release_nb, variants[mistake.name]))
        assert _verdicts(real) and _verdicts(outcome[mistake.name]) == _verdicts(real), mistake.name


# ------------------------------------------------------------------------- the replay layer

def test_replay_answers_recorded_inputs_and_refuses_others(tmp_path):
    """A stand-in returns what the reference returned, writes back what it changed in its
    arguments and in the global RNG, and says "checked by the grader" for unseen inputs."""
    from autograder import replay

    def reference(x, out):
        out[...] = np.random.standard_normal(out.shape)  # changes an argument and the RNG
        return {"sum": float(x.sum()), "double": 2 * x}

    recorder = bundle.Recorder()
    x, out = np.arange(6.0).reshape(2, 3), np.zeros(3)
    np.random.seed(1)
    expected = recorder.call("llmref.fake.reference", reference, None, (x, out), {})
    expected_out, after = out.copy(), np.random.standard_normal()
    bundle.write_snapshot(tmp_path, "fake", recorder.calls, recorder.codec.arrays, ["fake"], {})
    saved = replay._FOLDER, replay._ASSIGNMENT[0]
    try:
        replay.configure(tmp_path, "fake")
        stand_in = replay.function("llmref.fake", "reference")
        np.random.seed(1)
        out2 = np.zeros(3)
        got = stand_in(x, out2)
        assert got["sum"] == expected["sum"] and np.array_equal(got["double"], expected["double"])
        assert np.array_equal(out2, expected_out) and np.random.standard_normal() == after
        with pytest.raises(replay.NotRecorded, match="can only be checked by the grader"):
            stand_in(x + 1, np.zeros(3))
        with pytest.raises(replay.NotRecorded, match="random"):
            np.random.seed(2)
            stand_in(x, np.zeros(3))
        assert issubclass(replay.NotRecorded, AssertionError)  # a failing check, not a crash
    finally:
        replay.configure(*saved)


def test_a_call_is_keyed_by_the_generators_it_draws_from(tmp_path):
    """A reference that draws from torch's generator replays whatever NumPy's and Python's
    global states are (a notebook seldom seeds them, and they differ in every process), and
    still refuses a different torch state."""
    import random

    import torch

    from autograder import replay

    def reference(n):
        return torch.randn(n)

    recorder = bundle.Recorder()
    torch.manual_seed(3)
    expected = recorder.call("llmref.fake.reference", reference, None, (4,), {})
    after = torch.rand(1)
    (entry,) = recorder.calls[replay.call_key("llmref.fake.reference", None, (4,), {})]
    assert entry["rng_uses"] == ["torch"] and set(entry["rng_after"]) == {"torch"}
    bundle.write_snapshot(tmp_path, "fake", recorder.calls, recorder.codec.arrays, ["fake"], {})
    saved = replay._FOLDER, replay._ASSIGNMENT[0]
    try:
        replay.configure(tmp_path, "fake")
        stand_in = replay.function("llmref.fake", "reference")
        np.random.seed(12345)
        random.seed(678)
        numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
        torch.manual_seed(3)
        assert torch.equal(stand_in(4), expected) and torch.equal(torch.rand(1), after)
        # the generators it did not draw from are left as they were
        assert np.array_equal(np.random.get_state()[1], numpy_state) and random.getstate() == python_state
        torch.manual_seed(4)
        with pytest.raises(replay.NotRecorded, match="random"):
            stand_in(4)
    finally:
        replay.configure(*saved)


def test_stand_ins_are_told_apart_by_the_shortcut_watch(tmp_path):
    """The watch names a forbidden function by its code object: each stand-in has its own, so
    forbidding one reference (07 forbids 12's llmref.pretrain.evaluate) never flags another
    that a check calls (07's llmref.training.get_batch, from the learner's next_batch)."""
    from autograder import replay
    from autograder.checks._core import CheckFailure, refuse_shortcuts

    forbidden = replay.function("llmref.pretrain", "evaluate")
    allowed = replay.function("llmref.training", "get_batch")
    assert forbidden.__code__ != allowed.__code__
    stand_in = replay.stand_in_class("llmref.fake", "Model", ["step"], is_module=False)
    assert stand_in.step.__code__ != stand_in.__init__.__code__ != allowed.__code__
    bundle.write_snapshot(tmp_path, "fake", {}, {}, ["fake"], {})
    saved = replay._FOLDER, replay._ASSIGNMENT[0]
    calls = []
    try:
        replay.configure(tmp_path, "fake")
        with refuse_shortcuts({forbidden: "llmref.pretrain.evaluate"}, "train", "by hand"):
            try:
                allowed()
            except replay.NotRecorded:  # nothing is recorded: reaching the replay is the point
                calls.append("allowed")
        assert calls == ["allowed"]
        with pytest.raises(CheckFailure, match="llmref.pretrain.evaluate"):
            with refuse_shortcuts({forbidden: "llmref.pretrain.evaluate"}, "train", "by hand"):
                try:
                    forbidden()
                except replay.NotRecorded:
                    pass
    finally:
        replay.configure(*saved)


def test_a_module_is_keyed_after_a_library_patched_torch(monkeypatch):
    """transformers, once it has built a model, sets smart_apply on torch.nn.Module itself: a
    torch module is still keyed by its weights, and a class of the caller's still refused."""
    import torch

    from autograder import replay

    namespace: dict = {"__name__": "transformers.modeling_utils"}
    exec("def smart_apply(self, fn):\n    return self\n", namespace)
    layer = torch.nn.Linear(2, 2)
    before = replay.digest(layer)
    monkeypatch.setattr(torch.nn.Module, "smart_apply", namespace["smart_apply"], raising=False)
    assert replay.digest(layer) == before
    learners: dict = {"__name__": "__main__", "nn": torch.nn}
    exec("class Mine(nn.Linear):\n    def extra(self):\n        return 1\n", learners)
    with pytest.raises(replay.Unrecordable):
        replay.digest(learners["Mine"](2, 2))


def test_learner_functions_are_never_keyed_by_name():
    """A call whose inputs hold the learner's function cannot be answered from a recording:
    its result depends on code the recording never saw."""
    from autograder import replay

    namespace: dict = {"__name__": "__main__"}
    exec("def tokenize(text):\n    return text.split()\n", namespace)
    with pytest.raises(replay.Unrecordable):
        replay.digest(namespace["tokenize"])
    # A class a check builds around the learner's methods (11_gpt's sampler) is theirs too.
    hybrid = type("GPT", (), {"__module__": "autograder.checks.gpt", "generate": namespace["tokenize"]})
    with pytest.raises(replay.Unrecordable, match="tokenize"):
        replay.digest(hybrid())
    assert replay.digest(np.ones(3)) != replay.digest(np.ones(3, dtype=np.float32))
    assert replay.digest([1, 2.0]) != replay.digest((1, 2.0))


def test_a_result_holding_an_input_gives_back_the_callers_object(tmp_path):
    """param_groups returns the model's own parameters: the replay hands back the caller's
    parameters (an optimizer over copies would train nothing), found by name in the module."""
    import torch

    from autograder import replay

    def groups(model):
        return [{"params": [model.weight], "weight_decay": 0.1}, {"params": [model.bias], "weight_decay": 0.0}]

    recorder = bundle.Recorder()
    model = torch.nn.Linear(3, 2)
    recorder.call("llmref.fake.groups", groups, None, (model,), {})
    bundle.write_snapshot(tmp_path, "fake", recorder.calls, recorder.codec.arrays, ["fake"], {})
    saved = replay._FOLDER, replay._ASSIGNMENT[0]
    try:
        replay.configure(tmp_path, "fake")
        got = replay.function("llmref.fake", "groups")(model)
        assert got[0]["params"][0] is model.weight and got[1]["params"][0] is model.bias
        assert got[0]["weight_decay"] == 0.1
    finally:
        replay.configure(*saved)


def test_delegated_references_ask_the_learner_only_from_given_code(tmp_path):
    """A delegated reference called by its module's given code (a harness shipped for real)
    with inputs never recorded answers with the learner's function of that name; called from
    anywhere else (a check comparing the learner's function with the reference) it does not."""
    from autograder import replay

    bundle.write_snapshot(tmp_path, "fake", {}, {}, ["fake"], {}, delegated=["llmref.fake.score"])
    saved = replay._FOLDER, replay._ASSIGNMENT[0]
    try:
        replay.configure(tmp_path, "fake")
        module = {"__name__": "llmref.fake", "score": replay.function("llmref.fake", "score")}
        exec("def harness(x):\n    return score(x)\n", module)
        notebook = {"__name__": "__main__", "harness": module["harness"], "stand_in": module["score"]}
        exec("def score(x):\n    return 2 * x\nvia_harness = harness(21)\n", notebook)
        assert notebook["via_harness"] == 42
        with pytest.raises(replay.NotRecorded):
            exec("direct = stand_in(21)\n", notebook)
    finally:
        replay.configure(*saved)
