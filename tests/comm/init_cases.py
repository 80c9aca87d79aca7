"""Rank-side checks of how a group is joined."""

import torch
import torch.distributed as dist

from shardkit import comm


def from_torchrun_env(rank: int, world: int) -> float:
    # No torch.distributed group yet: init() reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
    assert not dist.is_initialized()
    g = comm.init(timeout=30)
    t = torch.full((3,), float(rank + 1))
    comm.all_reduce(t)
    assert g.world_size == world and dist.is_initialized()
    comm.destroy()
    dist.destroy_process_group()
    return t[0].item()


def existing_subgroup(rank: int, world: int) -> float | None:
    sub = dist.new_group([1, 2])  # collective over all ranks
    if rank == 0:
        return None
    g = comm.init(sub, timeout=30)
    assert (g.rank, g.world_size) == (rank - 1, 2)
    t = torch.full((3,), float(rank))
    comm.all_reduce(t)
    comm.broadcast(t, src=1)  # a group rank: global rank 2
    comm.destroy()
    return t[0].item()


def single_rank(rank: int, world: int) -> int:
    """World size 1 runs the same code path; every collective is a copy or a no-op."""
    import comm_cases

    comm.init(timeout=30, slot_bytes=comm_cases.TEST_SLOT_BYTES)
    checks = (
        comm_cases.check_all_reduce(rank, world, sizes=(0, 5, 4099))
        + comm_cases.check_reduce_scatter_all_gather(rank, world, sizes=(0, 5, 4099))
        + comm_cases.check_broadcast_reduce(rank, world, sizes=(0, 5, 4099))
        + comm_cases.check_async_and_torch_ops(rank, world)
    )
    comm.destroy()
    return checks
