"""Checkpointing policies: which blocks recompute their activations in backward.

The policies are plain descriptions, so they live below both their users:
``shardkit.memory.estimate`` prices them and ``shardkit.checkpointing``
(which re-exports them) applies them, measuring with ``shardkit.memory``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NoCheckpointing:
    """Keep every block's activations (the default of plain torch)."""


@dataclass(frozen=True)
class EveryBlock:
    """Recompute every block: each keeps only its input."""


@dataclass(frozen=True)
class EveryKth:
    """Recompute blocks 0, k, 2k, ...: ``ceil(num_blocks / k)`` of them."""

    k: int  # stride between checkpointed blocks; 1 is every block

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k: expected a positive int, got {self.k!r}")


@dataclass(frozen=True)
class MemoryBudget:
    """Recompute the fewest FLOPs that bring saved activations under ``max_bytes``.

    One probe forward on ``example_args``/``example_kwargs`` (a batch of the
    training shape) measures each block's saved bytes with saved-tensor hooks
    and its FLOPs with ``FlopCounterMode``; blocks are then checkpointed in
    order of bytes saved per FLOP recomputed until the total fits.
    """

    max_bytes: int  # budget for all bytes autograd saves in one forward
    example_args: tuple = ()  # positional inputs of the probe forward
    example_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword inputs of the probe forward

    def __post_init__(self) -> None:
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes < 0:
            raise ValueError(f"max_bytes: expected a non-negative int, got {self.max_bytes!r}")
        if not isinstance(self.example_args, tuple):
            raise TypeError(f"example_args: expected a tuple of probe inputs, got {type(self.example_args).__name__}")
        if not isinstance(self.example_kwargs, dict):
            raise TypeError(f"example_kwargs: expected a dict, got {type(self.example_kwargs).__name__}")


Policy = NoCheckpointing | EveryBlock | EveryKth | MemoryBudget

_NAMED = {"none": NoCheckpointing(), "every_block": EveryBlock(), "all": EveryBlock()}


def parse_policy(policy: Any) -> Policy:
    """Accept a policy object, ``"none"``, ``"every_block"``, ``"every_<k>"`` or an int k."""
    if isinstance(policy, (NoCheckpointing, EveryBlock, EveryKth, MemoryBudget)):
        return policy
    if isinstance(policy, int) and not isinstance(policy, bool):
        return EveryKth(policy)
    if isinstance(policy, str):
        name = policy.strip().lower().replace("-", "_")
        if name in _NAMED:
            return _NAMED[name]
        if name.startswith("every_") and name[len("every_") :].isdigit():
            return EveryKth(int(name[len("every_") :]))
    raise ValueError(
        f"policy: expected 'none', 'every_block', 'every_<k>', an int k, EveryKth(k) or MemoryBudget(...), got {policy!r}"
    )


def static_selection(policy: Policy, num_blocks: int) -> list[int]:
    """Indices of the blocks a policy checkpoints, for policies that need no probe."""
    if isinstance(policy, NoCheckpointing):
        return []
    if isinstance(policy, EveryBlock):
        return list(range(num_blocks))
    if isinstance(policy, EveryKth):
        return list(range(0, num_blocks, policy.k))
    raise ValueError("policy: MemoryBudget picks blocks from a probe forward; use shardkit.checkpointing.plan")


def policy_label(policy: Policy) -> str:
    """Short name for tables and JSON: none, every_block, every_<k>, budget_<bytes>."""
    if isinstance(policy, NoCheckpointing):
        return "none"
    if isinstance(policy, EveryBlock):
        return "every_block"
    if isinstance(policy, EveryKth):
        return f"every_{policy.k}"
    return f"budget_{policy.max_bytes}"
