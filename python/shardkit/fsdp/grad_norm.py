"""``clip_grad_norm_`` over the gradient shards of a sharded model."""

from __future__ import annotations

import math

import torch
from torch import nn

from shardkit.fsdp.sharded_model import get_state


def clip_grad_norm_(model: nn.Module, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
    """Clip the gradients of a sharded model so their global norm is at most ``max_norm``.

    The norm is that of the full (unsharded) gradients, as ``torch.nn.utils.clip_grad_norm_``
    computes it on an unsharded model; padding contributes zeros. Under HYBRID
    every host holds the same gradient shards, so the shards are combined over
    the host's ranks only (counting each element once). Returns that norm
    (fp32 scalar), taken before clipping. Collective: every rank must call it.
    """
    state = get_state(model)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not max_norm > 0:
        raise ValueError(f"max_norm: expected a positive number, got {max_norm}")
    if norm_type != 2.0 and norm_type != math.inf:
        raise ValueError(f"norm_type: expected 2.0 or inf, got {norm_type}")
    grads = [g.shard.grad for g in state.groups if g.shard.grad is not None]
    # Shards of sharded groups are disjoint (combine over ranks); NO_SHARD grads are replicas.
    sharded = [g.shard.grad for g in state.groups if g.shard.grad is not None and g.shard_world > 1]
    replicated = [g.shard.grad for g in state.groups if g.shard.grad is not None and g.shard_world == 1]
    # Every rank takes part in the all-reduce, or none does (shard_world is the same on all ranks).
    combine = any(g.shard_world > 1 for g in state.groups)
    if norm_type == math.inf:
        local = torch.stack([x.detach().abs().max().float() for x in sharded]
                            or [torch.zeros((), device=state.device)]).max().reshape(1)
        if combine:
            state.shard_transport.all_reduce(local, "max")
        total = torch.stack([local[0]] + [x.detach().abs().max().float() for x in replicated]).max()
    else:
        local = torch.zeros(1, dtype=torch.float64, device=state.device)
        for x in sharded:
            local += x.detach().double().pow(2).sum()
        if combine:
            state.shard_transport.all_reduce(local, "sum")
        for x in replicated:
            local += x.detach().double().pow(2).sum()
        total = local[0].sqrt().float()
    coef = max_norm / (float(total) + 1e-6)
    if coef < 1.0:
        for x in grads:
            x.mul_(coef)
    return total
