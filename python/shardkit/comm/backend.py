"""The ``shardkit`` torch.distributed backend.

After ``import shardkit``::

    dist.init_process_group("shardkit")                  # CPU tensors over shared memory
    dist.init_process_group("cpu:shardkit,cuda:nccl")    # CUDA tensors over NCCL

torch's collectives (``dist.all_reduce``, ``all_gather_into_tensor``,
``reduce_scatter_tensor``, ..., and so DDP, FSDP2 and DeviceMesh) then run on
``shardkit.comm``: shared memory between the ranks of one host, hierarchical
(gloo between host leaders) across hosts. Timeouts, dead peers and
mismatched calls raise ``shardkit.comm.CommError`` naming the ranks, as in
``shardkit.comm``; the timeout is ``init_process_group``'s.

How it plugs in: ``torch._C._distributed_c10d.Backend`` cannot be subclassed
from Python, but the creator given to ``Backend.register_backend`` may return
a ``dist.ProcessGroup`` subclass, which torch then uses as the group itself.
Its Python methods are what the torch.distributed front-end and DDP's C++
reducer call. No C++ backend is registered inside it (that would route
collectives around these methods).

What runs where:

* native (shared memory): all_reduce, reduce, reduce_scatter(_tensor),
  all_gather(_into_tensor), broadcast, gather, scatter, barrier, and their
  coalesced forms, for SUM, AVG, MAX and MIN over float32, float64,
  bfloat16, float16, int32 and int64 (16-bit floats accumulate in fp32 and
  round once). Data movement (broadcast, all_gather, gather, scatter) takes
  any dtype, as bytes: object collectives (``all_gather_object``,
  ``broadcast_object_list``) stay native.
* an internal gloo group made from the same store: reductions of other
  dtypes (bool, uint8, int8, int16) or other ops (PRODUCT, BAND, BOR, BXOR),
  send/recv, all_to_all, monitored_barrier.
* CUDA tensors: an NCCL group created on first use (every rank must issue
  the same CUDA collectives, as with NCCL itself). Without CUDA they raise.
"""

from __future__ import annotations

import datetime
import functools
import os

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import (
    AllgatherOptions,
    AllreduceCoalescedOptions,
    AllreduceOptions,
    BarrierOptions,
    BroadcastOptions,
    GatherOptions,
    ReduceOptions,
    ReduceScatterOptions,
    ScatterOptions,
)

from shardkit import _register_backend
from shardkit.comm import backend_ops as ops
from shardkit.comm.group import DEFAULT_SLOT_BYTES, Group

BACKEND_NAME = _register_backend.BACKEND_NAME


