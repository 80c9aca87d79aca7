"""Rank-side checks of the collectives' copy/reduce threads: every collective
on a group with SHARDKIT_COMM_THREADS=T must give bitwise the results of a
group with one thread, on the same inputs.

Both groups live in the same process (two ``comm.join`` calls, each reading
the variable when it is made). The threshold for splitting a step is lowered
to 1 KiB per worker so that the small test slots (8 KiB x min(T, 4)) split
into T pieces, and the sizes straddle it: with 1 KiB per worker a step of
fp32 needs 512 elements for 2 workers and 768 for 3.
"""

from __future__ import annotations

import os

import torch

from shardkit import comm
from shardkit.comm import group as group_mod

from comm_cases import DTYPES, OPS, TEST_SLOT_BYTES, close, inputs, reference

MIN_BYTES = 1024
# Odd sizes around the thresholds at 2 and 3 ranks (ring chunks are about n/p
# elements), and several slots' worth (20011, not a multiple of 16).
SIZES = (0, 1, 5, 1023, 1031, 1543, 1553, 2309, 4099, 20011)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits, so that -0.0 vs 0.0 and NaN payloads count as different."""
    if t.is_floating_point():
        return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if not torch.equal(bits(a), bits(b)):
        i = int((bits(a) != bits(b)).nonzero()[0])
        raise AssertionError(f"{what}: element {i} is {a[i].item()} with threads, {b[i].item()} with one thread")


def join_with(threads: int | str | None):
    """A Group made with SHARDKIT_COMM_THREADS=threads (unset when None)."""
    saved = os.environ.pop(group_mod.THREADS_ENV, None)
    if threads is not None:
        os.environ[group_mod.THREADS_ENV] = str(threads)
    try:
        return comm.join(timeout=60.0, slot_bytes=TEST_SLOT_BYTES)
    finally:
        os.environ.pop(group_mod.THREADS_ENV, None)
        if saved is not None:
            os.environ[group_mod.THREADS_ENV] = saved


def _results(g, rank: int, world: int, n: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every collective of ``g`` on this size and dtype; checked against the reference as it goes."""
    out: dict[str, torch.Tensor] = {}
    full = inputs(world, n, dtype, seed=n * 13 + dtype.itemsize)
    for op in OPS:
        if op == "avg" and not dtype.is_floating_point:
            continue
        expected = reference(full, op)
        for algo in ("ring", "tree"):
            t = full[rank].clone()
            comm.all_reduce(t, op, algo, group=g)
            close(t, expected, f"all_reduce(n={n}, {dtype}, {op}, {algo}, threads={g.threads})")
            out[f"all_reduce {op} {algo}"] = t
        m = n // world
        rs = torch.empty(m, dtype=dtype)
        comm.reduce_scatter(rs, full[rank, : world * m].clone(), op, group=g)
        close(rs, reference(full[:, : world * m], op)[rank * m : (rank + 1) * m], f"reduce_scatter(m={m}, {dtype}, {op})")
        out[f"reduce_scatter {op}"] = rs
        for root in range(world):
            t = full[rank].clone()
            comm.reduce(t, root, op, group=g)
            if rank == root:
                close(t, expected, f"reduce(n={n}, {dtype}, {op}, dst={root})")
            out[f"reduce {op} {root}"] = t
    ag = torch.empty(world * n, dtype=dtype)
    comm.all_gather(ag, full[rank].clone(), group=g)
    out["all_gather"] = ag
    for root in range(world):
        t = full[rank].clone()
        comm.broadcast(t, root, group=g)
        out[f"broadcast {root}"] = t
    return out


def threads_match_one_thread(rank: int, world: int, threads: int) -> int:
    group_mod.MIN_BYTES_PER_THREAD = MIN_BYTES  # read when a Group is made
    one = join_with(1)
    many = join_with(threads)
    try:
        assert one.threads == 1 and one.shm.threads == 1 and one.slot_bytes == TEST_SLOT_BYTES
        assert many.threads == threads and many.shm.threads == threads
        assert many.shm.min_bytes_per_thread == MIN_BYTES
        assert many.slot_bytes == TEST_SLOT_BYTES * min(threads, group_mod.MAX_SLOT_SCALE)
        count = 0
        for n in SIZES:
            for dtype in DTYPES:
                want = _results(one, rank, world, n, dtype)
                got = _results(many, rank, world, n, dtype)
                assert want.keys() == got.keys()
                for key in want:
                    same(got[key], want[key], f"{key} (n={n}, {dtype}, threads={threads}, world={world})")
                    count += 1
        return count
    finally:
        many.destroy()
        one.destroy()


def default_group_threads(rank: int, world: int) -> tuple[int, int, int]:
    """With the variable unset, Group.threads follows the affinity rule; and OMP_NUM_THREADS is ignored."""
    os.environ["OMP_NUM_THREADS"] = "64"
    torch.set_num_threads(1)
    g = join_with(None)
    try:
        return g.threads, group_mod.default_threads(g.local_world_size), g.slot_bytes
    finally:
        g.destroy()


def bad_override(rank: int, world: int) -> None:
    join_with("two")  # raises ValueError on every rank, before any rank waits
