"""Rank side of the DDP / FSDP2 training tests: the same seeded model and data
trained over the ``shardkit`` default group and over a gloo group."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(33, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 5))


def _batches(rank: int, steps: int):
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(8, 33, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(steps)]


def _train(model, rank: int, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for x, y in _batches(rank, steps):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def ddp_and_fsdp2(rank: int, world: int, steps: int) -> dict:
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel as DDP

    gloo = dist.new_group(backend="gloo")
    out = {}
    out["ddp_shardkit"] = _train(DDP(_model()), rank, steps)
    out["ddp_gloo"] = _train(DDP(_model(), process_group=gloo), rank, steps)
    for name, mesh in (("shardkit", init_device_mesh("cpu", (world,))), ("gloo", DeviceMesh.from_group(gloo, "cpu"))):
        model = _model()
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        out[f"fsdp2_{name}"] = _train(model, rank, steps)
    return out
