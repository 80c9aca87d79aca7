"""The global gradient norm of a model laid out over a mesh, and clipping to it.

Each gradient contributes the squares of its local elements once per
distinct element: a DTensor ``Shard`` axis sums over that axis's group, a
``Replicate`` axis does not (every rank there holds the same values), and
the pipeline axis sums over stages (each holds different parameters). The
squares are grouped by the set of axes they are sharded over, so each set
costs one all-reduce per axis, whatever the number of parameters.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Partial, Replicate


@torch.no_grad()
def total_norm(pm) -> torch.Tensor:
    """The 2-norm of all gradients of ``pm`` (a ``ParallelModel``), fp32, the same on every rank. Collective."""
    sums: dict[tuple[str, ...], torch.Tensor] = {}
    for p in pm.parameters():
        g = p.grad
        if g is None:
            continue
        axes: tuple[str, ...] = ()
        if isinstance(g, DTensor):
            names = g.device_mesh.mesh_dim_names
            if any(isinstance(pl, Partial) for pl in g.placements):
                raise ValueError(
                    "grad_norm: a Partial gradient is left; call reduce_partial_grads first"
                )
            # Anything neither Replicate nor Partial holds disjoint pieces: Shard, and FSDP x TP's
            # _StridedShard (not a Shard subclass; missing it silently undercounts the norm).
            axes = tuple(
                sorted(
                    names[i]
                    for i, pl in enumerate(g.placements)
                    if not isinstance(pl, Replicate)
                )
            )
            g = g._local_tensor
        sums.setdefault(axes, torch.zeros((), dtype=torch.float64))
        sums[axes] += g.detach().double().pow(2).sum()
    total = torch.zeros(1, dtype=torch.float64)
    if pm.mesh is not None:
        # Ranks of one stage hold the same parameters, so the same keys: the collectives line up.
        for axes in sorted(sums):
            value = sums[axes].reshape(1)
            for axis in axes:
                dist.all_reduce(value, group=pm.mesh.get_group(axis))
            total += value
        if pm.plan.pp > 1:
            dist.all_reduce(total, group=pm.mesh.get_group("pp"))
    else:
        for value in sums.values():
            total += value
    return total[0].sqrt().float()


@torch.no_grad()
def clip_grad_norm_(pm, max_norm: float | None) -> torch.Tensor:
    """Clip so the global norm is at most ``max_norm`` (None or 0: only measure); returns the norm before."""
    norm = total_norm(pm)
    if max_norm is not None and max_norm > 0:
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for p in pm.parameters():
            if p.grad is not None:
                g = p.grad._local_tensor if isinstance(p.grad, DTensor) else p.grad
                g.mul_(coef.to(g.dtype))
    return norm
