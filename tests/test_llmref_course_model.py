"""The Part III checkpoint that Part IV builds on loads, matches its record, and refuses a wrong corpus."""
import json

import pytest
import torch

from llmref import course_model, pretrain


def test_the_course_gpt_evaluates_to_its_recorded_loss():
    loaded = course_model.load()
    assert not loaded.model.training
    held_out = torch.from_numpy(loaded.data.held_out)
    loss = pretrain.evaluate(loaded.model, held_out, loaded.model.config.block_size)
    assert abs(loss - loaded.held_out_nats_per_char) < 1e-4


def test_a_checkpoint_for_another_corpus_is_refused(tmp_path):
    rec = course_model.record()
    rec["corpus"]["fingerprint"] = "0000000000000000"
    fake = tmp_path / "benchmarks" / "results" / "pretrain.json"
    fake.parent.mkdir(parents=True)
    fake.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="retrain"):
        course_model.load(fake)


def test_a_missing_record_says_how_to_restore_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="git checkout benchmarks/results"):
        course_model.load(tmp_path / "pretrain.json")
