"""The training loop under a ``ParallelPlan`` (``args.parallel``): TP, PP and sharding on one mesh.

``BaseTrainer.train`` hands over here when the config has a ``[parallel]``
table. The model is laid out by ``shardkit.parallel.parallelize``; each step
runs ``forward_backward`` (the pipeline schedule when pp > 1) on this
data-parallel replica's rows, clips to the global gradient norm over the whole
mesh and steps the optimizer over the local (DTensor) shards.

``per_device_train_batch_size`` counts per data-parallel replica: the TP and
PP ranks of one replica see the same rows, so a global micro-batch is
``dp_replicate * dp_shard * per_device_train_batch_size`` examples. The
logged ``loss`` and ``grad_norm`` are global, as without a plan.

DPO and KTO (pp = 1) run their own loss through ``trainers/plan_preference.py``.

Scope: next-token trainers (pretrain, SFT) on a shardkit GPT, one
micro-batch per step from the data loader (``gradient_accumulation_steps=1``;
the pipeline's ``microbatches`` split it). Positions are 0..T-1, so packed
rows (documents restarting positions) are refused; right padding is exact.
Checkpoints (``save_steps`` and the last step; ``trainers/plan_checkpoint.py``)
hold the full model (``model.safetensors``, loadable by one process) and each
rank's shards and optimizer state, from which ``resume_from_checkpoint``
continues the run exactly under the same plan.
"""

from __future__ import annotations

import math
import os
import time

import torch
import torch.distributed as dist

from shardkit.trainers import plan_checkpoint
from shardkit.trainers.metrics_log import MetricsLog
from shardkit.trainers.setup import build_optimizer, lr_lambda


def check_trainer(trainer, plan) -> None:
    """Refuse (ValueError naming the field) a trainer or setting the plan's loops do not run.

    Called when a trainer with ``args.parallel`` is built, and again by ``train``."""
    from shardkit.trainers.dpo import DPOTrainer
    from shardkit.trainers.kto import KTOTrainer
    from shardkit.trainers.sft import SFTTrainer

    if not isinstance(trainer, (SFTTrainer, DPOTrainer, KTOTrainer)):
        raise ValueError(
            f"parallel: {type(trainer).__name__} is not supported under a ParallelPlan yet "
            "(pretrain, sft, dpo and kto are; its loop and model are not laid out by a plan); "
            "remove the [parallel] table"
        )
    if isinstance(trainer, (DPOTrainer, KTOTrainer)):
        from shardkit.trainers.plan_preference import check

        check(trainer, plan)


def _check(trainer, plan, resume_from_checkpoint) -> None:
    from shardkit.models import GPT

    check_trainer(trainer, plan)
    if not isinstance(trainer.model, GPT):
        raise TypeError(
            f"args.parallel: the plan lays out a shardkit GPT, got {type(trainer.model).__name__}"
        )
    if trainer.args.gradient_accumulation_steps != 1:
        raise ValueError(
            "args.gradient_accumulation_steps: must be 1 under a ParallelPlan; use parallel.microbatches"
        )
    if trainer.args.bf16:
        raise ValueError("args.bf16: not supported under a ParallelPlan yet")


def _is_sft(trainer) -> bool:
    from shardkit.trainers.sft import SFTTrainer

    return isinstance(trainer, SFTTrainer)


def _join(plan) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def _replica(pm) -> int:
    if pm.mesh is None:
        return 0
    return pm.mesh.get_local_rank(
        "dp_replicate"
    ) * pm.plan.dp_shard + pm.mesh.get_local_rank("dp_shard")


def _input_and_labels(batch: dict, plan) -> tuple[torch.Tensor, torch.Tensor]:
    ids, labels = batch["input_ids"], batch["labels"]  # (B, T)
    pos = batch.get("position_ids")
    if pos is not None and not torch.equal(
        pos, torch.arange(ids.shape[1]).expand_as(pos)
    ):
        raise ValueError(
            "packing: packed rows restart positions per document, which the pipeline stages do not "
            "take; set packing = false under a ParallelPlan"
        )
    # Sequence parallelism cuts T into tp pieces: right-pad with ignored positions (causal: exact).
    pad = (-ids.shape[1]) % plan.tp
    if pad:
        ids = torch.nn.functional.pad(ids, (0, pad), value=0)
        labels = torch.nn.functional.pad(labels, (0, pad), value=-100)
    return ids, labels


