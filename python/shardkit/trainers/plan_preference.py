"""DPO and KTO under a ``ParallelPlan`` without pipeline stages (tp, sequence parallel, dp_shard, dp_replicate).

The policy is laid out by ``shardkit.parallel.parallelize`` and called
through ``parallel.PlanCausalLM``, so the trainers' own ``compute_loss`` runs
unchanged on full (B, T, V) logits. The reference model is laid out the same
way (its own mesh over the same ranks, frozen, forward only), so each rank
holds 1 / (tp * dp_shard) of it, like the policy; with
``precompute_ref_log_probs`` every rank computes the values for all rows
before training and none is held.

Each step takes this data-parallel replica's ``per_device_train_batch_size``
rows (the TP ranks of a replica see the same rows), so one step sees the
global batch one process would see with ``dp * per_device_train_batch_size``.
The loss of a replica is the mean over its rows, and ``fully_shard`` averages
the gradients over the replicas. Logged ``loss`` and metrics are global (mean
over the replicas; the metrics' (sum, count) pairs reduced over them).

Scope, refused with a ValueError naming the field: ``parallel.pp`` > 1,
``gradient_accumulation_steps`` != 1, ``bf16``, evaluation during training.
Checkpoints and resuming as in ``plan_loop`` (``trainers/plan_checkpoint.py``).
"""

from __future__ import annotations

import time

import torch

from shardkit.trainers import plan_checkpoint
from shardkit.trainers.plan_loop import prepare_plan_run, replica_rows


def check(trainer, plan) -> None:
    """ValueError naming the field for what this loop does not do."""
    if plan.pp > 1:
        raise ValueError(
            f"parallel.pp: {type(trainer).__name__} needs pp = 1 under a ParallelPlan, got {plan.pp}: its loss "
            "needs each pair's summed log-probs on one stage, which the pipeline schedule does not hand back"
        )
    if trainer.args.eval_steps and trainer.eval_examples:
        raise ValueError("eval_steps: evaluation during training is not supported under a ParallelPlan yet")


def _layout_reference(trainer, plan, pm_policy):
    from shardkit import parallel

    ref = trainer.ref_model
    if ref is None:
        return None
    if not isinstance(ref, type(trainer.model)):
        raise TypeError(f"ref_model: the plan lays out a shardkit GPT, got {type(ref).__name__}")
    pm = parallel.parallelize(ref, plan)  # same plan: same shards of the reference on this rank
    lm = parallel.PlanCausalLM(pm).eval()
    for p in pm.parameters():
        p.requires_grad_(False)
    return lm


def train_preference_with_plan(trainer, plan, pm, replica: int, resume_from_checkpoint=None):
    """The DPO / KTO loop on the laid-out policy ``pm``; returns the trainer state."""
    from shardkit import parallel

    args = trainer.args
    lm = parallel.PlanCausalLM(pm)
    trainer.device = next(pm.parameters()).device
    trainer.ref_model = _layout_reference(trainer, plan, pm)
    if args.precompute_ref_log_probs and resume_from_checkpoint is None:  # (a checkpoint holds the values)
        if trainer.ref_model is None:  # the policy before its first update is the reference
            trainer.ref_model = lm
        trainer.before_train()  # computes the values, then drops the reference
    per_epoch, total, log = prepare_plan_run(trainer, plan, pm, resume_from_checkpoint)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    lm.train()
    try:
        while trainer.state.global_step < total:
            started = time.perf_counter()
            rows = replica_rows(trainer, plan, replica, per_epoch)
            host = trainer.collate([trainer.train_examples[i] for i in rows])
            loss = trainer.compute_loss(lm, trainer.to_device(host), None)
            trainer._metrics.end_micro_batch()
            loss.backward()
            parallel.reduce_partial_grads(pm.parameters())
            grad_norm = float(parallel.clip_grad_norm_(pm, args.max_grad_norm))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            pm.zero_grad()
            totals = torch.tensor([float(loss.detach()), float(trainer.count_tokens(host))], dtype=torch.float64)
            lm.all_reduce_(totals)  # [sum of replica losses, global tokens]
            trainer.state.num_tokens += int(totals[1])
            trainer.state.global_step += 1
            trainer.state.train_seconds += time.perf_counter() - started
            done = trainer.state.global_step
            if done % args.logging_steps == 0 or done == total:
                entry = {"loss": float(totals[0]) / plan.dp, "grad_norm": grad_norm, "learning_rate": lr,
                         **trainer._metrics.pop(lm.all_reduce_, trainer.derive_metrics),
                         "num_tokens": trainer.state.num_tokens, "epoch": done / per_epoch, "step": done}
                trainer.state.log_history.append(entry)
                log.write(entry)
            if args.save_steps and done % args.save_steps == 0 and done != total:
                plan_checkpoint.save(trainer, pm)
            log.advance()
        plan_checkpoint.save(trainer, pm)
    finally:
        log.close()
    return trainer.state
