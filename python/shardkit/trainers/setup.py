"""Preparing the model and the optimizer: the one place sharding plugs in.

``prepare_model_and_optimizer`` is what every trainer calls: dtype cast,
then, when several ranks run (``WORLD_SIZE`` > 1, e.g. under
``shardkit train --nproc N``), ``shardkit.fsdp.shard(model)`` with the
model's blocks as units (after activation checkpointing and compile,
DESIGN.md's fixed composition order), then optimizer and scheduler over
the parameters that remain (the flat shards when sharded).
"""

from __future__ import annotations

import copy
import math
import os

import torch

from shardkit.trainers.config import TrainingConfig
from shardkit.trainers.device import place_model


def build_optimizer(params: list[torch.nn.Parameter], args: TrainingConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``args.optim`` over ``params``."""
    if not params:
        raise ValueError("the model has no trainable parameters")
    if args.optim == "sgd":
        return torch.optim.SGD(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                  weight_decay=args.weight_decay)
    if args.optim == "adamw_torch":
        return torch.optim.AdamW(params, **kwargs)
    try:
        from shardkit.optim import FusedAdamW
    except ImportError as exc:
        raise ImportError(f"optim='adamw_fused' needs shardkit.optim.FusedAdamW ({exc}); "
                          "set optim='adamw_torch' to use torch.optim.AdamW") from None
    return FusedAdamW(params, **kwargs)


def lr_lambda(args: TrainingConfig, total_steps: int):
    """The LR multiplier at step s (0-based), as transformers' schedulers compute it."""
    warmup, kind = args.warmup_steps, args.lr_scheduler_type

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        if step < warmup:
            return step / max(1, warmup)
        if kind == "constant_with_warmup":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))  # cosine

    return factor


def data_parallel_world() -> int:
    """Ranks training together: the joined group's size, else ``WORLD_SIZE`` (torchrun), else 1."""
    from shardkit import comm

    if comm.is_initialized():
        return comm.get_group().world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def shard_for_data_parallel(model: torch.nn.Module, engine: str = "auto",
                            device: torch.device | None = None) -> torch.nn.Module:
    """FULL_SHARD ``model`` over all ranks, one unit per block: ``shardkit.fsdp.shard`` (joining
    ``shardkit.comm`` if needed on CPU; on CUDA NCCL over torch's default group, joined with
    ``cpu:gloo,cuda:nccl`` if needed) or, with ``engine="fsdp2"``, torch's ``fully_shard``."""
    from shardkit import comm, fsdp
    from shardkit.checkpointing.blocks import find_blocks

    from shardkit.trainers import fsdp2_engine

    device = device or torch.device("cpu")
    if fsdp2_engine.resolve_engine(engine, device) == "fsdp2":
        return fsdp2_engine.shard_fsdp2(model, device)

    if device.type == "cuda":
        fsdp2_engine.init_process_group()  # shard() then picks its "nccl" transport for the CUDA parameters
    elif not comm.is_initialized():
        comm.init()
    try:
        block_ids = {id(m) for _, m in find_blocks(model)}
    except ValueError:
        block_ids = set()  # no layer stack: the whole model is one unit
    units = (lambda m: id(m) in block_ids) if block_ids else None
    return fsdp.shard(model, units=units, strategy="FULL_SHARD")


def prepare_model_and_optimizer(model: torch.nn.Module, args: TrainingConfig, total_steps: int,
                                device: torch.device | None = None):
    """(model, optimizer, scheduler) ready to train; on ``device`` and sharded over the ranks when there are several.

    A model already returned by ``shardkit.fsdp.shard()`` (your own units,
    strategy or mixed-precision policy) is used as it is, where it is.
    """
    from shardkit import fsdp

    if fsdp.is_sharded(model):
        if args.bf16:
            raise ValueError("args.bf16: the model is already sharded; cast it to bfloat16 before shard(), "
                             "or choose the compute dtype with shard(mixed_precision=...)")
    else:
        if device is not None:
            model = place_model(model, device)
        if args.bf16:
            model = model.to(torch.bfloat16)
        if data_parallel_world() > 1:
            model = shard_for_data_parallel(model, args.engine, device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args, total_steps))
    return model, optimizer, scheduler


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0, as TRL does for preference training (policy and reference must agree)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def freeze_reference(model: torch.nn.Module, args: TrainingConfig) -> torch.nn.Module:
    """A frozen, eval-mode reference model (``PreferenceTrainer`` shards it like the policy on several ranks)."""
    if args.bf16:
        model = model.to(torch.bfloat16)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reference_model(model: torch.nn.Module, ref_model: torch.nn.Module | None, args) -> torch.nn.Module | None:
    """The frozen reference of a preference trainer (DPO, KTO).

    Dropout is switched off in the policy and the reference when
    ``args.disable_dropout``; without ``ref_model`` a copy of the initial
    policy serves, unless ``args.precompute_ref_log_probs`` means none is held.
    """
    if args.disable_dropout:
        disable_dropout(model)
        if ref_model is not None:
            disable_dropout(ref_model)
    if ref_model is None and not args.precompute_ref_log_probs:
        from shardkit import fsdp

        if fsdp.is_sharded(model):
            raise ValueError("ref_model: the policy is already sharded, so it cannot be copied as the reference; "
                             "pass ref_model (unsharded, or sharded like the policy) or precompute_ref_log_probs=True")
        ref_model = copy.deepcopy(model)
    return None if ref_model is None else freeze_reference(ref_model, args)

