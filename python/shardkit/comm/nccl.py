"""NCCL-backed collectives for CUDA tensors, with the same calls as ``shardkit.comm``.

``NcclGroup`` loads libnccl at run time through ``shardkit._C_cuda`` (the copy
torch has loaded, or ``library=``) and creates NCCL communicators itself, so
``algo="ring"|"tree"`` can pin NCCL's algorithm (through ``NCCL_ALGO`` at
communicator creation: one communicator per algorithm, created on first use,
collectively). ``algo="auto"`` leaves the choice to NCCL's own tuner. When
the native module or libnccl is missing on any rank, every rank falls back to
torch's NCCL process group (algorithm then chosen by NCCL).

Operations are enqueued on the current CUDA stream, as torch's are.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from shardkit import _native
from shardkit.comm.collectives import check_tensor, op_name
from shardkit.comm.work import Work

_OP_CODES = {"sum": 0, "avg": 1, "max": 2, "min": 3}
_NCCL_ALGO = {"ring": "Ring", "tree": "Tree", "auto": None}
_TORCH_OPS = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class _CompletedWork(Work):
    """NCCL calls are already ordered on the stream: the handle is done once enqueued."""

    def __init__(self) -> None:
        super().__init__()
        self._finish(None)


class NcclGroup:
    """NCCL collectives over the ranks of ``group`` (default: the default group).

    Collective to create (every rank calls it, each with its CUDA device set).
    """

    def __init__(self, group=None, *, library: str | None = None) -> None:
        self.torch_group = group or dist.group.WORLD
        self.rank = dist.get_rank(self.torch_group)
        self.world_size = dist.get_world_size(self.torch_group)
        self._root = dist.get_global_rank(self.torch_group, 0)
        reason = self._load(library)
        reasons: list = [None] * self.world_size
        dist.all_gather_object(reasons, reason, group=self.torch_group)
        failed = [(r, why) for r, why in enumerate(reasons) if why]
        self.fallback_reason = "; ".join(f"rank {r}: {why}" for r, why in failed)
        self._comms: dict = {}
        self._torch_nccl = None
        if failed:
            ranks = [dist.get_global_rank(self.torch_group, r) for r in range(self.world_size)]
            self._torch_nccl = dist.new_group(ranks, backend="nccl")

    @staticmethod
    def _load(library: str | None) -> str:
        C = _native.C_CUDA
        if C is None or not hasattr(C, "nccl_load"):
            return f"shardkit._C_cuda unavailable: {_native.CUDA_REASON or 'built without the NCCL wrappers'}"
        return C.nccl_load(library or "")

    @property
    def uses_torch_nccl(self) -> bool:
        """True when running on torch's NCCL process group (see ``fallback_reason``)."""
        return self._torch_nccl is not None

    def _comm(self, algo: str):
        if algo not in _NCCL_ALGO:
            raise ValueError(f"algo: expected 'auto', 'ring' or 'tree', got {algo!r}")
        if algo not in self._comms:
            C = _native.C_CUDA
            uid = [C.nccl_unique_id() if self.rank == 0 else None]
            dist.broadcast_object_list(uid, src=self._root, group=self.torch_group)
            previous = os.environ.get("NCCL_ALGO")
            if _NCCL_ALGO[algo]:
                os.environ["NCCL_ALGO"] = _NCCL_ALGO[algo]
            try:
                self._comms[algo] = C.NcclComm(uid[0], self.world_size, self.rank)
            finally:
                if previous is None:
                    os.environ.pop("NCCL_ALGO", None)
                else:
                    os.environ["NCCL_ALGO"] = previous
        return self._comms[algo]

    @staticmethod
    def _stream() -> int:
        return torch.cuda.current_stream().cuda_stream

    def all_reduce(self, tensor, op="sum", algo="auto", *, out=None, async_op=False):
        """As ``shardkit.comm.all_reduce``, for CUDA tensors."""
        check_tensor(tensor, "tensor", "cuda")
        op = op_name(op)
        out = tensor if out is None else out
        check_tensor(out, "out", "cuda")
        if out.shape != tensor.shape or out.dtype != tensor.dtype:
            raise ValueError(f"out: expected {tensor.dtype} of shape {tuple(tensor.shape)}")
        if self._torch_nccl is not None:
            if out is not tensor:
                out.copy_(tensor)
            dist.all_reduce(out, op=_TORCH_OPS[op], group=self._torch_nccl)
        else:
            self._comm(algo).all_reduce(out.data_ptr(), tensor.data_ptr(), tensor.numel(),
                                        _native.dtype_code(tensor.dtype), _OP_CODES[op], self._stream())
        return _CompletedWork() if async_op else None

    def reduce_scatter(self, out, inp, op="sum", *, async_op=False):
        """As ``shardkit.comm.reduce_scatter``, for CUDA tensors."""
        check_tensor(out, "out", "cuda")
        check_tensor(inp, "inp", "cuda")
        op = op_name(op)
        if inp.numel() != self.world_size * out.numel() or inp.dtype != out.dtype:
            raise ValueError(f"inp: expected {out.dtype} with world_size * out.numel() = {self.world_size * out.numel()} elements")
        if self._torch_nccl is not None:
            dist.reduce_scatter_tensor(out.view(-1), inp.view(-1), op=_TORCH_OPS[op], group=self._torch_nccl)
        else:
            self._comm("auto").reduce_scatter(out.data_ptr(), inp.data_ptr(), out.numel(),
                                              _native.dtype_code(out.dtype), _OP_CODES[op], self._stream())
        return _CompletedWork() if async_op else None

    def all_gather(self, out, inp, *, async_op=False):
        """As ``shardkit.comm.all_gather``, for CUDA tensors."""
        check_tensor(out, "out", "cuda")
        check_tensor(inp, "inp", "cuda")
        if out.numel() != self.world_size * inp.numel() or inp.dtype != out.dtype:
            raise ValueError(f"out: expected {inp.dtype} with world_size * inp.numel() = {self.world_size * inp.numel()} elements")
        if self._torch_nccl is not None:
            dist.all_gather_into_tensor(out.view(-1), inp.view(-1), group=self._torch_nccl)
        else:
            self._comm("auto").all_gather(out.data_ptr(), inp.data_ptr(), inp.numel(),
                                          _native.dtype_code(inp.dtype), self._stream())
        return _CompletedWork() if async_op else None

    def broadcast(self, tensor, src: int, *, async_op=False):
        """As ``shardkit.comm.broadcast``, for CUDA tensors (``src`` is a group rank)."""
        check_tensor(tensor, "tensor", "cuda")
        if not isinstance(src, int) or not 0 <= src < self.world_size:
            raise ValueError(f"src: expected a rank in 0..{self.world_size - 1}, got {src!r}")
        if self._torch_nccl is not None:
            dist.broadcast(tensor, src=dist.get_global_rank(self.torch_group, src), group=self._torch_nccl)
        else:
            self._comm("auto").broadcast(tensor.data_ptr(), tensor.numel(), _native.dtype_code(tensor.dtype), src,
                                         self._stream())
        return _CompletedWork() if async_op else None

    def reduce(self, tensor, dst: int, op="sum", *, async_op=False):
        """As ``shardkit.comm.reduce``, for CUDA tensors (``dst`` is a group rank)."""
        check_tensor(tensor, "tensor", "cuda")
        op = op_name(op)
        if not isinstance(dst, int) or not 0 <= dst < self.world_size:
            raise ValueError(f"dst: expected a rank in 0..{self.world_size - 1}, got {dst!r}")
        if self._torch_nccl is not None:
            dist.reduce(tensor, dst=dist.get_global_rank(self.torch_group, dst), op=_TORCH_OPS[op], group=self._torch_nccl)
        else:
            self._comm("auto").reduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(),
                                      _native.dtype_code(tensor.dtype), _OP_CODES[op], dst, self._stream())
        return _CompletedWork() if async_op else None
