"""What the ``shardkit`` backend does for each torch.distributed collective.

Every function takes the backend's ``Group`` (shared memory on one host,
hierarchical across hosts) and plain tensors, runs on the caller's thread or
the group's worker thread (the caller picks, see ``backend.py``), and either
finishes the collective or raises ``NeedsGloo`` before anything was sent, for
what the native transport cannot do:

* reductions of dtypes other than float32/float64/bfloat16/float16/int32/
  int64 (bool, uint8, int8, int16, ...) and ops other than SUM, AVG, MAX, MIN
  (PRODUCT, BAND, BOR, BXOR, PREMUL_SUM) go to the backend's internal gloo
  group. The decision depends only on dtype and op, which every rank must
  agree on anyway, so all ranks take the same path.

Data movement (broadcast, all_gather, gather, scatter) does not care about
the dtype: any dtype moves as its bytes (viewed as int32 when the size and
alignment allow, else through a padded staging copy). Non-contiguous tensors
are staged through a contiguous copy and the result is copied back, so no
in-place result is ever lost.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from shardkit.comm import collectives as coll
from shardkit.comm.group import Group

_NATIVE_OPS = {"sum", "avg", "max", "min"}
_OP_NAMES = {dist.ReduceOp.SUM: "sum", dist.ReduceOp.AVG: "avg", dist.ReduceOp.MAX: "max", dist.ReduceOp.MIN: "min"}


class NeedsGloo(Exception):
    """Raised before any data moved: run this collective on the gloo fallback."""


def reduce_op_name(op) -> str | None:
    """"sum"|"avg"|"max"|"min" for the ops the native path runs, else None (gloo's)."""
    if isinstance(op, dist.ReduceOp.RedOpType):
        return _OP_NAMES.get(op)
    if isinstance(op, dist.ReduceOp):
        for k, v in _OP_NAMES.items():
            if op == k:
                return v
    return None


def native_reduction(t: torch.Tensor, op) -> str:
    """The native op name for reducing ``t`` with ``op``; raises NeedsGloo when only gloo can."""
    name = reduce_op_name(op)
    if name is None or t.dtype not in coll.SUPPORTED_DTYPES:
        raise NeedsGloo
    if name == "avg" and not t.is_floating_point():
        raise TypeError(f"tensor: ReduceOp.AVG needs a floating-point dtype, got {t.dtype}")
    return name


def _contig(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(t, False) when contiguous, else (a contiguous copy, True: copy the result back)."""
    return (t, False) if t.is_contiguous() else (t.contiguous(), True)


def _words(t: torch.Tensor) -> torch.Tensor | None:
    """``t``'s bytes as a 1-D int32 (or natively supported) view, or None when no view exists."""
    if not t.is_contiguous():
        return None
    if t.dtype in coll.SUPPORTED_DTYPES:
        return t.view(-1)
    flat = t.view(-1).view(torch.uint8)
    if flat.numel() % 4 or (t.storage_offset() * t.element_size()) % 4:
        return None
    return flat.view(torch.int32)


def _padded_words(t: torch.Tensor, words: int) -> torch.Tensor:
    """A ``words``-int32 staging buffer holding ``t``'s bytes at its start."""
    buf = torch.zeros(words, dtype=torch.int32)
    src = t.contiguous().view(-1)
    if src.numel():
        buf.view(torch.uint8)[: src.numel() * src.element_size()] = src.view(torch.uint8)
    return buf


def _unpad_into(t: torch.Tensor, buf: torch.Tensor) -> None:
    """Copy the first bytes of staging buffer ``buf`` back into ``t``."""
    if t.numel() == 0:
        return
    nbytes = t.numel() * t.element_size()
    t.copy_(buf.view(torch.uint8)[:nbytes].view(t.dtype).view(t.shape))


def _word_count(t: torch.Tensor) -> int:
    return (t.numel() * t.element_size() + 3) // 4


# ---- reductions ------------------------------------------------------------------


def all_reduce(g: Group, tensors: list[torch.Tensor], op) -> None:
    names = [native_reduction(t, op) for t in tensors]
    for t, name in zip(tensors, names):
        work, copied = _contig(t)
        coll.all_reduce(g, work, name)
        if copied:
            t.copy_(work)


def reduce(g: Group, t: torch.Tensor, root: int, op) -> None:
    name = native_reduction(t, op)
    work, copied = _contig(t)
    coll.reduce(g, work, root, name)
    if copied and g.rank == root:
        t.copy_(work)


def reduce_scatter_single(g: Group, out: torch.Tensor, inp: torch.Tensor, op) -> None:
    name = native_reduction(inp, op)
    if out.dtype != inp.dtype:
        raise TypeError(f"output: expected dtype {inp.dtype} (as input), got {out.dtype}")
    if inp.numel() != g.world_size * out.numel():
        raise ValueError(f"input: expected world_size * output.numel() = {g.world_size} * {out.numel()} elements, "
                         f"got {inp.numel()}")
    work, copied = _contig(out)
    coll.reduce_scatter(g, work, inp.contiguous(), name)
    if copied:
        out.copy_(work)


def reduce_scatter(g: Group, out: torch.Tensor, inputs: list[torch.Tensor], op) -> None:
    native_reduction(out, op)
    if len(inputs) != g.world_size:
        raise ValueError(f"input_list: expected world_size = {g.world_size} tensors, got {len(inputs)}")
    for i, t in enumerate(inputs):
        if t.numel() != out.numel() or t.dtype != out.dtype:
            raise ValueError(f"input_list[{i}]: expected {out.numel()} elements of {out.dtype} (as output), "
                             f"got {t.numel()} of {t.dtype}")
    flat = torch.cat([t.reshape(-1) for t in inputs]) if out.numel() else torch.empty(0, dtype=out.dtype)
    reduce_scatter_single(g, out, flat, op)


# ---- data movement -------------------------------------------------------------------


def broadcast(g: Group, t: torch.Tensor, root: int) -> None:
    words = _words(t)
    if words is not None:
        coll.broadcast(g, words, root)
        return
    buf = _padded_words(t, _word_count(t))
    coll.broadcast(g, buf, root)
    if g.rank != root:
        _unpad_into(t, buf)


def all_gather_single(g: Group, out: torch.Tensor, inp: torch.Tensor) -> None:
    if out.dtype != inp.dtype:
        raise TypeError(f"output: expected dtype {inp.dtype} (as input), got {out.dtype}")
    if out.numel() != g.world_size * inp.numel():
        raise ValueError(f"output: expected world_size * input.numel() = {g.world_size} * {inp.numel()} elements, "
                         f"got {out.numel()}")
    out_words, in_words = _words(out), _words(inp)
    if out_words is not None and in_words is not None:
        coll.all_gather(g, out_words, in_words)
        return
    # Staged: per-rank blocks padded to whole words, copied out block by block.
    w = _word_count(inp)
    staged = torch.empty(g.world_size * w, dtype=torch.int32)
    coll.all_gather(g, staged, _padded_words(inp, w))
    blocks = out.view(-1) if out.is_contiguous() else torch.empty(out.numel(), dtype=out.dtype)
    m = inp.numel()
    for r in range(g.world_size):
        _unpad_into(blocks[r * m : (r + 1) * m], staged[r * w : (r + 1) * w])
    if not out.is_contiguous():
        out.copy_(blocks.view(out.shape))


def all_gather(g: Group, outs: list[torch.Tensor], inp: torch.Tensor) -> None:
    if len(outs) != g.world_size:
        raise ValueError(f"tensor_list: expected world_size = {g.world_size} tensors, got {len(outs)}")
    for i, t in enumerate(outs):
        if t.numel() != inp.numel() or t.dtype != inp.dtype:
            raise ValueError(f"tensor_list[{i}]: expected {inp.numel()} elements of {inp.dtype} (as tensor), "
                             f"got {t.numel()} of {t.dtype}; uneven all_gather is not supported")
    flat = torch.empty(g.world_size * inp.numel(), dtype=inp.dtype)
    all_gather_single(g, flat, inp)
    m = inp.numel()
    for r, t in enumerate(outs):
        t.copy_(flat[r * m : (r + 1) * m].view(t.shape))


def gather(g: Group, outs: list[torch.Tensor], inp: torch.Tensor, root: int) -> None:
    # An all-gather whose result only the root keeps: (p-1)x the traffic of a
    # true gather, which is rare enough (object collectives, checkpoints) not to matter.
    if g.rank == root and len(outs) != g.world_size:
        raise ValueError(f"gather_list: expected world_size = {g.world_size} tensors on the root, got {len(outs)}")
    if g.rank != root:
        outs = [torch.empty_like(inp) for _ in range(g.world_size)]
    all_gather(g, outs, inp)


def scatter(g: Group, out: torch.Tensor, inputs: list[torch.Tensor], root: int) -> None:
    # The root's blocks are broadcast and every rank keeps its own.
    m = out.numel()
    if g.rank == root:
        if len(inputs) != g.world_size:
            raise ValueError(f"scatter_list: expected world_size = {g.world_size} tensors, got {len(inputs)}")
        for i, t in enumerate(inputs):
            if t.numel() != m or t.dtype != out.dtype:
                raise ValueError(f"scatter_list[{i}]: expected {m} elements of {out.dtype} (as tensor), "
                                 f"got {t.numel()} of {t.dtype}")
        flat = torch.cat([t.reshape(-1) for t in inputs]) if m else torch.empty(0, dtype=out.dtype)
    else:
        flat = torch.empty(g.world_size * m, dtype=out.dtype)
    broadcast(g, flat, root)
    out.copy_(flat[g.rank * m : (g.rank + 1) * m].view(out.shape))


def barrier(g: Group) -> None:
    coll.barrier(g)
