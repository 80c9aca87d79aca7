"""ParallelPlan validation (before any process group) and the one-process path of parallelize()."""

import parallel_cases as pc
import pytest
from shardkit.parallel import ParallelPlan, bubble_formula, layer_split, parallelize
from shardkit.parallel.pipeline import stage_ids


@pytest.mark.parametrize(
    "kwargs, world, field",
    [
        ({"tp": 2, "pp": 2}, 8, "world size is 8"),
        ({"tp": 3}, 3, "ParallelPlan.tp"),  # 4 heads
        ({"pp": 5, "microbatches": 5}, 5, "ParallelPlan.pp"),  # 4 blocks
        (
            {
                "pp": 2,
                "pp_schedule": "interleaved_1f1b",
                "microbatches": 2,
                "stages_per_rank": 3,
            },
            2,
            "ParallelPlan.stages_per_rank",
        ),
        (
            {"pp": 4, "pp_schedule": "1f1b", "microbatches": 2},
            4,
            "ParallelPlan.microbatches",
        ),
        (
            {"pp": 2, "pp_schedule": "interleaved_1f1b", "microbatches": 3},
            2,
            "ParallelPlan.microbatches",
        ),
    ],
)
def test_bad_plans_raise_naming_the_field(kwargs, world, field):
    with pytest.raises(ValueError, match=field):
        ParallelPlan(**kwargs).validate(world_size=world, config=pc.tiny_config())


def test_bad_field_values_and_keys_raise():
    with pytest.raises(ValueError, match="ParallelPlan.tp"):
        ParallelPlan(tp=0)
    with pytest.raises(ValueError, match="ParallelPlan.pp_schedule"):
        ParallelPlan(pp_schedule="pipedream")
    with pytest.raises(TypeError, match="ParallelPlan.sequence_parallel"):
        ParallelPlan(sequence_parallel="yes")
    with pytest.raises(ValueError, match=r"unknown keys \['tensor_parallel'\]"):
        ParallelPlan.from_dict({"tensor_parallel": 2})
    with pytest.raises(TypeError):
        ParallelPlan(2)  # keyword-only


def test_tied_embeddings_refused_under_tp_and_pp():
    config = pc.tiny_config()
    config.tie_word_embeddings = True
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        ParallelPlan(tp=2).validate(world_size=2, config=config)


def test_validation_runs_before_any_process_group():
    # One process, no torch.distributed: a 2-rank plan fails on arithmetic, not on a missing group.
    with pytest.raises(ValueError, match="world size is 1"):
        parallelize(pc.tiny_gpt(), ParallelPlan(tp=2))


def test_gpt_gpipe_gets_gpipe_microbatch_rule_and_valid_plans_pass():
    ParallelPlan(pp=4, pp_schedule="gpipe", microbatches=1).validate(
        world_size=4, config=pc.tiny_config()
    )
    ParallelPlan(dp_replicate=2, dp_shard=2, tp=2, pp=2, microbatches=2).validate(
        world_size=16, config=pc.tiny_config()
    )


def test_split_and_bubble_arithmetic():
    assert layer_split(5, 2) == [[0, 1], [2, 3, 4]]
    assert layer_split(4, 4) == [[0], [1], [2], [3]]
    assert stage_ids(1, pp=2, virtual=2) == [1, 3]
    assert bubble_formula(4, 8) == pytest.approx(3 / 11)
    assert bubble_formula(4, 8, virtual=2) == pytest.approx(3 / 19)
    assert ParallelPlan(pp=2, pp_schedule="interleaved_1f1b").num_stages == 4
    assert ParallelPlan(pp=2, pp_schedule="1f1b").num_stages == 2


@pytest.mark.parametrize("kwargs", [{}, {"activation_checkpointing": True}])
def test_one_process_plan_matches_plain_training(kwargs):
    from shardkit import checkpointing, parallel

    pm = parallel.parallelize(pc.tiny_gpt(2), ParallelPlan(**kwargs))
    assert len(checkpointing.checkpointed(pm.modules[0])) == (2 if kwargs else 0)
    losses, norms, _ = pc.parallel_run(ParallelPlan(**kwargs), num_layers=2)
    ref_losses, ref_norms = pc.reference_run(2)
    assert losses == pytest.approx(ref_losses, rel=1e-6)
    assert norms == pytest.approx(ref_norms, rel=1e-6)


def test_parallel_memory_terms_scale_with_the_plan():
    from shardkit.memory.parallel_terms import in_flight_microbatches, parallel_estimate
    from shardkit.memory.spec import DecoderSpec

    spec = DecoderSpec(
        vocab=1024, hidden=256, layers=8, heads=8, kv_heads=4, intermediate=704
    )
    one = parallel_estimate(spec, ParallelPlan(), batch=4, seq_len=256)
    tp2 = parallel_estimate(spec, ParallelPlan(tp=2), batch=4, seq_len=256)
    tp2_nosp = parallel_estimate(
        spec, ParallelPlan(tp=2, sequence_parallel=False), batch=4, seq_len=256
    )
    assert (
        one["params"] / 2 < tp2["params"] < one["params"] / 2 * 1.01
    )  # replicated norms only
    assert tp2["activations"] < tp2_nosp["activations"] < one["activations"]
    assert (
        in_flight_microbatches(ParallelPlan(pp=4, pp_schedule="gpipe", microbatches=8))
        == 8
    )
    assert (
        in_flight_microbatches(ParallelPlan(pp=4, pp_schedule="1f1b", microbatches=8))
        == 4
    )
    assert (
        in_flight_microbatches(
            ParallelPlan(pp=4, pp_schedule="interleaved_1f1b", microbatches=8)
        )
        == 4 + 3 / 2
    )
    with pytest.raises(ValueError, match="optimizer"):
        parallel_estimate(spec, ParallelPlan(), batch=1, seq_len=8, optimizer="lion")
