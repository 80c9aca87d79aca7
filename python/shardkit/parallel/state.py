"""Full (unsharded) state dicts of a ``ParallelModel``: what a single process loads.

Every DTensor is gathered (``full_tensor``) over its mesh, then the stages'
dicts are gathered over the pipeline axis. The names are the GPT's, so
``GPT(config).load_state_dict(full_state_dict(pm))`` restores the model in one
process, whatever plan saved it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from shardkit import atomic


@torch.no_grad()
def full_state_dict(pm) -> dict[str, torch.Tensor]:
    """Every parameter and persistent buffer, full and on CPU, on every rank. Collective."""
    local: dict[str, torch.Tensor] = {}
    for module in pm.modules:
        for name, value in module.state_dict().items():
            if isinstance(value, DTensor):
                value = value.full_tensor()
            local[name] = value.detach().cpu().clone()
    if pm.mesh is None or pm.plan.pp == 1:
        return local
    parts: list = [None] * pm.plan.pp
    dist.all_gather_object(parts, local, group=pm.mesh.get_group("pp"))
    merged: dict[str, torch.Tensor] = {}
    for part in parts:
        merged.update(part)
    return merged


def save_full_state_dict(pm, path: str | os.PathLike) -> None:
    """Write the full state dict as safetensors (rank 0 writes, through the atomic writer). Collective."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in full_state_dict(pm).items()}
    if not dist.is_initialized() or dist.get_rank() == 0:
        atomic.write_atomic(path, lambda tmp: save_file(state, tmp))
    if dist.is_initialized():
        dist.barrier()
