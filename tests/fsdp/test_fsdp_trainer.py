"""A trainer on 2 ranks (FULL_SHARD via prepare_model_and_optimizer) equals the single-process run
on the same global batches: losses, gradient norms (clipped) and final parameters."""

import os

import pytest
import torch

from shardkit.testing import spawn

import fsdp_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def test_two_rank_full_shard_sft_equals_single_process(tmp_path):
    pytest.importorskip("transformers")
    torch.set_num_threads(1)
    # One process with 4 examples per micro-batch = 2 ranks with 2 each.
    single = fsdp_cases.sft_trainer(str(tmp_path / "single"), per_device_batch=4)
    expected = single.train().log_history
    ranks = spawn(fsdp_cases.run_sft_trainer, 2, args=(str(tmp_path / "sharded"),), timeout=150)
    history, params = ranks[0]
    # Every rank logs the same global values, every metric included.
    assert ranks[1][0] == history
    assert len(history) == len(expected) == 4
    for ours, theirs in zip(history, expected):
        assert abs(ours["loss"] - theirs["loss"]) <= 1e-5, (ours, theirs)
        assert abs(ours["grad_norm"] - theirs["grad_norm"]) <= 1e-5 * theirs["grad_norm"], (ours, theirs)
        assert (ours["step"], ours["epoch"], ours["learning_rate"]) == (theirs["step"], theirs["epoch"], theirs["learning_rate"])
        # The other metrics are global too: token counts and token-weighted means over both ranks' rows.
        assert ours["num_tokens"] == theirs["num_tokens"], (ours, theirs)
        for key in ("entropy", "mean_token_accuracy"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), (key, ours, theirs)
    for name, value in single.model.state_dict().items():
        assert abs(torch.from_numpy(params[name]) - value).max() <= 1e-5, name
    # The final checkpoint is a sharded one, complete with the trainer's state.
    ckpt = tmp_path / "sharded" / "checkpoint-4"
    assert sorted(os.listdir(ckpt)) == ["extra.safetensors", "layout.json", "rng.safetensors",
                                        "shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors",
                                        "trainer_state.json"]


def test_shardkit_train_nproc_2_runs_sharded(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    import json

    from shardkit.cli import main
    from shardkit.trainers.toy import toy_records

    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in toy_records("prompt_completion", 8)) + "\n")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[model]\npreset = "tiny"\n[tokenizer]\nname = "char"\n[data]\ntrain = "{data}"\n'
                   f'[trainer]\nlearning_rate = 0.01\nmax_steps = 2\nper_device_train_batch_size = 2\n'
                   f'output_dir = "{tmp_path / "out"}"\ndisable_tqdm = true\nlogging_steps = 1\n')
    # torchrun's children inherit this environment (and so find the same shardkit).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["train", "sft", "--config", str(cfg), "--nproc", "2"]) == 0
    ckpt = tmp_path / "out" / "checkpoint-2"
    assert (ckpt / "shard-00000-of-00002.safetensors").is_file() and (ckpt / "shard-00001-of-00002.safetensors").is_file()
