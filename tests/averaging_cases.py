"""Rank-side part of the averaging tests: write real sharded checkpoints with shardkit.fsdp."""

from __future__ import annotations

from shardkit import fsdp
from shardkit.models.gpt import Block

from tests.fsdp.fsdp_cases import join, tiny_gpt


def save_sharded_models(rank, world, directories, seeds):
    """Shard one tiny GPT per seed, save it as a sharded checkpoint; return each full state (numpy)."""
    join()
    states = []
    for directory, seed in zip(directories, seeds):
        model = fsdp.shard(tiny_gpt(seed=seed), units=[Block])
        fsdp.save_sharded_checkpoint(model, None, directory)
        states.append({k: v.numpy() for k, v in fsdp.full_state_dict(model, rank0_only=False).items()})
    return states
