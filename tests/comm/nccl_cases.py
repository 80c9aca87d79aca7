"""Rank-side NCCL checks (GPU only): every op against a CPU reference."""

import torch

import comm_cases
from shardkit.comm.nccl import NcclGroup


def run(rank: int, world: int) -> int:
    torch.cuda.set_device(rank % torch.cuda.device_count())
    g = NcclGroup()
    count = 0
    for algo in ("ring", "tree", "auto"):
        for dtype in (torch.float32, torch.bfloat16, torch.int64):
            for op in ("sum", "max", "min") + (("avg",) if dtype.is_floating_point else ()):
                full = comm_cases.inputs(world, 4099, dtype, seed=3)
                t = full[rank].cuda()
                g.all_reduce(t, op, algo)
                comm_cases.close(t.cpu(), comm_cases.reference(full, op), f"nccl all_reduce({dtype}, {op}, {algo})")
                count += 1
    full = comm_cases.inputs(world, world * 33, torch.float32, seed=4)
    out = torch.empty(33, device="cuda")
    g.reduce_scatter(out, full[rank].cuda())
    comm_cases.close(out.cpu(), comm_cases.reference(full, "sum")[rank * 33 : (rank + 1) * 33], "nccl reduce_scatter")
    gathered = torch.empty(world * 33, device="cuda")
    g.all_gather(gathered, full[rank, :33].cuda())
    comm_cases.equal(gathered.cpu(), full[:, :33].reshape(-1), "nccl all_gather")
    t = full[rank].cuda()
    g.broadcast(t, world - 1)
    comm_cases.equal(t.cpu(), full[world - 1], "nccl broadcast")
    torch.cuda.synchronize()
    return count + 3
