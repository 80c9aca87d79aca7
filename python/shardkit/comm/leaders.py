"""The cross-host step of the hierarchical collectives: one rank per host (its
leader) talks to the other hosts' leaders over gloo.

``Leaders`` calls the process group object directly, with host indices as
ranks, so it works the same over a group registered with ``dist.new_group``
(``shardkit.comm.init``) and over a bare ``ProcessGroupGloo`` made from a
store (the ``shardkit`` backend, whose creator runs before any group exists).
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import AllgatherOptions, AllreduceOptions, BarrierOptions, BroadcastOptions, ReduceOptions

_TORCH_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class Leaders:
    """The host leaders' gloo group; ranks are host indices."""

    def __init__(self, pg) -> None:
        self.pg = pg

    @classmethod
    def from_store(cls, store, host_index: int, num_hosts: int, timeout: float) -> Leaders:
        """A gloo group of the ``num_hosts`` leaders, meeting under ``shardkit_leaders/`` of ``store``."""
        prefix = dist.PrefixStore("shardkit_leaders/", store)
        pg = dist.ProcessGroupGloo(prefix, host_index, num_hosts, datetime.timedelta(seconds=timeout))
        return cls(pg)

    def all_reduce(self, t: torch.Tensor, op: str) -> None:
        opts = AllreduceOptions()
        opts.reduceOp = _TORCH_OPS[op]
        self.pg.allreduce([t], opts).wait()

    def all_gather(self, out: list[torch.Tensor], t: torch.Tensor) -> None:
        self.pg.allgather([out], [t], AllgatherOptions()).wait()

    def broadcast(self, t: torch.Tensor, host: int) -> None:
        opts = BroadcastOptions()
        opts.rootRank = host
        opts.rootTensor = 0
        self.pg.broadcast([t], opts).wait()

    def reduce(self, t: torch.Tensor, host: int, op: str) -> None:
        opts = ReduceOptions()
        opts.reduceOp = _TORCH_OPS[op]
        opts.rootRank = host
        opts.rootTensor = 0
        self.pg.reduce([t], opts).wait()

    def barrier(self) -> None:
        self.pg.barrier(BarrierOptions()).wait()
