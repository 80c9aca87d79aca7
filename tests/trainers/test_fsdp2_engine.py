"""``engine="fsdp2"`` on 2 gloo ranks trains like one process on the same global batches, and resumes exactly
from its own (full-state) checkpoint."""

import pytest
from shardkit.testing import spawn

from tests.trainers import fsdp2_cases as cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]
pytest.importorskip("transformers")


def test_fsdp2_engine_matches_one_process_and_resumes_exactly(tmp_path):
    ranks = spawn(cases.run_fsdp2, 2, args=(str(tmp_path / "fsdp2"),), timeout=170)
    single = cases.sft_trainer(str(tmp_path / "single"), per_device_batch=4, engine="shardkit").train().log_history
    assert [e["step"] for e in single] == [1, 2, 3, 4] and single[-1]["loss"] < single[0]["loss"]
    for rank, result in enumerate(ranks):
        assert result["sharded"] and result["optimizer"] == "FusedAdamW", result
        for ours, expected in zip(result["history"], single, strict=True):
            assert ours["num_tokens"] == expected["num_tokens"] and ours["learning_rate"] == expected["learning_rate"]
            # Summation order differs across ranks (reduce-scatter, split batch): rounding-level only.
            for key in ("loss", "grad_norm", "entropy", "mean_token_accuracy"):
                assert ours[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (rank, ours["step"], key)
        # Resumed from checkpoint-2: steps 3 and 4 as the uninterrupted run logged them (step 4 needs the restored
        # AdamW moments, step 3 the restored weights).
        assert result["resumed"] == result["history"], rank
