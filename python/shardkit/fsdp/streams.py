"""Side streams of ``shard()`` on CUDA: all-gather prefetch and gradient reduction overlap compute.

The rule that keeps memory safe without ``record_stream``:

* every buffer a collective writes or reads is allocated on the compute
  stream (the current stream when ``shard()``'s hooks run), or on the side
  stream itself and used there only;
* a side stream starts its work after the compute stream's work issued so far
  (``StreamSet.side`` makes it wait on the compute stream first), so a block
  the allocator handed out again on the compute stream is no longer read by an
  earlier kernel when the side stream writes it;
* the compute stream waits on the side stream's event (``Pending.wait``)
  before it reads the result, frees the buffers or lets the optimizer step,
  and the Python references to the inputs are held until then, so the
  allocator cannot reuse them while the side stream still reads them.

On CPU (and the meta device) there are no streams: ``side`` is a plain
context, ``record`` returns None and ``Pending.wait`` only waits for the
collective's work handle. Nothing here touches CUDA at import time.
"""

from __future__ import annotations

import contextlib

import torch


class StreamSet:
    """The two side streams of one sharded model on ``device`` (none on CPU).

    ``all_gather`` carries the prefetched gathers (and their bf16 casts of the
    shards); ``reduce_scatter`` carries the gradient casts and reductions.
    Both get a high priority, as torch FSDP's do, so a collective is not
    queued behind a long compute kernel.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.enabled = self.device.type == "cuda"
        self._streams: dict[str, torch.cuda.Stream] = {}
        if self.enabled:
            for name in ("all_gather", "reduce_scatter"):
                self._streams[name] = torch.cuda.Stream(self.device, priority=-1)

    def stream(self, name: str):
        """The side stream ``name`` ("all_gather" or "reduce_scatter"); None on CPU."""
        if name not in ("all_gather", "reduce_scatter"):
            raise ValueError(f"name: expected 'all_gather' or 'reduce_scatter', got {name!r}")
        return self._streams.get(name)

    @contextlib.contextmanager
    def side(self, name: str):
        """Run the body on side stream ``name``, after the compute stream's work issued so far."""
        side = self.stream(name)
        if side is None:
            yield
            return
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            yield

    def record(self):
        """An event on the current stream (a side stream inside ``side``); None on CPU."""
        if not self.enabled:
            return None
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def wait_for(self, name: str) -> None:
        """The current (compute) stream waits for all the work issued on side stream ``name`` (no-op on CPU)."""
        side = self.stream(name)
        if side is not None:
            torch.cuda.current_stream(self.device).wait_stream(side)


class Pending:
    """A collective in flight: its work handle (None when already ordered by the stream) and the side
    stream's event after it (None on CPU); ``refs`` are the tensors it reads or writes, held until ``wait``."""

    __slots__ = ("work", "event", "refs")

    def __init__(self, work, event, refs=()) -> None:
        self.work, self.event, self.refs = work, event, tuple(refs)

    def wait(self) -> None:
        """Make the caller (the CPU on host transports, the current CUDA stream on device ones) wait for the
        collective; then drop the references, which are now safe to free on the current stream."""
        if self.work is not None:
            self.work.wait()  # torch's NCCL work: the current stream waits; gloo and shardkit.comm: the CPU
            self.work = None
        if self.event is not None:
            self.event.wait()  # torch.cuda.Event.wait: the current stream waits on it
            self.event = None
        self.refs = ()
