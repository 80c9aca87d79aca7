"""Activation checkpointing on torch autograd: keep a block's inputs, recompute the rest.

    from shardkit import checkpointing
    checkpointing.apply(model, "every_block")            # or EveryKth(2), or:
    checkpointing.apply(model, checkpointing.MemoryBudget(2**30, example_args=(ids, labels)))

Blocks default to the children of the model's first ``nn.ModuleList`` (the
layer stack); pass ``blocks=`` classes or a ``(name, module) -> bool`` callable
otherwise. Recompute is non-reentrant ``torch.utils.checkpoint``: dropout
sees the same RNG state (identical gradients) and CPU/GPU autocast is
re-entered as it was in forward. ``offload=True`` moves the tensors the
blocks save to pinned CPU memory; it only acts on accelerator tensors and is
a documented no-op on CPU.

Composition (DESIGN.md order: checkpointing, then compile, then sharding):
the module is changed in place (its class gains a checkpointing ``__call__``),
names and state-dict keys stay the same, and recompute re-enters
``Module.__call__``, so the all-gather hooks a later ``shard()`` registers on
the block run again during recompute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from shardkit.checkpointing.blocks import find_blocks
from shardkit.checkpointing.budget import BlockProfile, choose_within_budget, profile_blocks
from shardkit.memory.checkpoint_policy import (
    EveryBlock,
    EveryKth,
    MemoryBudget,
    NoCheckpointing,
    parse_policy,
    static_selection,
)
from shardkit.checkpointing.wrap import BlockConfig, config_of, unwrap, wrap


@dataclass(frozen=True)
class CheckpointPlan:
    """Which blocks recompute; from :func:`plan`, accepted by :func:`apply`."""

    block_names: tuple[str, ...]  # every block, in model order
    checkpointed: tuple[str, ...]  # the ones that recompute
    profiles: tuple[BlockProfile, ...] | None = None  # measured, for MemoryBudget plans
    predicted_saved_bytes: int | None = None  # saved bytes per forward under this plan (MemoryBudget)


def plan(model: nn.Module, policy: Any = "every_block", *, blocks: Any = None) -> CheckpointPlan:
    """Decide which blocks to checkpoint, without changing the model.

    ``MemoryBudget`` runs one probe forward on its example inputs (grad on,
    RNG restored after) to measure each block's saved bytes and FLOPs.
    """
    found = find_blocks(model, blocks)
    if any(config_of(module) is not None for _, module in found):
        raise ValueError("model: checkpointing is already applied; call shardkit.checkpointing.remove(model) first")
    names = tuple(name for name, _ in found)
    policy = parse_policy(policy)
    if not isinstance(policy, MemoryBudget):
        return CheckpointPlan(names, tuple(names[i] for i in static_selection(policy, len(found))))
    profile = profile_blocks(model, found, policy.example_args, policy.example_kwargs)
    chosen, predicted = choose_within_budget(profile, policy.max_bytes)
    return CheckpointPlan(names, tuple(names[i] for i in chosen), profile.blocks, predicted)


def apply(model: nn.Module, policy: Any = "every_block", *, blocks: Any = None, offload: bool = False) -> nn.Module:
    """Checkpoint the blocks ``policy`` selects, in place; returns ``model``.

    ``policy``: ``"every_block"``, ``"none"``, ``"every_<k>"`` or an int k
    (blocks 0, k, 2k, ...), a policy object, or a :class:`CheckpointPlan`
    (whose block names are looked up in ``model``; ``blocks`` is then unused).
    """
    if not isinstance(offload, bool):
        raise TypeError(f"offload: expected a bool, got {offload!r}")
    chosen = policy if isinstance(policy, CheckpointPlan) else plan(model, policy, blocks=blocks)
    try:
        modules = {name: model.get_submodule(name) for name in chosen.block_names}
    except AttributeError as exc:
        raise ValueError(f"policy: the CheckpointPlan names a block this model lacks: {exc}") from None
    if any(config_of(module) is not None for module in modules.values()):
        raise ValueError("model: checkpointing is already applied; call shardkit.checkpointing.remove(model) first")
    for name, module in modules.items():
        recompute = name in chosen.checkpointed
        if recompute or offload:
            wrap(module, BlockConfig(recompute=recompute, offload=offload))
    return model


def remove(model: nn.Module) -> nn.Module:
    """Turn checkpointing off everywhere in ``model``, in place; returns ``model``."""
    for module in model.modules():
        unwrap(module)
    return model


def checkpointed(model: nn.Module) -> list[str]:
    """Names of the modules that currently recompute in backward."""
    return [name for name, module in model.named_modules() if (config := config_of(module)) and config.recompute]


__all__ = [
    "BlockProfile",
    "CheckpointPlan",
    "EveryBlock",
    "EveryKth",
    "MemoryBudget",
    "NoCheckpointing",
    "apply",
    "checkpointed",
    "plan",
    "remove",
]
