"""DPO and KTO under a ParallelPlan: 3 steps of losses, grad norms and metrics as one process without a plan."""

import plan_trainer_cases as tc
import pytest
from shardkit.testing import spawn

pytestmark = [pytest.mark.distributed]
REL = 1e-4


def test_dpo_and_kto_under_tp2_match_one_process(tmp_path):
    results = spawn(tc.plan_cases, 2, args=(str(tmp_path), {"tp": 2}, 4), timeout=240)
    for i, (kind, kw) in enumerate(tc.CASES):
        want = tc.preference_run(kind, str(tmp_path / f"ref{i}"), 4, **dict(kw))
        for history in (r[i] for r in results):
            assert [e["step"] for e in history] == list(range(1, tc.STEPS + 1))
            for got, ref in zip(history, want, strict=True):
                for key in ("loss", "grad_norm", "rewards/margins" if kind == "dpo" else "kl", "num_tokens"):
                    assert got[key] == pytest.approx(ref[key], rel=REL, abs=1e-7), (kind, kw, key, got["step"])


def test_unsupported_plans_are_refused_when_the_trainer_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"parallel\.pp"):
        tc.preference_run("dpo", str(tmp_path), 2, parallel={"pp": 2, "microbatches": 2})
