"""DPO and KTO under a ParallelPlan: 3 steps of losses, grad norms and metrics as one process without a plan;
a run saved and resumed under the plan continues as the uninterrupted run."""

import plan_trainer_cases as tc
import pytest

pytestmark = [pytest.mark.distributed]
REL = 1e-4


@pytest.fixture(scope="module")
def tp2(world2_tp):
    """tp=2, 4 rows per step (the shared world-2 spawn of conftest.py)."""
    out, results = world2_tp
    return out, [r["preference"] for r in results]


def test_dpo_and_kto_under_tp2_match_one_process(tp2):
    out, results = tp2
    for i, (kind, kw) in enumerate(tc.CASES):
        want = tc.preference_run(kind, str(out / f"ref{i}"), 4, **dict(kw))
        for history in (r[0][i] for r in results):
            assert [e["step"] for e in history] == list(range(1, len(want) + 1))
            for got, ref in zip(history, want, strict=True):
                for key in ("loss", "grad_norm", "rewards/margins" if kind == "dpo" else "kl", "num_tokens"):
                    assert got[key] == pytest.approx(ref[key], rel=REL, abs=1e-7), (kind, kw, key, got["step"])


def test_resume_under_tp2_replays_the_run(tp2):
    out, results = tp2
    whole, resumed = results[0][0][0], results[0][1]
    assert [e["step"] for e in resumed] == [1, 2, 3, 4]  # the restored history, then the new steps
    for got, want in zip(resumed[2:], whole[2:], strict=True):
        for key in ("loss", "grad_norm", "rewards/margins", "num_tokens", "learning_rate"):
            assert got[key] == want[key], key  # same shards, same state, same order: bit for bit
    # The checkpoint's full model loads in one process; a different plan is refused by name.
    from safetensors.torch import load_file

    model = tc._gpt(38)
    model.load_state_dict(load_file(str(out / "0" / "checkpoint-4" / "model.safetensors")))
    with pytest.raises(ValueError, match="parallel: the checkpoint"):
        tc.preference_run("dpo", str(out / "other"), 4, max_steps=4, resume=str(out / "0" / "checkpoint-2"))


def test_unsupported_plans_are_refused_when_the_trainer_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"parallel\.pp"):
        tc.preference_run("dpo", str(tmp_path), 2, parallel={"pp": 2, "microbatches": 2})
    from shardkit.models.reward_head import GPTForSequenceClassification
    from shardkit.trainers import RewardConfig, RewardTrainer
    from shardkit.trainers.toy import char_tokenizer, toy_records

    reward_model = GPTForSequenceClassification(tc._gpt(38))
    with pytest.raises(ValueError, match="parallel: RewardTrainer is not supported"):
        RewardTrainer(reward_model, args=RewardConfig(output_dir=str(tmp_path), parallel={"tp": 2}),
                      train_dataset=toy_records("preference", 4), processing_class=char_tokenizer())
