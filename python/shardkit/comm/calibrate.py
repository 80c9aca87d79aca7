"""Measure this machine's alpha-beta constants for ``algo="auto"`` and cache them."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from shardkit.comm import cost_model


def calibrate(group=None, *, small_bytes: int = 4096, large_bytes: int = 4 << 20, repeats: int = 5,
              store: bool = True) -> cost_model.CostModel:
    """Time ring and tree all-reduces at two sizes, fit each algorithm's
    (alpha, beta), install the model in ``group`` and (on rank 0) cache it.

    Collective: every rank must call it. Takes well under a second on one host.
    The slowest rank's time counts (a collective ends when its last rank does).
    """
    from shardkit import comm

    group = group or comm.get_group()
    if group.local_world_size < 2:
        return group.model
    times: dict[str, tuple[float, float]] = {}
    for algo in ("ring", "tree"):
        measured = []
        for nbytes in (small_bytes, large_bytes):
            t = torch.ones(nbytes // 4, dtype=torch.float32)
            comm.all_reduce(t, algo=algo, group=group)  # warm-up: page faults, caches
            samples = []
            for _ in range(repeats):
                comm.barrier(group=group)
                start = time.perf_counter()
                comm.all_reduce(t, algo=algo, group=group)
                samples.append(time.perf_counter() - start)
            measured.append(sorted(samples)[len(samples) // 2])
        times[algo] = (measured[0], measured[1])
    flat = torch.tensor([v for pair in times.values() for v in pair], dtype=torch.float64)
    dist.all_reduce(flat, op=dist.ReduceOp.MAX, group=group.torch_group)
    times = {"ring": (flat[0].item(), flat[1].item()), "tree": (flat[2].item(), flat[3].item())}
    model = cost_model.fit(group.local_world_size, small_bytes, large_bytes, times)
    group.model = model
    if store and group.rank == 0:
        cost_model.store_cached(group.model_key, model)
    return model
