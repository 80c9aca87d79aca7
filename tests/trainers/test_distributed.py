"""DPO and KTO on 2 ranks (FULL_SHARD, the reference sharded too) equal the single-process run on the same
global batches, step for step and metric for metric; a 2-rank resume equals the uninterrupted 2-rank run."""

import json
import os

import pytest
import torch

from shardkit.testing import spawn
from tests.trainers import distributed_cases as cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]
pytest.importorskip("transformers")

# Counts and fractions of examples are the same sums over the same rows: exact.
EXACT = {"step", "epoch", "num_tokens", "rewards/accuracies", "learning_rate"}


def assert_same_logs(ours: list[dict], expected: list[dict], what: str) -> None:
    assert len(ours) == len(expected) > 0, what
    for a, b in zip(ours, expected):
        assert list(a) == list(b), f"{what} step {b['step']}: keys {list(a)} != {list(b)}"
        for key, value in b.items():
            if key in EXACT:
                assert a[key] == value, f"{what} step {b['step']} {key}: {a[key]} != {value}"
            else:
                # Summation order differs across ranks: rounding-level differences only. Rewards are
                # beta * (differences of fp32 log-probs near -35, whose ulp is 4e-6): abs 1e-6 for those near 0.
                assert a[key] == pytest.approx(value, rel=1e-5, abs=1e-6), \
                    f"{what} step {b['step']} {key}: {a[key]} != {value}"


def test_two_rank_dpo_and_kto_equal_single_process_with_a_sharded_reference(tmp_path):
    ranks = spawn(cases.run_preference_cases, 2, args=(str(tmp_path / "sharded"),), timeout=170)
    for name, (kind, overrides) in cases.CASES.items():
        single = cases.preference_trainer(kind, str(tmp_path / "single" / name), per_device_batch=4, **overrides)
        expected = single.train().log_history
        assert any("eval_loss" in e for e in expected) and "rewards/chosen" in expected[0], name
        for rank, result in enumerate(ranks):
            assert_same_logs(result[name]["history"], expected, f"{name} rank {rank}")
            if overrides.get("precompute_ref_log_probs"):
                assert not result[name]["ref_model"], f"{name}: a reference model is still held after precomputing"
                assert result[name]["ref_freed"], f"{name}: the (sharded) reference model was not freed"
                continue
            r = result[name]
            assert r["ref_model"] and r["strategy"] == "FULL_SHARD" and r["frozen"] and r["all_freed"], (name, r)
            # Each rank holds half of the reference (plus at most a padding element per unit).
            assert 0.5 <= r["ref_bytes"] / r["full_bytes"] <= 0.505, (name, r["ref_bytes"], r["full_bytes"])


def test_two_rank_resume_equals_uninterrupted_two_rank_run(tmp_path):
    ranks = spawn(cases.run_dpo_resume, 2, args=(str(tmp_path),), timeout=170)
    full_history, resumed_history, (full_params, resumed_params), _ = ranks[0]
    assert all(rng_restored for *_, rng_restored in ranks), "a rank did not get its own RNG state back"
    assert [e["step"] for e in full_history] == [1, 2, 3, 4]
    assert resumed_history == full_history
    for name, value in full_params.items():
        assert torch.equal(torch.from_numpy(resumed_params[name]), torch.from_numpy(value)), name
    # Only rank 0 writes the metrics: one line per logged entry, not one per rank.
    assert len((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()) == 4
    # The resumed run's file is its whole history: the restored entries, then the new ones.
    resumed_lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in resumed_lines] == resumed_history
    assert os.path.isfile(tmp_path / "full" / "checkpoint-2" / "shard-00001-of-00002.safetensors")
