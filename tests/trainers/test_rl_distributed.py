"""Rollouts from a model sharded over 2 ranks: the weights are gathered once per generation batch."""

import pytest
from shardkit.testing import spawn

from tests.trainers import rl_distributed_cases as cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def test_sharded_rollout_gathers_each_weight_group_once_and_matches_the_full_model():
    for result in spawn(cases.sharded_snapshot_rollout, 2, timeout=120):
        assert result["equal"]
        assert result["sharded_numel"] < result["full_numel"]  # really sharded
        # One gather per flat group for 10 new tokens (the forward hooks would gather per token).
        assert result["gathers"] == result["groups"] > 0