def train_with_plan(trainer, resume_from_checkpoint=None):
    """``trainer.train()`` under ``ParallelPlan(**trainer.args.parallel)``; returns the trainer state."""
    from shardkit import parallel

    args = trainer.args
    plan = parallel.ParallelPlan.from_dict(args.parallel)
    _check(trainer, plan, resume_from_checkpoint)
    plan.validate(
        world_size=int(os.environ.get("WORLD_SIZE", "1")), config=trainer.model.config
    )
    _join(plan)
    pm = parallel.parallelize(trainer.model, plan)
    trainer.parallel_model = pm
    if not _is_sft(trainer):  # DPO, KTO: their own compute_loss through parallel.PlanCausalLM
        from shardkit.trainers.plan_preference import train_preference_with_plan

        return train_preference_with_plan(trainer, plan, pm, _replica(pm), resume_from_checkpoint)
    per_epoch, total, log = prepare_plan_run(trainer, plan, pm, resume_from_checkpoint)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    replica = _replica(pm)
    pm.train()
    try:
        while trainer.state.global_step < total:
            started = time.perf_counter()
            rows = replica_rows(trainer, plan, replica, per_epoch)
            batch = trainer.collate([trainer.train_examples[i] for i in rows])
            ids, labels = _input_and_labels(batch, plan)
            loss = float(pm.forward_backward(ids, labels))
            grad_norm = float(parallel.clip_grad_norm_(pm, args.max_grad_norm))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            pm.zero_grad()
            tokens = torch.tensor([float(trainer.count_tokens(batch))])
            if (
                pm.mesh is not None and plan.dp > 1
            ):  # every replica's tokens, counted once
                for axis in ("dp_replicate", "dp_shard"):
                    dist.all_reduce(tokens, group=pm.mesh.get_group(axis))
            trainer.state.num_tokens += int(tokens)
            trainer.state.global_step += 1
            trainer.state.train_seconds += time.perf_counter() - started
            done = trainer.state.global_step
            if done % args.logging_steps == 0 or done == total:
                entry = {
                    "loss": loss,
                    "grad_norm": grad_norm,
                    "learning_rate": lr,
                    "num_tokens": trainer.state.num_tokens,
                    "epoch": done / per_epoch,
                    "step": done,
                }
                trainer.state.log_history.append(entry)
                log.write(entry)
            if args.save_steps and done % args.save_steps == 0 and done != total:
                plan_checkpoint.save(trainer, pm)
            log.advance()
        plan_checkpoint.save(trainer, pm)
    finally:
        log.close()
    return trainer.state


def prepare_plan_run(trainer, plan, pm, resume_from_checkpoint=None):
    """What every loop under a plan sets up first: ``(steps per epoch, total steps, metrics log)``.

    Sets ``trainer.optimizer`` / ``trainer.lr_scheduler`` over ``pm``'s trainable
    parameters and loads ``resume_from_checkpoint`` (a plan checkpoint) into them.
    """
    args = trainer.args
    per_epoch = math.ceil(len(trainer.train_examples) / (args.per_device_train_batch_size * plan.dp))
    total = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * per_epoch))
    optimizer = build_optimizer([p for p in pm.parameters() if p.requires_grad], args)
    trainer.optimizer = optimizer
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args, total))
    if resume_from_checkpoint is not None:
        plan_checkpoint.load(trainer, pm, resume_from_checkpoint)
    rank = dist.get_rank() if dist.is_initialized() else 0
    log = MetricsLog(args, total, initial=trainer.state.global_step, enabled=rank == 0,
                     history=trainer.state.log_history)
    return per_epoch, total, log


def replica_rows(trainer, plan, replica: int, per_epoch: int) -> list[int]:
    """The example indices data-parallel ``replica`` trains in the current step (its TP/PP ranks share them)."""
    bs, step = trainer.args.per_device_train_batch_size, trainer.state.global_step
    epoch, j = divmod(step, per_epoch)
    rows = trainer.epoch_order(epoch)[j * bs * plan.dp:(j + 1) * bs * plan.dp][replica * bs:(replica + 1) * bs]
    if not rows:
        raise ValueError(f"data-parallel replica {replica} has no examples in step {step}: the dataset "
                         f"({len(trainer.train_examples)} examples) leaves a last batch smaller than {plan.dp} replicas")
    return rows
