"""Measure this machine's alpha-beta constants for ``algo="auto"`` and cache them."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from shardkit.comm import cost_model


#: Sizes timed by default: from latency-bound to bandwidth-bound.
CALIBRATION_SIZES = (4 << 10, 64 << 10, 1 << 20, 16 << 20)


def calibrate(group=None, *, sizes: tuple[int, ...] = CALIBRATION_SIZES, repeats: int = 5,
              store: bool = True) -> cost_model.CostModel:
    """Time ring and tree all-reduces at ``sizes`` bytes, fit each algorithm's
    (alpha, beta) from the smallest and largest, keep every measured time for
    ``algo="auto"`` (it takes the algorithm measured faster at the nearest
    size), install the model in ``group`` and (on rank 0) cache it.

    The data are random and differ per rank, as gradients do (a constant
    buffer summed over and over is not what a training step reduces). The
    slowest rank's median counts (a collective ends when its last rank does).
    Collective: every rank must call it. Takes about a second on one host.
    """
    from shardkit import comm

    group = group or comm.get_group()
    if group.local_world_size < 2:
        return group.model
    if len(sizes) < 2 or any(not isinstance(n, int) or n < 64 for n in sizes):
        raise ValueError(f"sizes: expected at least two sizes in bytes, each >= 64, got {sizes!r}")
    sizes = tuple(sorted(sizes))
    gen = torch.Generator().manual_seed(1234 + group.rank)
    medians = []  # [algo][size]
    for algo in ("ring", "tree"):
        per_size = []
        for nbytes in sizes:
            t = torch.randn(nbytes // 4, generator=gen)
            comm.all_reduce(t, "avg", algo=algo, group=group)  # warm-up: page faults, caches
            samples = []
            for _ in range(repeats):
                comm.barrier(group=group)
                start = time.perf_counter()
                comm.all_reduce(t, "avg", algo=algo, group=group)  # "avg" keeps the values in range
                samples.append(time.perf_counter() - start)
            per_size.append(sorted(samples)[len(samples) // 2])
        medians.append(per_size)
    flat = torch.tensor(medians, dtype=torch.float64)  # (2, len(sizes))
    dist.all_reduce(flat, op=dist.ReduceOp.MAX, group=group.torch_group)
    ring, tree = flat.tolist()
    times = {"ring": (ring[0], ring[-1]), "tree": (tree[0], tree[-1])}
    measured = tuple(zip(sizes, ring, tree))
    model = cost_model.fit(group.local_world_size, sizes[0], sizes[-1], times, measured)
    group.model = model
    if store and group.rank == 0:
        cost_model.store_cached(group.model_key, model)
    return model
