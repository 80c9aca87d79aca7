"""Property-based check run inside every rank: hypothesis draws sizes, dtypes,
ops and algorithms. With derandomize=True every rank draws the same examples
in the same order, so the ranks stay in lock step."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardkit import comm

import comm_cases


def run(rank: int, world: int, max_examples: int) -> int:
    comm.init(timeout=60, slot_bytes=comm_cases.TEST_SLOT_BYTES)
    seen = []

    @settings(derandomize=True, max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(
        n=st.integers(0, 9000),
        dtype=st.sampled_from(comm_cases.DTYPES),
        op=st.sampled_from(comm_cases.OPS),
        algo=st.sampled_from(["ring", "tree", "auto"]),
        seed=st.integers(0, 2**31 - 1),
    )
    def all_reduce_matches_reference(n, dtype, op, algo, seed):
        if op == "avg" and not dtype.is_floating_point:
            op = "sum"
        full = comm_cases.inputs(world, n, dtype, seed)
        t = full[rank].clone()
        comm.all_reduce(t, op, algo)
        comm_cases.close(t, comm_cases.reference(full, op), f"all_reduce(n={n}, {dtype}, {op}, {algo})")
        m = n // world
        out = torch.empty(m, dtype=dtype)
        comm.reduce_scatter(out, full[rank, : m * world].clone(), op)
        comm_cases.close(out, comm_cases.reference(full[:, : m * world], op)[rank * m : (rank + 1) * m], f"reduce_scatter(m={m})")
        gathered = torch.empty(world * m, dtype=dtype)
        comm.all_gather(gathered, full[rank, :m].clone())
        comm_cases.equal(gathered, full[:, :m].reshape(-1), f"all_gather(m={m})")
        seen.append(n)

    try:
        all_reduce_matches_reference()
    finally:
        comm.destroy()
    return len(seen)
