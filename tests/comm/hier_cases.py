"""Rank-side checks of the cross-host (hierarchical) path, with hosts
simulated through SHARDKIT_HOST_ID."""

from __future__ import annotations

import torch

from shardkit import comm

import comm_cases

SIZES = (0, 5, 4099)
DTYPES = (torch.float32, torch.bfloat16, torch.int64)


def run(rank: int, world: int, expected_hosts: int) -> dict:
    g = comm.init(timeout=60, slot_bytes=comm_cases.TEST_SLOT_BYTES)
    try:
        assert g.topology.num_hosts == expected_hosts, g.topology
        checks = (
            comm_cases.check_all_reduce(rank, world, sizes=SIZES, dtypes=DTYPES, algos=("ring", "tree"))
            + comm_cases.check_reduce_scatter_all_gather(rank, world, sizes=SIZES, dtypes=DTYPES)
            + comm_cases.check_broadcast_reduce(rank, world, sizes=SIZES, dtypes=DTYPES)
            + comm_cases.check_async_and_torch_ops(rank, world)
        )
        return {"checks": checks, "hosts": [list(h) for h in g.topology.hosts], "local_rank": g.local_rank}
    finally:
        comm.destroy()
