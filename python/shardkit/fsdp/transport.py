"""How ``shard()`` moves its flat buffers between ranks: one small interface, three transports.

``shard()`` needs four collectives on flat contiguous 1-D buffers: an
all-gather of equal shards, an averaging reduce-scatter into equal shards (the
buffers are zero-padded to a multiple of the world size, so uneven
parameters never make uneven chunks), an all-reduce (NO_SHARD gradients,
gradient norms, trainer metrics) and a barrier. Each returns a work handle
when ``async_op`` (``wait()`` is all the caller uses) or None.

* ``"shm"`` (``HostTransport``): ``shardkit.comm`` over shared memory,
  hierarchical across hosts, for CPU tensors. The default on CPU.
* ``"nccl"`` (``NcclTransport``): ``shardkit.comm.nccl.NcclGroup`` for CUDA
  tensors. Its collectives are enqueued on the current CUDA stream (the side
  stream ``shard()`` issues them on), so the handles are complete once
  enqueued and the stream events order them. ``algo="ring"|"tree"`` picks
  NCCL's algorithm of the all-reduces; NCCL's all-gather and reduce-scatter
  are rings whatever ``algo`` says. The default on CUDA.
* ``"process_group"`` (``ProcessGroupTransport``): ``torch.distributed`` on a
  process group, with the tensors' own device: NCCL for CUDA tensors, gloo
  for CPU ones. On CPU it runs the device code path of ``shard()`` (flat
  buffers on the parameters' device, side-stream hooks, async handles of
  torch's work objects) with gloo, which is how the CPU tests cover it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from shardkit import comm

TRANSPORTS = ("auto", "shm", "process_group", "nccl")
_TORCH_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class Transport:
    """The collectives ``shard()`` runs, on tensors of ``device`` (its type: ``"cpu"`` or ``"cuda"``)."""

    name = ""
    device_type = "cpu"
    rank = 0
    world_size = 1

    def all_gather(self, out: torch.Tensor, inp: torch.Tensor, *, async_op: bool = False):
        """Block i of ``out`` (world_size * m elements) = ``inp`` (m elements) of rank i; ``inp`` may be
        ``out``'s own block."""
        raise NotImplementedError

    def reduce_scatter_avg(self, out: torch.Tensor, inp: torch.Tensor, *, async_op: bool = False):
        """``out`` (m elements) of rank i = the average over ranks of block i of ``inp``."""
        raise NotImplementedError

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", *, async_op: bool = False):
        """Reduce ``tensor`` over ranks in place: ``op`` is "sum", "avg", "max" or "min"."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def all_reduce_any(self, values: torch.Tensor, op: str) -> torch.Tensor:
        """``all_reduce`` of ``values`` wherever they live: a copy on the transport's device when they are
        elsewhere (a host sync), copied back in place. Returns ``values``."""
        here = values if values.device.type == self.device_type else values.to(self._device_for(values))
        self.all_reduce(here, op)
        if here is not values:
            values.copy_(here)
        return values

    def _device_for(self, values: torch.Tensor) -> torch.device:
        if self.device_type == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(self.device_type)


class HostTransport(Transport):
    """``shardkit.comm`` (shared memory on a host) on CPU tensors; today's ``shard()`` path, call for call."""

    name = "shm"

    def __init__(self, group: comm.Group) -> None:
        self.group = group
        self.rank, self.world_size = group.rank, group.world_size

    def all_gather(self, out, inp, *, async_op=False):
        return comm.all_gather(out, inp, group=self.group, async_op=async_op)

    def reduce_scatter_avg(self, out, inp, *, async_op=False):
        return comm.reduce_scatter(out, inp, "avg", group=self.group, async_op=async_op)

    def all_reduce(self, tensor, op="sum", *, async_op=False):
        return comm.all_reduce(tensor, op, group=self.group, async_op=async_op)

    def barrier(self) -> None:
        comm.barrier(group=self.group)


class _ThenDivide:
    """A torch work handle whose ``wait()`` also divides the result by the world size (gloo has no AVG)."""

    def __init__(self, work, tensor: torch.Tensor, world: int) -> None:
        self.work, self.tensor, self.world = work, tensor, world

    def wait(self, timeout=None) -> bool:
        self.work.wait()
        self.tensor.div_(self.world)
        return True


