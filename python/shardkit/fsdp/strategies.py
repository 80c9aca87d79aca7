"""The sharding strategies, named once for ``fsdp.shard``, the memory estimator and the CLI."""

from __future__ import annotations

from typing import Any

#: From least to most sharded (HYBRID: FULL_SHARD within a host, replicated across hosts).
STRATEGIES = ("NO_SHARD", "SHARD_GRAD_OP", "FULL_SHARD", "HYBRID")

#: The names users know from DeepSpeed and torch FSDP1.
ALIASES = {"DDP": "NO_SHARD", "ZERO2": "SHARD_GRAD_OP", "ZERO3": "FULL_SHARD", "HYBRID_SHARD": "HYBRID"}


def strategy_name(strategy: Any) -> str:
    """The canonical name of ``strategy``: one of STRATEGIES, an alias (any case, ``zero-3``), or an enum member."""
    raw = getattr(strategy, "name", strategy)
    key = str(raw).strip().upper().replace("-", "_").replace(" ", "_")
    key = {"ZERO_2": "ZERO2", "ZERO_3": "ZERO3"}.get(key, key)
    name = ALIASES.get(key, key)
    if name not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)} (or {', '.join(ALIASES)}), "
                         f"got {strategy!r}")
    return name
