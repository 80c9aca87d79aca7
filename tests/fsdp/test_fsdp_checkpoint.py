"""Sharded checkpoints: resume equals the uninterrupted run, N ranks save and M ranks load."""

import os

import pytest

from shardkit.testing import spawn

import fsdp_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


@pytest.mark.parametrize("saved_world,loaded_world,optim", [(2, 2, "adamw"), (3, 2, "adamw"), (2, 4, "sgd")])
def test_resume_from_sharded_checkpoint_continues_the_run(tmp_path, saved_world, loaded_world, optim):
    ckpt = str(tmp_path / "ckpt")
    uninterrupted = spawn(fsdp_cases.run_sharded_checkpoint, saved_world, args=(ckpt, "save", optim), timeout=120)
    assert sorted(os.listdir(ckpt)) == ["layout.json"] + [f"shard-{r:05d}-of-{saved_world:05d}.safetensors" for r in range(saved_world)]
    resumed = spawn(fsdp_cases.run_sharded_checkpoint, loaded_world, args=(ckpt, "resume", optim), timeout=120)
    (losses, params), (resumed_losses, resumed_params) = uninterrupted[0], resumed[0]
    if saved_world == loaded_world:
        # Same world size: bit for bit the uninterrupted run.
        assert resumed_losses == losses
        for name, value in params.items():
            assert (resumed_params[name] == value).all(), name
    else:
        # Another world size sums gradients in another order: fp32 rounding only.
        assert max(abs(a - b) for a, b in zip(resumed_losses, losses)) <= fsdp_cases.TOL
        for name, value in params.items():
            assert abs(resumed_params[name] - value).max() <= fsdp_cases.TOL, name


def test_sharded_checkpoint_of_another_model_is_refused(tmp_path):
    assert all(spawn(fsdp_cases.run_checkpoint_of_other_model, 2, args=(str(tmp_path / "ckpt"),), timeout=120))


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    spawn(fsdp_cases.run_sharded_checkpoint, 2, args=(ckpt, "save", "sgd"), timeout=120)
    before = {f: open(os.path.join(ckpt, f), "rb").read() for f in os.listdir(ckpt)}
    # A save killed mid-way: rank 1 dies before writing its shard.
    with pytest.raises(Exception):
        spawn(fsdp_cases.run_interrupted_save, 2, args=(ckpt,), timeout=60)
    assert {f: open(os.path.join(ckpt, f), "rb").read() for f in os.listdir(ckpt)} == before
    assert spawn(fsdp_cases.run_sharded_checkpoint, 2, args=(ckpt, "resume", "sgd"), timeout=120)