class ProcessGroupTransport(Transport):
    """``torch.distributed`` collectives on ``process_group`` with the tensors of ``device_type``
    (gloo for CPU tensors; NCCL for CUDA ones, where AVG is native)."""

    name = "process_group"

    def __init__(self, process_group, device_type: str) -> None:
        self.pg = process_group
        self.device_type = device_type
        self.rank, self.world_size = dist.get_rank(process_group), dist.get_world_size(process_group)
        backend = str(dist.get_backend(process_group)).lower()
        self.native_avg = device_type == "cuda" and "nccl" in backend

    def all_gather(self, out, inp, *, async_op=False):
        return dist.all_gather_into_tensor(out, inp, group=self.pg, async_op=async_op)

    def reduce_scatter_avg(self, out, inp, *, async_op=False):
        if self.native_avg:
            return dist.reduce_scatter_tensor(out, inp, op=dist.ReduceOp.AVG, group=self.pg, async_op=async_op)
        work = dist.reduce_scatter_tensor(out, inp, op=dist.ReduceOp.SUM, group=self.pg, async_op=async_op)
        if async_op:
            return _ThenDivide(work, out, self.world_size)
        out.div_(self.world_size)
        return None

    def all_reduce(self, tensor, op="sum", *, async_op=False):
        op = comm.collectives.op_name(op)
        if op == "avg" and not self.native_avg:
            work = dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.pg, async_op=async_op)
            if async_op:
                return _ThenDivide(work, tensor, self.world_size)
            tensor.div_(self.world_size)
            return None
        torch_op = dist.ReduceOp.AVG if op == "avg" else _TORCH_OPS[op]
        return dist.all_reduce(tensor, op=torch_op, group=self.pg, async_op=async_op)

    def barrier(self) -> None:
        dist.barrier(group=self.pg)


class NcclTransport(Transport):
    """``shardkit.comm.nccl.NcclGroup`` on CUDA tensors; ``algo`` ("auto", "ring", "tree") for its all-reduces."""

    name = "nccl"
    device_type = "cuda"

    def __init__(self, group, algo: str = "auto") -> None:
        self.group, self.algo = group, algo
        self.rank, self.world_size = group.rank, group.world_size

    def all_gather(self, out, inp, *, async_op=False):
        return self.group.all_gather(out, inp, async_op=async_op)

    def reduce_scatter_avg(self, out, inp, *, async_op=False):
        return self.group.reduce_scatter(out, inp, "avg", async_op=async_op)

    def all_reduce(self, tensor, op="sum", *, async_op=False):
        return self.group.all_reduce(tensor, op, self.algo, async_op=async_op)

    def barrier(self) -> None:
        # A one-element all-reduce, then the CPU waits for the stream: every rank has entered.
        token = torch.zeros(1, device=torch.device("cuda", torch.cuda.current_device()))
        self.group.all_reduce(token)
        torch.cuda.current_stream().synchronize()


def resolve(transport: str, device_type: str) -> str:
    """The transport ``shard()`` uses for parameters on ``device_type``: ``auto`` is shm on CPU, nccl on CUDA."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport: expected one of {', '.join(map(repr, TRANSPORTS))}, got {transport!r}")
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"model: shardkit.fsdp shards CPU or CUDA parameters (or builds them from the meta "
                         f"device), got device type {device_type!r}")
    if transport == "auto":
        return "nccl" if device_type == "cuda" else "shm"
    if transport == "shm" and device_type != "cpu":
        raise ValueError(f"transport: 'shm' (shardkit.comm over shared memory) moves CPU tensors, the parameters are "
                         f"on {device_type}; use 'nccl', 'process_group' or 'auto'")
    if transport == "nccl" and device_type != "cuda":
        raise ValueError(f"transport: 'nccl' moves CUDA tensors, the parameters are on {device_type}; "
                         "use 'shm', 'process_group' (gloo) or 'auto'")
    return transport


def make(kind: str, group, device_type: str, *, algo: str = "auto"):
    """``(transport or None, the group it runs over or None)`` for ``shard(group=...)``.

    ``kind`` is a resolved transport name. ``group``: None (the default group;
    a single process when torch.distributed is not initialised), a
    ``shardkit.comm.Group``, a ``torch.distributed`` process group or (nccl)
    a ``shardkit.comm.nccl.NcclGroup``. Collective when it makes a group.
    """
    from shardkit.comm.nccl import NcclGroup

    if algo not in ("auto", "ring", "tree"):
        raise ValueError(f"algo: expected 'auto', 'ring' or 'tree', got {algo!r}")
    if kind == "shm":
        if group is None:
            if comm.is_initialized():
                group = comm.get_group()
            elif dist.is_available() and dist.is_initialized():
                group = comm.init()
            else:
                return None, None
        if not isinstance(group, comm.Group):
            raise TypeError(f"group: the 'shm' transport takes a shardkit.comm.Group, got {type(group).__name__}")
        return HostTransport(group), group
    if isinstance(group, NcclGroup):
        if kind != "nccl":
            raise TypeError(f"group: a NcclGroup runs the 'nccl' transport, not {kind!r}")
        return NcclTransport(group, algo), group
    pg = _process_group(group)
    if pg is None:
        return None, None
    if kind == "process_group":
        return ProcessGroupTransport(pg, device_type), (group if group is not None else pg)
    nccl = NcclGroup(pg)
    return NcclTransport(nccl, algo), nccl


def _process_group(group):
    """The torch.distributed group behind ``group`` (None: the default group, or None when not initialised)."""
    if isinstance(group, comm.Group):
        if group.torch_group is None:
            raise ValueError("group: this shardkit.comm.Group was made from a store (the 'shardkit' backend) and has "
                             "no torch.distributed group for the 'process_group'/'nccl' transports")
        return group.torch_group
    if group is None:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        return dist.group.WORLD
    if isinstance(group, dist.ProcessGroup):
        return group
    raise TypeError(f"group: expected a shardkit.comm.Group, a torch.distributed ProcessGroup or a NcclGroup, "
                    f"got {type(group).__name__}")
