"""GRPO on 2 ranks: rollouts from the sharded model gather its weights once per generation batch, and a 2-rank
run (rewards normalised over the gathered groups, sharded reference) equals one process with the same global batch."""

import pytest
from shardkit.testing import spawn

from tests.trainers import rl_distributed_cases as cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def test_two_rank_grpo_equals_single_process_and_rollouts_gather_once(tmp_path):
    ranks = spawn(cases.run_all, 2, args=(str(tmp_path / "sharded"),), timeout=170)
    for result in ranks:
        snap = result["snapshot"]
        assert snap["equal"] and snap["sharded_numel"] < snap["full_numel"]  # same tokens, really sharded
        # One gather per flat group for 10 new tokens (the forward hooks would gather per token).
        assert snap["gathers"] == snap["groups"] > 0
    expected = cases.grpo_trainer(str(tmp_path / "single"), per_device=8).train().log_history
    assert "kl" in expected[0] and "clip_ratio/low_min" in expected[1]
    for result in ranks:
        history = result["grpo"]
        assert len(history) == len(expected) == 4
        for a, b in zip(history, expected):
            assert list(a) == list(b)
            for key, value in b.items():
                assert a[key] == pytest.approx(value, rel=1e-5, abs=1e-6), f"step {b['step']} {key}"