def _to_cuda_pg(method):
    """Send a call whose tensors live on CUDA to the NCCL group (created on first use)."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if _has_cuda_tensor(args):
            return getattr(self._cuda_group(), name)(*args, **kwargs)
        return method(self, *args, **kwargs)

    return wrapper


def _has_cuda_tensor(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.device.type != "cpu"
    if isinstance(obj, (list, tuple)):
        return any(_has_cuda_tensor(x) for x in obj)
    return False


def _single(tensors, name: str) -> torch.Tensor:
    if len(tensors) != 1:
        raise ValueError(f"{name}: the shardkit backend takes one tensor per rank, got {len(tensors)}")
    return tensors[0]


class _FutureWork(dist.Work):
    """The Work of one collective, done when its future is.

    (``_create_work_from_future`` would do, but its ``wait()`` drops the
    future's exception: a failed async collective would look successful.)
    """

    def __init__(self, fut: torch.futures.Future) -> None:
        super().__init__()
        self._fut = fut

    def wait(self, timeout=None) -> bool:
        self._fut.wait()  # re-raises the collective's error
        return True

    def is_completed(self) -> bool:
        return self._fut.done()

    def is_success(self) -> bool:
        if not self._fut.done():
            return False
        try:
            self._fut.wait()
        except Exception:  # noqa: BLE001 - the answer is "no"
            return False
        return True

    def get_future(self) -> torch.futures.Future:
        return self._fut

    def synchronize(self) -> None:
        self._fut.wait()


class ShardkitProcessGroup(dist.ProcessGroup):
    """A ``torch.distributed`` process group running on ``shardkit.comm`` (see the module doc).

    Made by ``dist.init_process_group("shardkit")`` / ``dist.new_group``; not
    meant to be constructed directly. ``comm_group`` is the underlying
    ``shardkit.comm.Group``; ``gloo`` the internal fallback group.
    """

    def __init__(self, store, rank: int, size: int, timeout: datetime.timedelta, global_ranks=None) -> None:
        super().__init__(rank, size)  # the (store, rank, size) form cannot be subclassed
        seconds = timeout.total_seconds()
        if not seconds > 0:
            raise ValueError(f"timeout: expected a positive timedelta, got {timeout!r}")
        slot_bytes = int(os.environ.get("SHARDKIT_COMM_SLOT_BYTES", DEFAULT_SLOT_BYTES))
        self._store = store
        self._timeout = timeout
        self._name = ""
        self.comm_group = Group.from_store(store, rank, size, timeout=seconds, slot_bytes=slot_bytes,
                                           global_ranks=global_ranks)
        self.gloo = _gloo_group(dist.PrefixStore("shardkit_gloo/", store), rank, size, timeout)
        self._nccl = None

    # ---- identity (DeviceMesh reads group_name) ---------------------------------------

    def _set_group_name(self, name: str) -> None:
        self._name = name

    @property
    def group_name(self) -> str:
        return self._name

    def name(self) -> str:
        return BACKEND_NAME

    def _get_backend_name(self) -> str:
        return BACKEND_NAME

    # ---- plumbing -------------------------------------------------------------------

    def _launch(self, fn, result, opts) -> dist.Work:
        """Run ``fn`` in issue order, on this thread (``opts.asyncOp`` False) or the worker thread.

        Returns a Work whose future holds ``result`` (the output tensors, as gloo's does).
        """
        fut = torch.futures.Future()

        def job():
            try:
                fn()
            except BaseException as exc:
                fut.set_exception(exc)
                raise
            fut.set_result(result)

        executor = self.comm_group.executor
        if getattr(opts, "asyncOp", True):
            executor.submit(job)
        else:
            executor.run(job)  # errors propagate as they are (CommError, ValueError, ...)
        return _FutureWork(fut)

    def _native_or_gloo(self, check, fn, result, opts, gloo_call) -> dist.Work:
        """``check()`` raises NeedsGloo for what only gloo does; then ``fn`` runs natively."""
        try:
            check()
        except ops.NeedsGloo:
            self._drain()
            return gloo_call()
        return self._launch(fn, result, opts)

    def _drain(self) -> None:
        """Wait for queued native collectives, so that a gloo call after them sees their results."""
        self.comm_group.executor.run(lambda: None)

    def _cuda_group(self):
        if self._nccl is None:
            if not (torch.cuda.is_available() and dist.is_nccl_available()):
                raise ValueError("tensor: the shardkit backend handles CPU tensors; CUDA tensors need CUDA and NCCL, "
                                 "which are not available here")
            store = dist.PrefixStore("shardkit_nccl/", self._store)
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = self._timeout
            self._nccl = dist.ProcessGroupNCCL(store, self.rank(), self.size(), opts)
        return self._nccl

    # ---- reductions ------------------------------------------------------------------

    @_to_cuda_pg
    def allreduce(self, tensors, opts=None):
        opts = _opts(opts, AllreduceOptions)
        op = opts.reduceOp
        return self._native_or_gloo(
            lambda: [ops.native_reduction(t, op) for t in tensors],
            lambda: ops.all_reduce(self.comm_group, tensors, op), tensors, opts,
            lambda: self.gloo.allreduce(tensors, opts))

    @_to_cuda_pg
    def allreduce_coalesced(self, tensors, opts=None):
        opts = opts if opts is not None else AllreduceCoalescedOptions()
        op = opts.reduceOp
        return self._native_or_gloo(
            lambda: [ops.native_reduction(t, op) for t in tensors],
            lambda: ops.all_reduce(self.comm_group, tensors, op), tensors, opts,
            lambda: self.gloo.allreduce_coalesced(tensors, opts))

    @_to_cuda_pg
    def reduce(self, tensors, opts=None):
        opts = _opts(opts, ReduceOptions)
        t = _single(tensors, "tensors")
        return self._native_or_gloo(
            lambda: ops.native_reduction(t, opts.reduceOp),
            lambda: ops.reduce(self.comm_group, t, opts.rootRank, opts.reduceOp), tensors, opts,
            lambda: self.gloo.reduce(tensors, opts))

    @_to_cuda_pg
    def reduce_scatter_single(self, output, input, opts=None):
        opts = _opts(opts, ReduceScatterOptions)
        return self._native_or_gloo(
            lambda: ops.native_reduction(input, opts.reduceOp),
            lambda: ops.reduce_scatter_single(self.comm_group, output, input, opts.reduceOp), [output], opts,
            lambda: self.gloo.reduce_scatter_single(output, input, opts))

    _reduce_scatter_base = reduce_scatter_single

    @_to_cuda_pg
    def reduce_scatter_single_coalesced(self, outputs, inputs, opts=None):
        opts = _opts(opts, ReduceScatterOptions)

        def run():
            for out, inp in zip(outputs, inputs, strict=True):
                ops.reduce_scatter_single(self.comm_group, out, inp, opts.reduceOp)

        return self._native_or_gloo(
            lambda: [ops.native_reduction(t, opts.reduceOp) for t in inputs], run, outputs, opts,
            lambda: self.gloo.reduce_scatter_single_coalesced(outputs, inputs, opts))

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    @_to_cuda_pg
    def reduce_scatter(self, outputs, input_lists, opts=None):
        opts = _opts(opts, ReduceScatterOptions)
        out = _single(outputs, "output_tensors")
        inputs = _single(input_lists, "input_tensor_lists")
        return self._native_or_gloo(
            lambda: ops.native_reduction(out, opts.reduceOp),
            lambda: ops.reduce_scatter(self.comm_group, out, inputs, opts.reduceOp), outputs, opts,
            lambda: self.gloo.reduce_scatter(outputs, input_lists, opts))

    # ---- data movement ---------------------------------------------------------------

    @_to_cuda_pg
    def broadcast(self, tensors, opts=None):
        opts = _opts(opts, BroadcastOptions)
        root = _root(opts.rootRank, self.size(), "src")

        def run():
            for t in tensors:
                ops.broadcast(self.comm_group, t, root)

        return self._launch(run, tensors, opts)

    @_to_cuda_pg
    def all_gather_single(self, output, input, opts=None):
        opts = _opts(opts, AllgatherOptions)
        return self._launch(lambda: ops.all_gather_single(self.comm_group, output, input), [output], opts)

    _allgather_base = all_gather_single

    @_to_cuda_pg
    def all_gather_single_coalesced(self, outputs, inputs, opts=None):
        opts = _opts(opts, AllgatherOptions)

        def run():
            for out, inp in zip(outputs, inputs, strict=True):
                ops.all_gather_single(self.comm_group, out, inp)

        return self._launch(run, outputs, opts)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    @_to_cuda_pg
    def allgather(self, output_lists, inputs, opts=None):
        opts = _opts(opts, AllgatherOptions)
        outs = _single(output_lists, "output_tensors")
        inp = _single(inputs, "input_tensors")
        return self._launch(lambda: ops.all_gather(self.comm_group, outs, inp), output_lists, opts)

    @_to_cuda_pg
    def allgather_coalesced(self, output_lists, inputs, opts=None):
        opts = _opts(opts, AllgatherOptions)
        if len(output_lists) != self.size():
            raise ValueError(f"output_tensor_lists: expected world_size = {self.size()} lists, got {len(output_lists)}")

        def run():
            for k, inp in enumerate(inputs):
                ops.all_gather(self.comm_group, [lst[k] for lst in output_lists], inp)

        return self._launch(run, output_lists, opts)

    @_to_cuda_pg
    def gather(self, output_lists, inputs, opts=None):
        opts = _opts(opts, GatherOptions)
        root = _root(opts.rootRank, self.size(), "dst")
        inp = _single(inputs, "input_tensors")
        outs = output_lists[0] if output_lists else []
        return self._launch(lambda: ops.gather(self.comm_group, outs, inp, root), output_lists, opts)

    @_to_cuda_pg
    def scatter(self, outputs, input_lists, opts=None):
        opts = _opts(opts, ScatterOptions)
        root = _root(opts.rootRank, self.size(), "src")
        out = _single(outputs, "output_tensors")
        inputs = input_lists[0] if input_lists else []
        return self._launch(lambda: ops.scatter(self.comm_group, out, inputs, root), outputs, opts)

    @_to_cuda_pg
    def barrier(self, opts=None):
        opts = _opts(opts, BarrierOptions)
        return self._launch(lambda: ops.barrier(self.comm_group), [], opts)

    # ---- gloo only ------------------------------------------------------------------

    @_to_cuda_pg
    def send(self, tensors, dst: int, tag: int = 0):
        self._drain()
        return self.gloo.send(tensors, dst, tag)

    @_to_cuda_pg
    def recv(self, tensors, src: int, tag: int = 0):
        self._drain()
        return self.gloo.recv(tensors, src, tag)

    @_to_cuda_pg
    def recv_anysource(self, tensors, tag: int = 0):
        self._drain()
        return self.gloo.recv_anysource(tensors, tag)

    @_to_cuda_pg
    def all_to_all_single(self, *args, **kwargs):
        self._drain()
        return self.gloo.all_to_all_single(*args, **kwargs)

    @_to_cuda_pg
    def alltoall_base(self, *args, **kwargs):
        self._drain()
        return self.gloo.alltoall_base(*args, **kwargs)

    @_to_cuda_pg
    def alltoall(self, *args, **kwargs):
        self._drain()
        return self.gloo.alltoall(*args, **kwargs)

    def monitored_barrier(self, *args, **kwargs):
        self._drain()
        return self.gloo.monitored_barrier(*args, **kwargs)

    # ---- lifetime -------------------------------------------------------------------

    def shutdown(self) -> None:
        """Finish queued work and release the shared memory (``destroy_process_group`` calls it)."""
        self.comm_group.destroy()

    def abort(self) -> None:
        self.comm_group.destroy()


def _gloo_group(store, rank: int, size: int, timeout: datetime.timedelta) -> dist.ProcessGroup:
    """A plain ProcessGroup over a gloo backend: it has the front-end's method names
    (``all_to_all_single``, ``reduce_scatter_single``, ...), which the backend object lacks."""
    backend = dist.ProcessGroupGloo(store, rank, size, timeout)
    pg = dist.ProcessGroup(store, rank, size)
    pg._set_default_backend(dist.ProcessGroup.BackendType.GLOO)
    pg._register_backend(torch.device("cpu"), dist.ProcessGroup.BackendType.GLOO, backend)
    return pg


def _opts(opts, cls):
    if opts is None:
        return cls()
    if isinstance(opts, (dist.ReduceOp, dist.ReduceOp.RedOpType)) and hasattr(cls(), "reduceOp"):
        made = cls()  # the legacy form pg.allreduce(tensors, op)
        made.reduceOp = opts
        return made
    return opts


def _root(root: int, size: int, name: str) -> int:
    if not 0 <= root < size:
        raise ValueError(f"{name}: expected a group rank in 0..{size - 1}, got {root}")
    return root


def create(backend_opts, _pg_options) -> ShardkitProcessGroup:
    """The creator ``torch.distributed`` calls (``extended_api=True``): one group per ``new_group``."""
    return ShardkitProcessGroup(backend_opts.store, backend_opts.group_rank, backend_opts.group_size,
                                backend_opts.timeout, global_ranks=list(backend_opts.global_ranks_in_group) or None)


def register() -> None:
    """Register ``"shardkit"`` with ``torch.distributed`` (idempotent; ``import shardkit`` does it)."""
    _register_backend.register()
