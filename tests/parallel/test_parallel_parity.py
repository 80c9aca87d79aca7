"""shardkit.parallel on gloo: 5 steps of every layout against one process training the same GPT."""

import os

import parallel_cases as pc
import pytest
import torch
from shardkit.testing import spawn

pytestmark = [pytest.mark.distributed]
REL = 1e-4


def _close(got, want, what):
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert abs(g - w) <= REL * abs(w), f"{what} step {i}: {g} vs reference {w}"


def _check(results, plans, num_layers):
    from shardkit.memory.parallel_terms import rank_param_numel
    from shardkit.memory.spec import DecoderSpec
    from shardkit.parallel import ParallelPlan

    ref_losses, ref_norms = pc.reference_run(num_layers)
    c = pc.tiny_config(num_layers)
    spec = DecoderSpec(
        vocab=c.vocab_size,
        hidden=c.hidden_size,
        layers=num_layers,
        heads=c.num_heads,
        kv_heads=c.num_kv_heads,
        intermediate=c.intermediate_size,
    )
    for rank_results in results:  # every rank reports the global values
        for plan, (losses, norms, _) in zip(plans, rank_results, strict=True):
            _close(losses, ref_losses, f"{plan} loss")
            _close(norms, ref_norms, f"{plan} grad_norm")
    for i, kw in enumerate(
        plans
    ):  # the estimator's model-state term against what the fullest rank holds
        plan = ParallelPlan(**kw)
        measured = [r[i][2] for r in results]
        est = max(rank_param_numel(spec, plan, r) for r in range(plan.pp))
        assert max(m[0] for m in measured) == est, (kw, measured, est)
        assert max(m[1] for m in measured) == est, (kw, measured, est)


def test_world2_tp_pipeline_schedules_and_hf_llama_plan_match_one_process():
    plans = [
        {"tp": 2},
        {
            "tp": 2,
            "sequence_parallel": False,
            "loss_parallel": False,
            "activation_checkpointing": True,
        },
        {"pp": 2, "pp_schedule": "1f1b", "microbatches": 2},
        {"pp": 2, "pp_schedule": "gpipe", "microbatches": 2},
        {"pp": 2, "pp_schedule": "interleaved_1f1b", "microbatches": 2},
        {"pp": 2, "pp_schedule": "zero_bubble", "microbatches": 2},
    ]
    results = spawn(pc.world2_cases, 2, args=(plans, 4), timeout=180)
    _check([r[0] for r in results], plans, 4)
    # HF Llama under llama_tp_plan: logits and gradient norm as unparallelised, without and with SP.
    for _, llama in results:
        for diff, norm, ref_norm in llama:
            assert diff < 1e-5
            assert abs(norm - ref_norm) <= REL * ref_norm


def test_world4_tp_pp_dp_tp_and_fused_adamw_match_one_process():
    plans = [
        {"tp": 2, "pp": 2, "microbatches": 2},
        {"dp_shard": 2, "tp": 2},
        {"dp_replicate": 2, "tp": 2},
    ]
    results = spawn(pc.world4_cases, 4, args=(plans, 4), timeout=180)
    _check([r[0] for r in results], plans, 4)
    # shardkit's FusedAdamW on the FSDP2 x TP shards (_StridedShard placements) against torch AdamW.
    ref = pc.torch_adamw_losses()
    for _, fused in results:
        _close(fused, ref, "FusedAdamW dp_shard2 x tp2 loss")


def test_world8_dp_shard_tp_pp_matches_one_process():
    plans = [{"dp_shard": 2, "tp": 2, "pp": 2, "microbatches": 2}]
    _check(spawn(pc.run_plans, 8, args=(plans, 2), timeout=180), plans, 2)


def test_sequence_parallel_norm_grads_must_be_reduced_across_tp():
    """The silent bug: without the all-reduce the replicated SP norm weights drift apart across TP ranks."""
    (good_losses, good_w, bad_losses, bad_w), (_, good_w1, _, bad_w1) = spawn(
        pc.sp_norm_drift, 2, timeout=180
    )
    ref_losses, _ = pc.reference_run(2)
    _close(good_losses, ref_losses, "with reduction")
    for (
        name
    ) in good_w:  # with the reduction the two TP ranks hold the same norm weights
        assert good_w[name] == good_w1[name], name
    drift = max(
        float((torch.tensor(bad_w[n]) - torch.tensor(bad_w1[n])).abs().max())
        for n in bad_w
    )
    assert drift > 1e-4, (
        f"weights should drift without the reduction, max difference {drift}"
    )
    # Slowly: the loss moves less than the weights do in 5 steps, but both copies left the right path.
    off = max(
        float((torch.tensor(bad_w[n]) - torch.tensor(good_w[n])).abs().max())
        for n in bad_w
    )
    assert off > 1e-4, (
        f"weights without the reduction should leave the reference path, max difference {off}"
    )
    assert bad_losses != good_losses


def test_checkpoint_saved_under_tp2_loads_in_one_process(tmp_path):
    path = os.fspath(tmp_path / "model.safetensors")
    next_losses = spawn(pc.save_tp_checkpoint, 2, args=(path,), timeout=180)
    from safetensors.torch import load_file

    model = pc.tiny_gpt(2)
    model.load_state_dict(load_file(path))
    ids = pc.batch(2)
    logits = model(ids).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()
    )
    assert abs(float(loss) - next_losses[0]) <= REL * float(loss)
    assert next_losses[0] == next_losses[1]
