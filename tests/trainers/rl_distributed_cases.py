"""Rank-side run for the sharded rollout test: a FULL_SHARDed GPT decoded through a DecodeSnapshot."""

from __future__ import annotations

import copy

import torch


def sharded_snapshot_rollout(rank, world):
    """Greedy tokens of the sharded model (snapshot path and the per-forward hook path) and gather counts."""
    from shardkit.fsdp.flat_param import FlatGroup
    from shardkit.models import GPT, GPTConfig
    from shardkit.models.fast_decode import DecodeSnapshot
    from shardkit.models.generation import generate
    from shardkit.trainers.setup import shard_for_data_parallel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4,
                          num_kv_heads=2, max_position_embeddings=64, tie_word_embeddings=True)).eval()
    full = copy.deepcopy(model)
    ids = torch.randint(3, 61, (4, 5), generator=torch.Generator().manual_seed(1))
    expected = generate(full, ids, max_new_tokens=10, temperature=0)
    sharded = shard_for_data_parallel(model)
    gathers = {"n": 0}
    original = FlatGroup.full_values

    def counted(self):
        gathers["n"] += 1
        return original(self)

    FlatGroup.full_values = counted
    try:
        snap = DecodeSnapshot(sharded)
        tokens = snap.generate(ids, max_new_tokens=10, temperature=0)
    finally:
        FlatGroup.full_values = original
    shard_bytes = sum(p.numel() for p in sharded.parameters())
    return {"equal": bool(torch.equal(tokens, expected)), "gathers": gathers["n"],
            "groups": len(sharded._shardkit_fsdp.groups), "sharded_numel": shard_bytes,
            "full_numel": sum(p.numel() for p in full.parameters())}
