"""``shardkit.comm``: collectives for CPU ranks over shared memory, hierarchical across hosts.

Quick start (under ``torchrun``, or after ``torch.distributed.init_process_group``)::

    from shardkit import comm
    comm.init()                                  # joins torchrun's env, or wraps the default group
    comm.all_reduce(grad, "avg")                 # in place; algo="auto"|"ring"|"tree"
    comm.reduce_scatter(shard, flat_grads)       # flat_grads: world_size * shard.numel() elements
    comm.all_gather(flat_params, shard)          # flat_params: world_size * shard.numel() elements
    work = comm.broadcast(t, src=0, async_op=True); work.wait()

Semantics:

* dtypes float32, float64, bfloat16, float16, int32, int64; bfloat16 and
  float16 accumulate in fp32 and are rounded once, at the end.
* ops ``"sum"``, ``"avg"`` (floating dtypes only), ``"max"``, ``"min"`` (NaN
  propagates), as strings or ``torch.distributed.ReduceOp``.
* any numel, including 0; tensors must be contiguous CPU tensors (never
  copied silently). Collectives are not differentiable.
* every rank must issue the same collectives in the same order with the same
  dtype and size; a mismatch raises ``CommError`` on the ranks that see it,
  and the group is then aborted on all ranks.
* a dead or stalled peer raises ``CommError`` naming it within the group
  timeout (``timeout=`` of ``init``, or ``SHARDKIT_COMM_TIMEOUT``, default 300 s).
* ``async_op=True`` returns a ``Work`` handle (``wait()``, ``is_completed()``);
  a group runs its collectives in the order they were issued.

Threads: a rank splits the copy and reduction of each large message over
``Group.threads`` workers: ``SHARDKIT_COMM_THREADS`` if set (a positive
integer, else ``ValueError``), otherwise
``max(1, min(8, len(os.sched_getaffinity(0)) // local_world_size))``, this
rank's share of the cores it may run on, capped at 8 (``group.THREADS_CAP``:
8 one-core copiers already take most of a socket's memory bandwidth shared by
the host's ranks). ``OMP_NUM_THREADS`` and ``torch.get_num_threads()`` are not
read. A step is split only when every worker gets at least 64 KiB, and a slot
holds ``slot_bytes`` x min(threads, 4) (the largest thread count on the host).
Results are bitwise the same whatever the thread count or slot size.

Environment: ``SHARDKIT_HOST_ID`` overrides the host id (simulate several
hosts on one machine), ``SHARDKIT_COMM_TIMEOUT``, ``SHARDKIT_COMM_SLOT_BYTES``
(shared-memory chunk size per thread, default 256 KiB),
``SHARDKIT_COMM_THREADS`` (copy/reduce threads per rank, see above).
"""

from __future__ import annotations

from shardkit import _native
from shardkit.comm import collectives as _coll
from shardkit.comm.calibrate import calibrate
from shardkit.comm.cost_model import CostModel
from shardkit.comm.group import Group, join
from shardkit.comm.work import Work

CommError = getattr(_native.C, "CommError", RuntimeError) if _native.HAS_NATIVE else RuntimeError

# The group that calls without ``group=`` use, set by init() (as torch.distributed's default group).
_default: list[Group] = []


def init(group=None, *, timeout: float | None = None, slot_bytes: int | None = None, host_id: str | None = None) -> Group:
    """Join the collectives and make the result the default group.

    Args:
        group: an existing ``torch.distributed`` group to wrap. Default: the
            default group; if torch.distributed is not initialised yet, it is
            initialised (gloo) from torchrun's ``RANK``, ``WORLD_SIZE``,
            ``MASTER_ADDR`` and ``MASTER_PORT``.
        timeout: seconds a rank waits for a peer before raising CommError.
        slot_bytes: shared-memory chunk size per message and thread (a multiple of 64, >= 4096);
            a slot holds ``slot_bytes`` x min(threads, 4).
        host_id: overrides the host id (also ``SHARDKIT_HOST_ID``).

    Collective over the wrapped group: every rank must call it.
    """
    g = join(group, timeout=timeout, slot_bytes=slot_bytes, host_id=host_id)
    if _default:
        _default.pop().destroy()
    _default.append(g)
    return g


def get_group() -> Group:
    """The default group; raises if ``init()`` was not called."""
    if not _default:
        raise RuntimeError("shardkit.comm: call shardkit.comm.init() first")
    return _default[0]


def is_initialized() -> bool:
    return bool(_default)


def destroy(group: Group | None = None) -> None:
    """Release ``group`` (default: the default group) and its shared memory."""
    if group is None:
        if not _default:
            return
        group = _default.pop()
    elif _default and _default[0] is group:
        _default.pop()
    group.destroy()


def cleanup_stale_segments() -> int:
    """Remove shared-memory segments left by crashed jobs (creator process gone); returns the count."""
    return int(_native.require_native("shardkit.comm").comm_cleanup_stale_segments())


def all_reduce(tensor, op="sum", algo="auto", *, out=None, group: Group | None = None, async_op=False) -> Work | None:
    """Reduce ``tensor`` over all ranks, in place (or into ``out``, same shape and dtype).

    ``algo``: ``"ring"`` (reduce-scatter then all-gather, pipelined), ``"tree"``
    (double binary tree) or ``"auto"`` (the cost model's pick for this size).
    """
    return _coll.all_reduce(group or get_group(), tensor, op, algo, out=out, async_op=async_op)


def reduce_scatter(out, inp, op="sum", *, group: Group | None = None, async_op=False) -> Work | None:
    """``out`` (m elements) of rank i = reduction over ranks of block i of ``inp`` (world_size * m elements).

    A ring reduce-scatter on one host: each rank sends (p-1)/p of ``inp``, not an all-reduce.
    """
    return _coll.reduce_scatter(group or get_group(), out, inp, op, async_op=async_op)


def all_gather(out, inp, *, group: Group | None = None, async_op=False) -> Work | None:
    """Block i of ``out`` (world_size * m elements) = ``inp`` (m elements) of rank i.

    ``inp`` may be ``out``'s own block (in place).
    """
    return _coll.all_gather(group or get_group(), out, inp, async_op=async_op)


def broadcast(tensor, src: int, *, group: Group | None = None, async_op=False) -> Work | None:
    """Copy ``tensor`` of rank ``src`` into ``tensor`` of every rank."""
    return _coll.broadcast(group or get_group(), tensor, src, async_op=async_op)


def reduce(tensor, dst: int, op="sum", *, group: Group | None = None, async_op=False) -> Work | None:
    """Reduce ``tensor`` over ranks into ``tensor`` of rank ``dst``; other ranks' tensors are unchanged."""
    return _coll.reduce(group or get_group(), tensor, dst, op, async_op=async_op)


def barrier(*, group: Group | None = None, async_op=False) -> Work | None:
    """Return once every rank has entered the barrier."""
    return _coll.barrier(group or get_group(), async_op=async_op)


__all__ = [
    "init", "get_group", "is_initialized", "destroy", "cleanup_stale_segments", "calibrate",
    "all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "barrier",
    "Group", "Work", "CostModel", "CommError",
]
