"""A resumed run's ``metrics.jsonl`` is its restored ``log_history``, not the earlier run's lines again."""

import json

from tests.trainers.test_checkpoint_crash import _trainer


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resuming_from_an_earlier_checkpoint_rewrites_metrics_jsonl(tmp_path):
    first = _trainer(tmp_path, seed=0, max_steps=4, save_steps=2, report_to=["jsonl"]).train()
    assert [e["step"] for e in _lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    resumed = _trainer(tmp_path, seed=5, max_steps=4, report_to=["jsonl"])
    history = resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2")).log_history
    assert [e["step"] for e in _lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]  # not 1, 2, 3, 4, 3, 4
    assert _lines(tmp_path / "metrics.jsonl") == history == first.log_history
    # A fresh run in the same directory starts a fresh file.
    _trainer(tmp_path, seed=0, max_steps=1, report_to=["jsonl"]).train()
    assert [e["step"] for e in _lines(tmp_path / "metrics.jsonl")] == [1]
