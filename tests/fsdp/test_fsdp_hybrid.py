"""HYBRID (shard inside a host, replicate across hosts) on simulated hosts:
parity with single-process training, its checkpoints against FULL_SHARD
ones, and hosts of unequal size refused."""

import pytest

from shardkit.testing import spawn

import fsdp_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def hosts(*names):
    """rank_env giving rank r the host id names[r]."""
    return lambda rank: {"SHARDKIT_HOST_ID": names[rank]}


@pytest.mark.parametrize("layout", [("a", "b", "a", "b"), ("a", "b")], ids=["2_hosts_x_2", "2_hosts_x_1"])
def test_hybrid_matches_single_process(layout):
    # 2 x 2 with interleaved ranks (host a holds ranks 0 and 2): the shard
    # and replica groups must follow the topology, not blocks of global ranks.
    # 2 x 1: pure replication (every rank holds everything, gradients all-reduced across hosts).
    assert spawn(fsdp_cases.run_hybrid, len(layout), rank_env=hosts(*layout), timeout=170) == [4] * len(layout)


def test_hosts_of_unequal_size_are_refused():
    assert all(spawn(fsdp_cases.run_hybrid_unequal_hosts, 3, rank_env=hosts("a", "a", "b"), timeout=60))


@pytest.mark.parametrize("saved,loaded", [(("HYBRID", ("a", "b", "a", "b")), ("FULL_SHARD", ("a", "a", "a"))),
                                          (("FULL_SHARD", ("a", "a")), ("HYBRID", ("a", "a", "b", "b")))],
                         ids=["hybrid_2x2_to_full_shard_3", "full_shard_2_to_hybrid_2x2"])
def test_hybrid_checkpoints_load_as_full_shard_and_back(tmp_path, saved, loaded):
    (saved_strategy, saved_hosts), (loaded_strategy, loaded_hosts) = saved, loaded
    ckpt = str(tmp_path / "ckpt")
    uninterrupted = spawn(fsdp_cases.run_sharded_checkpoint, len(saved_hosts), args=(ckpt, "save", "adamw", saved_strategy),
                          rank_env=hosts(*saved_hosts), timeout=150)
    resumed = spawn(fsdp_cases.run_sharded_checkpoint, len(loaded_hosts), args=(ckpt, "resume", "adamw", loaded_strategy),
                    rank_env=hosts(*loaded_hosts), timeout=150)
    (losses, params), (resumed_losses, resumed_params) = uninterrupted[0], resumed[0]
    # Another layout sums gradients in another order: fp32 rounding only.
    assert max(abs(a - b) for a, b in zip(resumed_losses, losses)) <= fsdp_cases.TOL
    for name, value in params.items():
        assert abs(resumed_params[name] - value).max() <= fsdp_cases.TOL, name


def test_full_shard_across_simulated_hosts_matches_single_process():
    # Over hosts the all-gather takes comm's cross-host path, whose writes (torch
    # ops on the comm thread) must not invalidate the views saved for backward.
    assert spawn(fsdp_cases.run_parity, 2, args=(("FULL_SHARD", "SHARD_GRAD_OP"),), rank_env=hosts("a", "b"),
                 timeout=150) == [4, 4]
