"""Rank-side scenarios of the ``shardkit`` torch.distributed backend tests.

The default group is ``shardkit`` (spawned with backend="shardkit"); a gloo
group over the same ranks runs every op on the same inputs for comparison.
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int32, torch.int64]
SIZES = [0, 1, 7, 1003, 70_001]  # 70_001 fp32 spans two 256 KiB slots
# Ours accumulates 16-bit floats in fp32 and rounds once; gloo rounds every
# partial sum, and sums in another order: tolerances per dtype (0 = exact).
TOL = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-12, 1e-12), torch.bfloat16: (2e-2, 2e-2),
       torch.float16: (2e-3, 2e-3), torch.int32: (0, 0), torch.int64: (0, 0), torch.uint8: (0, 0), torch.bool: (0, 0)}


def _data(rank: int, n: int, dtype: torch.dtype, salt: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * rank + salt)
    if dtype.is_floating_point:
        return torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, (n,), generator=g).bool()
    hi = 7 if dtype == torch.uint8 else 1000
    return torch.randint(-hi if dtype != torch.uint8 else 0, hi, (n,), generator=g).to(dtype)


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.count = 0

    def same(self, what: str, ours: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, exact: bool = False) -> None:
        self.count += 1
        rtol, atol = (0, 0) if exact else TOL[dtype]
        if ours.dtype != ref.dtype or ours.shape != ref.shape:
            self.failures.append(f"{what}: {ours.dtype}{tuple(ours.shape)} vs {ref.dtype}{tuple(ref.shape)}")
        elif not torch.allclose(ours.double() if ours.dtype != torch.bool else ours, ref.double() if ref.dtype != torch.bool else ref,
                                rtol=rtol, atol=atol, equal_nan=True):
            diff = (ours.double() - ref.double()).abs().max().item() if ours.dtype != torch.bool else "bool"
            self.failures.append(f"{what}: differs from gloo (max abs diff {diff})")


def parity(rank: int, world: int, sizes=SIZES) -> dict:
    """Every op on shardkit (default group) and gloo, same inputs; returns failures and the check count."""
    assert type(dist.group.WORLD).__name__ == "ShardkitProcessGroup"
    gloo = dist.new_group(backend="gloo")
    ck = Checker()
    for dtype in DTYPES:
        is_float = dtype.is_floating_point
        for n in sizes:
            tag = f"rank {rank} {dtype} n={n}"
            x = _data(rank, n, dtype, 1)
            # all_reduce: SUM, MAX, MIN; AVG against gloo's SUM / world (gloo has no AVG)
            for op in (dist.ReduceOp.SUM, dist.ReduceOp.MAX, dist.ReduceOp.MIN):
                a, b = x.clone(), x.clone()
                dist.all_reduce(a, op=op)
                dist.all_reduce(b, op=op, group=gloo)
                ck.same(f"{tag} all_reduce {op}", a, b, dtype, exact=op != dist.ReduceOp.SUM)
            if is_float:
                a, b = x.clone(), x.double()
                dist.all_reduce(a, op=dist.ReduceOp.AVG)
                dist.all_reduce(b, group=gloo)
                ck.same(f"{tag} all_reduce AVG", a, (b / world).to(dtype), dtype)
            # async handle
            a, b = x.clone(), x.clone()
            w = dist.all_reduce(a, async_op=True)
            dist.all_reduce(b, group=gloo)
            w.wait()
            ck.same(f"{tag} all_reduce async", a, b, dtype)
            # broadcast (src 1), reduce (dst last)
            a, b = x.clone(), x.clone()
            dist.broadcast(a, src=1)
            dist.broadcast(b, src=1, group=gloo)
            ck.same(f"{tag} broadcast", a, b, dtype, exact=True)
            a, b = x.clone(), x.clone()
            dist.reduce(a, dst=world - 1)
            dist.reduce(b, dst=world - 1, group=gloo)
            if rank == world - 1:
                ck.same(f"{tag} reduce", a, b, dtype)
            else:
                ck.same(f"{tag} reduce (non-root untouched)", a, x, dtype, exact=True)
            # all_gather (list and into tensor, sync and async)
            outs_a = [torch.empty(n, dtype=dtype) for _ in range(world)]
            outs_b = [torch.empty(n, dtype=dtype) for _ in range(world)]
            dist.all_gather(outs_a, x)
            dist.all_gather(outs_b, x, group=gloo)
            ck.same(f"{tag} all_gather", torch.cat(outs_a), torch.cat(outs_b), dtype, exact=True)
            a, b = torch.empty(world * n, dtype=dtype), torch.empty(world * n, dtype=dtype)
            w = dist.all_gather_into_tensor(a, x, async_op=True)
            dist.all_gather_into_tensor(b, x, group=gloo)
            w.wait()
            ck.same(f"{tag} all_gather_into_tensor", a, b, dtype, exact=True)
            # reduce_scatter (tensor form sync/async; list form)
            full = _data(rank, world * n, dtype, 2)
            a, b = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
            w = dist.reduce_scatter_tensor(a, full, async_op=True)
            w.wait()
            dist.reduce_scatter_tensor(b, full, group=gloo)
            ck.same(f"{tag} reduce_scatter_tensor", a, b, dtype)
            if is_float:
                a = torch.empty(n, dtype=dtype)
                dist.reduce_scatter_tensor(a, full, op=dist.ReduceOp.AVG)
                b64 = full.double().clone()
                dist.all_reduce(b64, group=gloo)
                ck.same(f"{tag} reduce_scatter_tensor AVG", a, (b64[rank * n:(rank + 1) * n] / world).to(dtype), dtype)
            a, b = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
            dist.reduce_scatter(a, list(full.chunk(world)) if n else [torch.empty(0, dtype=dtype)] * world)
            dist.reduce_scatter_tensor(b, full, group=gloo)
            ck.same(f"{tag} reduce_scatter (list)", a, b, dtype)
            # gather (dst 0), scatter (src 1)
            ga = [torch.empty(n, dtype=dtype) for _ in range(world)] if rank == 0 else None
            gb = [torch.empty(n, dtype=dtype) for _ in range(world)] if rank == 0 else None
            dist.gather(x, ga, dst=0)
            dist.gather(x, gb, dst=0, group=gloo)
            if rank == 0:
                ck.same(f"{tag} gather", torch.cat(ga), torch.cat(gb), dtype, exact=True)
            src_list = [_data(r, n, dtype, 3) for r in range(world)] if rank == 1 else None
            a, b = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
            dist.scatter(a, src_list, src=1)
            dist.scatter(b, src_list, src=1, group=gloo)
            ck.same(f"{tag} scatter", a, b, dtype, exact=True)
    _extras(rank, world, gloo, ck)
    dist.barrier()
    return {"failures": ck.failures, "checks": ck.count}


def _extras(rank: int, world: int, gloo, ck: Checker) -> None:
    """Non-contiguous tensors, gloo-only dtypes/ops, p2p, object collectives, subgroups, DeviceMesh."""
    # Non-contiguous: staged through a contiguous copy, result copied back.
    base = _data(rank, 6 * 5, torch.float32, 4).view(6, 5)
    a, b = base.t(), base.t().contiguous()
    dist.all_reduce(a)
    dist.all_reduce(b, group=gloo)
    ck.same(f"rank {rank} all_reduce non-contiguous", a.contiguous(), b, torch.float32)
    a, b = base.clone().t(), base.t().contiguous()
    dist.broadcast(a, src=0)
    dist.broadcast(b, src=0, group=gloo)
    ck.same(f"rank {rank} broadcast non-contiguous", a.contiguous(), b, torch.float32, exact=True)
    # Dtypes and ops the native path does not reduce: the internal gloo group.
    for dtype in (torch.uint8, torch.bool):
        for n in (0, 1, 5, 1003):
            x = _data(rank, n, dtype, 5)
            op = dist.ReduceOp.MAX if dtype == torch.bool else dist.ReduceOp.SUM
            a, b = x.clone(), x.clone()
            dist.all_reduce(a, op=op)
            dist.all_reduce(b, op=op, group=gloo)
            ck.same(f"rank {rank} {dtype} n={n} all_reduce", a, b, dtype, exact=True)
            # data movement of any dtype stays native, odd byte counts included
            a, b = x.clone(), x.clone()
            dist.broadcast(a, src=world - 1)
            dist.broadcast(b, src=world - 1, group=gloo)
            ck.same(f"rank {rank} {dtype} n={n} broadcast", a, b, dtype, exact=True)
            a, b = torch.empty(world * n, dtype=dtype), torch.empty(world * n, dtype=dtype)
            dist.all_gather_into_tensor(a, x)
            dist.all_gather_into_tensor(b, x, group=gloo)
            ck.same(f"rank {rank} {dtype} n={n} all_gather_into_tensor", a, b, dtype, exact=True)
    x = 1 + _data(rank, 11, torch.float32, 6).abs()
    a, b = x.clone(), x.clone()
    dist.all_reduce(a, op=dist.ReduceOp.PRODUCT)
    dist.all_reduce(b, op=dist.ReduceOp.PRODUCT, group=gloo)
    ck.same(f"rank {rank} PRODUCT", a, b, torch.float32, exact=True)
    # send / recv around a ring, both directions at once (isend/irecv)
    out = torch.full((9,), float(rank))
    got = torch.empty(9)
    reqs = [dist.isend(out, (rank + 1) % world), dist.irecv(got, (rank - 1) % world)]
    for r in reqs:
        r.wait()
    ck.same(f"rank {rank} isend/irecv", got, torch.full((9,), float((rank - 1) % world)), torch.float32, exact=True)
    # all_to_all_single
    inp = torch.arange(world * 2, dtype=torch.float32) + 100 * rank
    a, b = torch.empty(world * 2), torch.empty(world * 2)
    dist.all_to_all_single(a, inp)
    dist.all_to_all_single(b, inp, group=gloo)
    ck.same(f"rank {rank} all_to_all_single", a, b, torch.float32, exact=True)
    # object collectives and barrier
    objs = [None] * world
    dist.all_gather_object(objs, {"rank": rank, "pad": "x" * (rank * 37 + 1)})
    ck.count += 1
    if objs != [{"rank": r, "pad": "x" * (r * 37 + 1)} for r in range(world)]:
        ck.failures.append(f"rank {rank} all_gather_object: {objs}")
    lst = [rank, "s" * rank] if rank == 1 else [None, None]
    dist.broadcast_object_list(lst, src=1)
    ck.count += 1
    if lst != [1, "s"]:
        ck.failures.append(f"rank {rank} broadcast_object_list: {lst}")
    dist.barrier()
    w = dist.barrier(async_op=True)
    w.wait()
    # a subgroup is a ShardkitProcessGroup too; DeviceMesh over the backend
    sub = dist.new_group([0, 1])
    if rank in (0, 1):
        t = torch.full((4,), float(rank + 1))
        dist.all_reduce(t, group=sub)
        ck.same(f"rank {rank} subgroup all_reduce", t, torch.full((4,), 3.0), torch.float32, exact=True)
        ck.count += 1
        if type(sub).__name__ != "ShardkitProcessGroup":
            ck.failures.append(f"rank {rank} subgroup is {type(sub).__name__}")
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    t = torch.ones(3)
    dist.all_reduce(t, group=mesh.get_group())
    ck.same(f"rank {rank} DeviceMesh group", t, torch.full((3,), float(world)), torch.float32, exact=True)
    # functional collectives and DTensor redistribution resolve the group by name
    import torch.distributed._functional_collectives as fc
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    got = fc.all_reduce(torch.full((3,), rank + 1.0), "sum", mesh)
    ck.same(f"rank {rank} funcol all_reduce", got, torch.full((3,), world * (world + 1) / 2), torch.float32, exact=True)
    full = torch.arange(4.0 * world)
    got = distribute_tensor(full, mesh, [Shard(0)]).redistribute(mesh, [Replicate()]).to_local()
    ck.same(f"rank {rank} DTensor Shard -> Replicate", got, full, torch.float32, exact=True)


# ---- faults ----------------------------------------------------------------------------


def dead_peer(rank: int, world: int) -> dict:
    t = torch.ones(10_000)
    dist.all_reduce(t)
    if rank == world - 1:
        os._exit(3)
    start = time.monotonic()
    try:
        dist.all_reduce(t)
        return {"error": None}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - start}


def stalled_peer(rank: int, world: int) -> dict:
    dist.group.WORLD.comm_group.set_timeout(1.5)
    t = torch.ones(1000)
    dist.all_reduce(t)
    if rank == 1:
        time.sleep(4.0)
    start = time.monotonic()
    try:
        dist.all_reduce(t)
        return {"error": None}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - start}


def mismatch(rank: int, world: int, case: str) -> dict:
    try:
        if case == "numel":
            dist.all_reduce(torch.ones(10 + rank))
        elif case == "src":
            dist.broadcast(torch.ones(8), src=rank)
        elif case == "async":
            w = dist.all_gather_into_tensor(torch.empty(world * (3 + rank)), torch.ones(3 + rank), async_op=True)
            w.wait()
        return {"error": None}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}
