"""Sharded training equals single-process training on the concatenated batch,
at world sizes 2, 3 and 4, for every strategy, with AdamW and SGD."""

import pytest

from shardkit.testing import spawn

import fsdp_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_strategy_matches_single_process(world):
    assert spawn(fsdp_cases.run_parity, world, timeout=150) == [6] * world


@pytest.mark.parametrize("world", [2, 3])
def test_frozen_tied_no_sync_and_clipping_match_single_process(world):
    assert all(spawn(fsdp_cases.run_features, world, timeout=150))


def test_bf16_compute_with_fp32_reduce_tracks_fp32_training():
    assert all(spawn(fsdp_cases.run_mixed_precision, 2, timeout=120))


@pytest.mark.parametrize("world", [1, 3])
def test_full_state_dict_save_and_load(world, tmp_path):
    assert all(spawn(fsdp_cases.run_full_state_roundtrip, world, args=(str(tmp_path),), timeout=120))


@pytest.mark.parametrize("world", [2, 4])
def test_full_shard_matches_torch_fsdp2(world):
    assert all(spawn(fsdp_cases.run_against_torch_fsdp2, world, timeout=150))


@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_one_nth_and_freed_after_use(world):
    assert all(spawn(fsdp_cases.run_memory_layout, world, timeout=120))
