"""The collectives of ``shardkit.comm``: argument checks, then the transport.

On one host every collective runs on the shared-memory transport. Across
hosts it is hierarchical: reduce (or gather) inside each host over shared
memory, combine between host leaders over ``torch.distributed``, then
broadcast inside each host. Half-precision data cross hosts as fp32, so
they accumulate in fp32 on both paths.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from shardkit import _native
from shardkit.comm.group import Group
from shardkit.comm.work import Work
from shardkit.ops import _checks

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int32, torch.int64)
_OP_CODES = {"sum": 0, "avg": 1, "max": 2, "min": 3}
_ALGO_CODES = {"ring": 0, "tree": 1}
_TORCH_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def op_name(op) -> str:
    """Normalise ``"sum"|"avg"|"max"|"min"`` or a ``torch.distributed.ReduceOp`` to its name."""
    if isinstance(op, str):
        name = op.lower()
    else:
        name = next((k for k, v in {**_TORCH_OPS, "avg": dist.ReduceOp.AVG}.items() if op == v), None)
    if name not in _OP_CODES:
        raise ValueError(f"op: expected 'sum', 'avg', 'max', 'min' or the matching ReduceOp, got {op!r}")
    return name


def check_tensor(t, name: str, device_type: str = "cpu") -> None:
    """A contiguous tensor of a supported dtype on ``device_type`` ("cpu" here, "cuda" for NCCL)."""
    hint = " (CUDA tensors go through shardkit.comm.nccl)" if device_type == "cpu" else ""
    _checks.check_tensor(t, name, device=device_type, dtypes=SUPPORTED_DTYPES, device_hint=hint)


def _check_op_dtype(op: str, t: torch.Tensor, name: str) -> None:
    if op == "avg" and not t.is_floating_point():
        raise TypeError(f"{name}: op 'avg' needs a floating-point dtype, got {t.dtype}")


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.numel() == 0 or b.numel() == 0:
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


def _code(t: torch.Tensor) -> int:
    return _native.dtype_code(t.dtype)


def _is_half(t: torch.Tensor) -> bool:
    return t.dtype in (torch.bfloat16, torch.float16)


def _run(group: Group, fn, async_op: bool):
    if async_op:
        return group.executor.submit(fn)
    group.executor.run(fn)
    return None


# ---- all_reduce --------------------------------------------------------------


def all_reduce(group: Group, tensor, op="sum", algo="auto", *, out=None, async_op=False) -> Work | None:
    check_tensor(tensor, "tensor")
    op = op_name(op)
    _check_op_dtype(op, tensor, "tensor")
    if algo not in ("auto", "ring", "tree"):
        raise ValueError(f"algo: expected 'auto', 'ring' or 'tree', got {algo!r}")
    if out is None:
        out = tensor
    else:
        check_tensor(out, "out")
        if out.dtype != tensor.dtype or out.shape != tensor.shape:
            raise ValueError(f"out: expected {tensor.dtype} of shape {tuple(tensor.shape)}, got {out.dtype} of shape {tuple(out.shape)}")
        if out.data_ptr() != tensor.data_ptr() and _overlap(out, tensor):
            raise ValueError("out: overlaps tensor without being the same memory")
    if algo == "auto":
        algo = group.model.choose(group.local_world_size, tensor.numel() * tensor.element_size())

    def run():
        if group.topology.num_hosts == 1:
            group.shm.all_reduce(out.data_ptr(), tensor.data_ptr(), tensor.numel(), _code(tensor), _OP_CODES[op], _ALGO_CODES[algo])
        else:
            _hier_all_reduce(group, out, tensor, op, algo)

    return _run(group, run, async_op)


def _hier_all_reduce(group: Group, out, tensor, op: str, algo: str) -> None:
    # (n,) working copy: fp32 for 16-bit dtypes so that every partial sum is fp32.
    work = tensor.float() if _is_half(tensor) else (tensor if out is tensor else tensor.clone())
    sum_like = "sum" if op == "avg" else op
    n, code = work.numel(), _code(work)
    group.shm.reduce(work.data_ptr(), work.data_ptr(), n, code, _OP_CODES[sum_like], 0)
    if group.is_leader:
        group.leaders.all_reduce(work, sum_like)
        if op == "avg":
            work.div_(group.world_size)
    group.shm.broadcast(work.data_ptr(), n, code, 0)
    if work.data_ptr() != out.data_ptr():
        out.copy_(work)


# ---- reduce_scatter / all_gather ---------------------------------------------


def reduce_scatter(group: Group, out, inp, op="sum", *, async_op=False) -> Work | None:
    check_tensor(out, "out")
    check_tensor(inp, "inp")
    op = op_name(op)
    _check_op_dtype(op, inp, "inp")
    if inp.dtype != out.dtype:
        raise TypeError(f"out: expected dtype {inp.dtype} (as inp), got {out.dtype}")
    if inp.numel() != group.world_size * out.numel():
        raise ValueError(f"inp: expected world_size * out.numel() = {group.world_size} * {out.numel()} elements, got {inp.numel()}")
    if _overlap(out, inp):
        raise ValueError("out: must not overlap inp")

    def run():
        if group.topology.num_hosts == 1:
            group.shm.reduce_scatter(out.data_ptr(), inp.data_ptr(), out.numel(), _code(out), _OP_CODES[op])
        else:
            # Across hosts: a hierarchical all-reduce of a copy, keeping this rank's block.
            full = inp.reshape(-1).clone()
            _hier_all_reduce(group, full, full, op, "ring")
            m = out.numel()
            out.view(-1).copy_(full[group.rank * m : (group.rank + 1) * m])

    return _run(group, run, async_op)


def all_gather(group: Group, out, inp, *, async_op=False) -> Work | None:
    check_tensor(out, "out")
    check_tensor(inp, "inp")
    if inp.dtype != out.dtype:
        raise TypeError(f"out: expected dtype {inp.dtype} (as inp), got {out.dtype}")
    m = inp.numel()
    if out.numel() != group.world_size * m:
        raise ValueError(f"out: expected world_size * inp.numel() = {group.world_size} * {m} elements, got {out.numel()}")
    own = out.data_ptr() + group.rank * m * out.element_size()
    if _overlap(out, inp) and inp.data_ptr() != own:
        raise ValueError("inp: overlaps out other than as out's own block for this rank (the in-place form)")

    def run():
        if group.topology.num_hosts == 1:
            group.shm.all_gather(out.data_ptr(), inp.data_ptr(), m, _code(inp))
        else:
            _hier_all_gather(group, out.view(-1), inp.reshape(-1))

    return _run(group, run, async_op)


def _hier_all_gather(group: Group, out, inp) -> None:
    m, topo = inp.numel(), group.topology
    code = _code(inp)
    local = group.local_ranks()
    # (local_world * m,) this host's blocks, in local rank order.
    host_blocks = torch.empty(len(local) * m, dtype=inp.dtype)
    group.shm.all_gather(host_blocks.data_ptr(), inp.data_ptr(), m, code)
    if group.is_leader:
        width = max(len(ranks) for ranks in topo.hosts) * m
        padded = torch.zeros(width, dtype=inp.dtype)
        padded[: host_blocks.numel()] = host_blocks
        gathered = [torch.empty(width, dtype=inp.dtype) for _ in range(topo.num_hosts)]
        group.leaders.all_gather(gathered, padded)
        for h, ranks in enumerate(topo.hosts):
            for i, r in enumerate(ranks):
                out[r * m : (r + 1) * m] = gathered[h][i * m : (i + 1) * m]
    group.shm.broadcast(out.data_ptr(), out.numel(), code, 0)


# ---- broadcast / reduce / barrier ----------------------------------------------


def _check_root(group: Group, root, name: str) -> int:
    if not isinstance(root, int) or not 0 <= root < group.world_size:
        raise ValueError(f"{name}: expected a rank in 0..{group.world_size - 1}, got {root!r}")
    return root


def broadcast(group: Group, tensor, src: int, *, async_op=False) -> Work | None:
    check_tensor(tensor, "tensor")
    src = _check_root(group, src, "src")
    topo = group.topology

    def run():
        n, code = tensor.numel(), _code(tensor)
        src_host = topo.host_of[src]
        if src_host == group.host_index:
            group.shm.broadcast(tensor.data_ptr(), n, code, topo.hosts[src_host].index(src))
        if topo.num_hosts > 1:
            if group.is_leader:
                group.leaders.broadcast(tensor, src_host)
            if src_host != group.host_index:
                group.shm.broadcast(tensor.data_ptr(), n, code, 0)

    return _run(group, run, async_op)


def reduce(group: Group, tensor, dst: int, op="sum", *, async_op=False) -> Work | None:
    check_tensor(tensor, "tensor")
    dst = _check_root(group, dst, "dst")
    op = op_name(op)
    _check_op_dtype(op, tensor, "tensor")
    topo = group.topology

    def run():
        if topo.num_hosts == 1:
            group.shm.reduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), _code(tensor), _OP_CODES[op], topo.hosts[0].index(dst))
            return
        # Other ranks' tensors stay untouched: work on a copy (fp32 for 16-bit dtypes).
        work = tensor.float() if _is_half(tensor) else tensor.clone()
        sum_like = "sum" if op == "avg" else op
        n, code = work.numel(), _code(work)
        group.shm.reduce(work.data_ptr(), work.data_ptr(), n, code, _OP_CODES[sum_like], 0)
        dst_host = topo.host_of[dst]
        if group.is_leader:
            group.leaders.reduce(work, dst_host, sum_like)
        if group.host_index == dst_host:
            group.shm.broadcast(work.data_ptr(), n, code, 0)
            if group.rank == dst:
                if op == "avg":
                    work.div_(group.world_size)
                tensor.copy_(work)

    return _run(group, run, async_op)


def barrier(group: Group, *, async_op=False) -> Work | None:
    def run():
        group.shm.barrier()
        if group.topology.num_hosts > 1:
            if group.is_leader:
                group.leaders.barrier()
            group.shm.barrier()

    return _run(group, run, async_op)
