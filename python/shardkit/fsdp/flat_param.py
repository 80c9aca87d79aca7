"""``FlatGroup``: the parameters of one unit as one flat buffer, of which each rank keeps 1/N.

Layout: the parameters are laid end to end in registration order, then
zero-padded to a multiple of the shard world size, so every rank's shard
has the same length (uneven sizes work at any world size)::

    full  (padded,)  = [p0 | p1 | ... | pad]      compute dtype (param_dtype)
    shard (padded/N,) = full[rank*m : (rank+1)*m]  the parameters' own dtype

``shard`` is the ``nn.Parameter`` the optimizer steps. ``full`` is an autograd
leaf; the modules' attributes are views of it (one ``split``, whose backward
is one concatenation), so the unit's gradient arrives as ``full.grad`` in a
single buffer, ready to reduce-scatter. Freeing ``full`` releases its storage
(size 0) while the views saved for backward keep referring to it; gathering
again refills the same storage, so those views see the parameters again.

The buffers live on the parameters' device (or ``device``). Collectives go
through a ``transport.Transport``; on CUDA, prefetched gathers and gradient
reductions run on the side streams of a ``streams.StreamSet`` (the memory
rules are in ``streams.py``); on CPU those are no-ops.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from shardkit.fsdp.streams import Pending, StreamSet


class FlatGroup:
    """One unit's parameters of one kind (trainable or frozen), flattened and sharded.

    Args:
        entries: ``[(param, [(module, attr, full name), ...]), ...]`` (every place a parameter is registered).
        transport: the ``transport.Transport`` of the ranks the buffer is sharded over, or None for a single process.
        sharded: False for NO_SHARD (every rank keeps the whole buffer and all-reduces gradients).
        param_dtype: compute dtype of the gathered parameters (None: the parameters' dtype).
        reduce_dtype: dtype gradients are reduced in (None: the compute dtype).
        replicas: HYBRID only: the ``torch.distributed`` group of the ranks on other
            hosts that hold the same shard (one per host); None otherwise.
        device: where the buffers live (default: the parameters' device).
        streams: the model's side streams (default: those of ``device``, none on CPU).
    """

    def __init__(self, entries, *, transport, sharded: bool, param_dtype, reduce_dtype, replicas=None,
                 device: torch.device | None = None, streams: StreamSet | None = None) -> None:
        params = [p for p, _ in entries]
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            names = [uses[0][2] for _, uses in entries]
            raise ValueError(f"model: the parameters of one unit must share a dtype, got {sorted(map(str, dtypes))} for {names}")
        self.dtype = params[0].dtype
        self.compute_dtype = param_dtype or self.dtype
        self.reduce_dtype = reduce_dtype or self.compute_dtype
        self.trainable = params[0].requires_grad
        self.uses = [uses for _, uses in entries]
        self.names = [uses[0][2] for uses in self.uses]
        self.shapes = [p.shape for p in params]
        self.numels = [p.numel() for p in params]
        self.device = torch.device(device) if device is not None else params[0].device
        self.streams = streams if streams is not None else StreamSet(self.device)
        self.transport = transport
        self.replicas = replicas
        self.num_replicas = dist.get_world_size(replicas) if replicas is not None else 1
        self.world = transport.world_size if transport is not None else 1
        self.rank = transport.rank if transport is not None else 0
        self.shard_world = self.world if sharded else 1
        total = sum(self.numels)
        self.shard_numel = -(-total // self.shard_world)  # ceil
        self.padded_numel = self.shard_numel * self.shard_world
        self.pad = self.padded_numel - total

        # (padded,) original values; this rank keeps its block as the shard.
        flat = torch.zeros(self.padded_numel, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            torch.cat([p.detach().reshape(-1).to(self.device) for p in params], out=flat[:total])
        lo = self.rank * self.shard_numel if sharded else 0
        self.shard = nn.Parameter(flat[lo : lo + self.shard_numel].clone(), requires_grad=self.trainable)
        # Same dtype and unsharded: the full buffer is the shard itself (no copy, no gather).
        self.alias = self.shard_world == 1 and self.compute_dtype == self.dtype
        if self.alias:
            self.full = self.shard.detach().requires_grad_(self.trainable)
        else:
            # Gathered at first (so the views can be made); the caller frees it.
            self.full = flat.to(self.compute_dtype).requires_grad_(self.trainable)
        self.stale = False  # True: full does not hold the shards' current values
        self.gathering: Pending | None = None  # a prefetch all-gather in flight
        self.pending: list = []  # (Pending, reduced gradient, its input) of gradient reductions in flight
        self.replica_pending: list = []  # (torch.distributed work, reduced gradient) of cross-host all-reduces

    # ---- parameters --------------------------------------------------------

    @property
    def is_unsharded(self) -> bool:
        return self.full.untyped_storage().size() > 0

    def _free(self) -> None:
        self.full.untyped_storage().resize_(0)

    def unshard(self) -> None:
        """Gather the full parameters into ``full`` (a no-op when they are there and current).

        After a prefetch, the caller (the compute stream on CUDA) waits for it.
        """
        if self.gathering is not None:
            self.gathering.wait()
            self.gathering = None
            return
        if self.is_unsharded and not self.stale:
            return
        self._gather(async_op=False)

    def prefetch(self) -> None:
        """Start gathering the full parameters in the background; ``unshard`` waits for it."""
        if self.gathering is None and self.shard_world > 1 and (self.stale or not self.is_unsharded):
            self._gather(async_op=True)

    def _gather(self, async_op: bool) -> None:
        storage = self.full.untyped_storage()
        if storage.size() == 0:
            # Allocated on the compute stream (the current one), before the side stream starts.
            storage.resize_(self.padded_numel * self.full.element_size())
        # Writes must not bump full's version counter: views saved for backward
        # by an earlier forward point at this storage and are still valid. So
        # they go through a second tensor on the same storage with a version
        # counter of its own (the cross-host all-gather writes it with torch
        # ops on the comm thread, after this returns).
        with torch.no_grad():
            out = torch.empty(0, dtype=self.full.dtype, device=self.device).set_(storage, 0, (self.padded_numel,))
            m = self.shard_numel
            own = out[self.rank * m : (self.rank + 1) * m] if self.shard_world > 1 else out
            if self.shard_world > 1 and async_op:
                # A prefetch: the cast of the shard and the gather run on the all-gather stream,
                # after the compute stream's work so far (the optimizer's step of the shard).
                with self.streams.side("all_gather"):
                    own.copy_(self.shard.detach())
                    work = self.transport.all_gather(out, own, async_op=True)
                    self.gathering = Pending(work, self.streams.record(), refs=(out,))
            else:
                own.copy_(self.shard.detach())
                if self.shard_world > 1:
                    self.transport.all_gather(out, own, async_op=False)
        self.stale = False

    def reshard(self) -> None:
        """Free the full parameters (kept when every rank holds them all anyway)."""
        if self.gathering is not None:  # never free memory a gather is writing (the compute stream waits for it)
            self.gathering.wait()
            self.gathering = None
        if self.shard_world > 1 and self.is_unsharded:
            self._free()

    def install_views(self) -> None:
        """Point every module attribute at its slice of ``full`` (differentiable views)."""
        chunks = torch.split(self.full, self.numels + [self.pad])
        for uses, chunk, shape in zip(self.uses, chunks, self.shapes):
            view = chunk.view(shape)
            for module, attr, _ in uses:
                module.__dict__[attr] = view

    # ---- gradients ---------------------------------------------------------

    def reduce_grad(self) -> None:
        """Start averaging ``full.grad`` over ranks into this rank's shard (asynchronously).

        On CUDA the cast and the collective run on the reduce-scatter stream
        after the compute stream's backward so far; ``settle_in_host`` and
        ``finish_grad`` make the compute stream wait before the result is read.
        """
        grad = self.full.grad  # (padded,) compute dtype
        self.full.grad = None
        if self.world == 1:  # nothing to reduce: the cast, if any, on the compute stream
            self.pending.append((None, grad.to(self.reduce_dtype) if grad.dtype != self.reduce_dtype else grad, None))
            return
        # The reduced shard is allocated on the compute stream, which reads it later.
        out = None
        if self.shard_world > 1:
            out = torch.empty(self.shard_numel, dtype=self.reduce_dtype, device=self.device)
        with self.streams.side("reduce_scatter"):
            # The cast runs on the side stream; its output lives there only. The collective's input is held
            # until the compute stream waited for it (``Pending``).
            inp = grad.to(self.reduce_dtype) if grad.dtype != self.reduce_dtype else grad
            if inp is not grad and self.streams.enabled:
                # Only the cast reads the compute-dtype gradient: dropped now, its memory is not handed out
                # again before the side stream's cast is done.
                grad.record_stream(torch.cuda.current_stream(self.device))
            if out is not None:
                work = self.transport.reduce_scatter_avg(out, inp, async_op=True)
                self.pending.append((Pending(work, self.streams.record(), refs=(inp,)), out, inp))
            else:
                work = self.transport.all_reduce(inp, "avg", async_op=True)
                self.pending.append((Pending(work, self.streams.record(), refs=(inp,)), inp, None))

    def settle_in_host(self) -> None:
        """Wait for this group's in-host reductions and drop their full-gradient inputs;
        under HYBRID, start summing their results over the hosts.

        Called when the next unit's reduction starts (and at the end of
        backward), so at most two units' full gradients exist at a time (one
        accumulating, one being reduced) and the cross-host all-reduce of a
        unit overlaps the backward of the units after it. The in-host
        reduction averaged over the host's ranks; ``finish_grad`` divides the
        cross-host sum by the number of hosts, so the result is the average over all ranks.
        """
        kept = []
        for work, reduced, inp in self.pending:
            if inp is None and self.replicas is None:
                kept.append((work, reduced, None))  # an in-place all-reduce (NO_SHARD): finish_grad waits for it
                continue
            if work is not None:
                work.wait()
            if self.replicas is not None:
                self.replica_pending.append((dist.all_reduce(reduced, group=self.replicas, async_op=True), reduced))
            else:
                kept.append((None, reduced, None))
        self.pending = kept

    def finish_grad(self) -> None:
        """Wait for the reductions and accumulate them into ``shard.grad``."""
        done = [(work, reduced) for work, reduced, _ in self.pending]
        for work, reduced in self.replica_pending:
            work.wait()
            reduced.div_(self.num_replicas)
            done.append((None, reduced))
        for work, reduced in done:
            if work is not None:
                work.wait()
            reduced = reduced.to(self.dtype) if reduced.dtype != self.dtype else reduced
            if self.shard.grad is None:
                self.shard.grad = reduced
            else:
                self.shard.grad.add_(reduced)
        self.pending.clear()
        self.replica_pending.clear()

    def full_values(self) -> torch.Tensor:
        """(padded,) every rank's shard gathered, in the shard's dtype; a collective."""
        out = torch.empty(self.padded_numel, dtype=self.dtype, device=self.device)
        if self.shard_world > 1:
            self.transport.all_gather(out, self.shard.detach(), async_op=False)
        else:
            out.copy_(self.shard.detach())
        return out
