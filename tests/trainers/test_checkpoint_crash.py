"""Trainer checkpoints survive a crash at every file write and every rename of a save.

The scenario of issue 13: ``checkpoint-2`` exists and a run that ends at step
2 saves it again (a resumed run, or a rerun). Whatever step of that save
fails, ``checkpoint-2`` must still be there, whole (the old copy or the new
one, never a mix), resume, and the next save must clear what was left over.
"""

import json
import os
import shutil

import pytest
import torch

from tests.trainers.conftest import make_records, make_tokenizer
from shardkit.models import GPT, GPTConfig
from shardkit.testing.faults import Crash, CrashAt
from shardkit.trainers import SFTConfig, SFTTrainer, checkpoint


def _trainer(out, seed, max_steps=2, **kw):
    tok = make_tokenizer()
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                          num_kv_heads=1, max_position_embeddings=128, tie_word_embeddings=True))
    kw = {"report_to": [], **kw}
    args = SFTConfig(output_dir=str(out), learning_rate=1e-2, per_device_train_batch_size=2, max_steps=max_steps,
                     lr_scheduler_type="constant", logging_steps=1, optim="adamw_torch", disable_tqdm=True,
                     max_length=64, seed=0, **kw)
    return SFTTrainer(model, args=args, train_dataset=make_records("prompt_completion", 8), processing_class=tok)


def _files(directory):
    """The checkpoint's files, but the wall time of the steps, which no two runs share."""
    files = {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}
    state = json.loads(files["trainer_state.json"])
    assert state.pop("train_seconds") > 0
    files["trainer_state.json"] = state
    return files


def test_resaving_a_checkpoint_survives_a_crash_at_every_write_and_rename(tmp_path):
    pristine = tmp_path / "pristine"
    _trainer(pristine, seed=0).train()
    old = _files(pristine / "checkpoint-2")
    out = tmp_path / "out"  # one path for all runs: the config in trainer_state.json names it
    shutil.copytree(pristine, out)
    with CrashAt(None) as probe:  # the re-save that succeeds: another model ends at the same step
        _trainer(out, seed=1).train()
    new = _files(out / "checkpoint-2")
    assert new["model.safetensors"] != old["model.safetensors"]
    assert sum(c.startswith("write") for c in probe.calls) == len(new) == 6
    assert probe.calls[-3:] == ["rename checkpoint-2 -> .old-checkpoint-2",
                                "rename .tmp-checkpoint-2 -> checkpoint-2", "delete .old-checkpoint-2"]

    outcomes = set()
    for k, step in enumerate(probe.calls, start=1):
        shutil.rmtree(out)
        shutil.copytree(pristine, out)
        with CrashAt(k), pytest.raises(Crash):
            _trainer(out, seed=1).train()
        found = checkpoint.latest(out)
        assert found == out / "checkpoint-2", f"crash at {step!r}: found {found}, {os.listdir(out)}"
        assert _files(found) in (old, new), f"crash at {step!r}: checkpoint-2 is a mix or is damaged"
        outcomes.add(_files(found) == new)
        resumed = _trainer(out, seed=3, max_steps=3)
        assert resumed.train(resume_from_checkpoint=str(found)).global_step == 3
        assert sorted(os.listdir(out)) == ["checkpoint-2", "checkpoint-3"], f"crash at {step!r}: leftovers"
    assert outcomes == {False, True}  # crashes before and after the new copy went in


def test_a_crash_between_the_renames_leaves_a_copy_that_load_recovers(tmp_path):
    out = tmp_path / "out"
    _trainer(out, seed=0).train()
    old = _files(out / "checkpoint-2")
    shutil.copytree(out, tmp_path / "counted")
    with CrashAt(None) as probe:
        _trainer(tmp_path / "counted", seed=1).train()
    k = probe.calls.index("rename .tmp-checkpoint-2 -> checkpoint-2") + 1
    assert probe.calls[k - 2] == "rename checkpoint-2 -> .old-checkpoint-2"
    with CrashAt(k), pytest.raises(Crash):
        _trainer(out, seed=1).train()
    assert sorted(os.listdir(out)) == [".old-checkpoint-2"]  # only the aside copy is left
    # resume_from_checkpoint names checkpoint-2 directly: load puts the copy back first.
    resumed = _trainer(out, seed=3, max_steps=2)
    assert resumed.train(resume_from_checkpoint=str(out / "checkpoint-2")).global_step == 2
    assert sorted(os.listdir(out)) == ["checkpoint-2"]
    assert _files(out / "checkpoint-2") == old  # step 2 again from the old copy: the same checkpoint


def test_a_failed_save_removes_its_staging_directory(tmp_path):
    out = tmp_path / "out"
    with CrashAt(3), pytest.raises(Crash):  # the third write of the first save
        _trainer(out, seed=0).train()
    assert os.listdir(out) == []


def test_the_next_save_clears_what_killed_saves_left(tmp_path):
    out = tmp_path / "out"
    _trainer(out, seed=0, max_steps=1).train()
    # What a kill -9 leaves: a half-built staging directory of another step, and an aside copy whose new
    # copy is already in place (the kill came before its deletion).
    (out / ".tmp-checkpoint-7").mkdir()
    (out / ".tmp-checkpoint-7" / "model.safetensors").write_bytes(b"half")
    (out / ".old-checkpoint-1").mkdir()
    resumed = _trainer(out, seed=0, max_steps=2)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-1"))
    assert sorted(os.listdir(out)) == ["checkpoint-1", "checkpoint-2"]
