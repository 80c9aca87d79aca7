"""Process groups of ``shardkit.comm``: who is where, and the transports.

A Group is made either over a registered ``torch.distributed`` group
(``Group(torch_group, ...)``, what ``shardkit.comm.init`` does) or from a
bare ``(store, rank, world_size)`` (``Group.from_store``, what the
``shardkit`` torch.distributed backend does: inside its creator no group
exists yet). Ranks are grouped by host (the host id is the hostname plus the
boot id, or ``SHARDKIT_HOST_ID`` when set, which lets tests simulate several
hosts on one machine). The ranks of one host share a shared-memory segment
(``shardkit._C.ShmGroup``); the first rank of every host (its leader) is also
in a gloo group of leaders (``Leaders``), used by the hierarchical cross-host
path.

Threads: each rank may split the copy and reduction of every shared-memory
message over ``Group.threads`` workers (``comm_threads``): ``SHARDKIT_COMM_THREADS``
if set, else the cores this rank may run on divided by the ranks on its host,
at most ``THREADS_CAP``. ``OMP_NUM_THREADS`` and ``torch.get_num_threads()``
are never read: they size torch's compute, not our copies. The thread count
changes no result.
"""

from __future__ import annotations

import datetime
import os
import pickle
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import torch.distributed as dist

from shardkit import _native
from shardkit.comm import cost_model
from shardkit.comm.leaders import Leaders
from shardkit.comm.work import Executor

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_SLOT_BYTES = 256 * 1024
# At most this many copy/reduce threads per rank by default. One core copies
# about 6 GB/s between processes; 8 of them move about 50 GB/s per rank, which
# on a socket shared with the other ranks is already most of its memory
# bandwidth, while each extra worker adds to every message's fork/join.
THREADS_CAP = 8
# A step is split only where every worker gets at least this much: at ~6 GB/s
# 64 KiB is ~10 us of copying, several times parallel_run's fork/join (a few
# us to wake the workers), so the split cannot cost more than it saves.
MIN_BYTES_PER_THREAD = 64 * 1024
# Slots grow with the thread count (slot_bytes x min(threads, 4)), so each
# worker still gets a useful piece of a message; at most 4x keeps the segment
# (local ranks x 4 slots x slot) within a container's default 64 MiB /dev/shm
# at 8 ranks and the default slot_bytes.
MAX_SLOT_SCALE = 4
THREADS_ENV = "SHARDKIT_COMM_THREADS"


def threads_override() -> int | None:
    """``SHARDKIT_COMM_THREADS`` as a positive int, None when unset or empty; raises ValueError otherwise."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{THREADS_ENV}: expected a positive integer number of threads, got {raw!r}")
    return value


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def default_threads(local_world_size: int, cores: int | None = None) -> int:
    """``max(1, min(THREADS_CAP, cores // local_world_size))``: this rank's share of the host's cores."""
    if cores is None:
        cores = available_cores()
    return max(1, min(THREADS_CAP, cores // max(1, local_world_size)))


def comm_threads(local_world_size: int) -> int:
    """Copy/reduce threads of one rank: ``SHARDKIT_COMM_THREADS`` if set, else ``default_threads``."""
    override = threads_override()
    return override if override is not None else default_threads(local_world_size)


def default_host_id() -> str:
    """``SHARDKIT_HOST_ID`` if set, else hostname + boot id (containers may share a hostname)."""
    override = os.environ.get("SHARDKIT_HOST_ID")
    if override:
        return override
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}:{boot}"


@dataclass(frozen=True)
class Topology:
    """Where every rank of the group lives; ranks are group ranks."""

    hosts: tuple[tuple[int, ...], ...]  # ranks of each host, in rank order
    host_of: tuple[int, ...]  # rank -> host index

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)


class Group:
    """A set of ranks that run collectives together (see ``shardkit.comm.init``).

    Attributes:
        rank, world_size: this process's rank in the group and the group size.
        local_rank, local_world_size: the same within this host.
        topology: the ranks of every host.
        torch_group: the wrapped ``torch.distributed`` group.
        model: the cost model ``algo="auto"`` uses (identical on all ranks).
        threads: workers this rank splits each large copy/reduce step over
            (``comm_threads``; may differ between ranks, changes no result).
        slot_bytes: the shared-memory slot size in use: the requested
            ``slot_bytes`` x min(largest ``threads`` on this host, ``MAX_SLOT_SCALE``).
    """

    def __init__(self, torch_group=None, *, timeout: float, slot_bytes: int, host_id: str | None,
                 _store_args: tuple | None = None) -> None:
        C = _native.require_native("shardkit.comm")
        self.torch_group = torch_group
        self.timeout = float(timeout)
        if _store_args is None:
            self.rank = dist.get_rank(torch_group)
            self.world_size = dist.get_world_size(torch_group)
            self.global_ranks = [dist.get_global_rank(torch_group, r) for r in range(self.world_size)]
            exchange = _exchange_over_group(torch_group, self.world_size)
        else:
            store, self.rank, self.world_size, global_ranks = _store_args
            self.global_ranks = list(global_ranks) if global_ranks is not None else list(range(self.world_size))
            exchange = _exchange_over_store(store, self.rank, self.world_size, self.timeout)
        host = host_id or default_host_id()
        override = threads_override()  # a bad value raises before any rank waits on this one
        infos = exchange("info", {"host": host, "pid": os.getpid(), "token": uuid.uuid4().hex[:12],
                                  "threads": override, "cores": available_cores()})
        hosts: dict[str, list[int]] = {}
        for r, entry in enumerate(infos):
            hosts.setdefault(entry["host"], []).append(r)
        host_list = tuple(tuple(ranks) for ranks in hosts.values())
        host_of = [0] * self.world_size
        for h, ranks in enumerate(host_list):
            for r in ranks:
                host_of[r] = h
        self.topology = Topology(hosts=host_list, host_of=tuple(host_of))
        self.host_index = host_of[self.rank]
        local = host_list[self.host_index]
        self.local_rank = local.index(self.rank)
        self.local_world_size = len(local)
        # Every local rank's thread count, computed alike everywhere: the slot
        # size, which all ranks of a host must share, grows with the largest.
        local_threads = [infos[r]["threads"] or default_threads(len(local), infos[r]["cores"]) for r in local]
        self.threads = local_threads[self.local_rank]
        self.slot_bytes = int(slot_bytes) * min(MAX_SLOT_SCALE, max(local_threads))

        # Every rank uses rank 0's constants, so "auto" picks the same algorithm everywhere.
        model_key = cost_model.cache_key(infos[0]["host"], len(host_list[0]))
        cached = cost_model.load_cached(model_key) if self.rank == 0 else None
        models = exchange("model", cached.to_dict() if cached else None)
        self.model = cost_model.CostModel.from_dict(models[0]) if models[0] else cost_model.CostModel()
        self.model_key = model_key

        leader = local[0]
        name = f"shardkit_{infos[leader]['pid']}_{infos[0]['token']}_{self.host_index}"
        self.shm = C.ShmGroup(name, self.local_rank, self.local_world_size, self.slot_bytes, self.timeout,
                              [self.global_ranks[r] for r in local])
        self.shm.set_threads(self.threads, MIN_BYTES_PER_THREAD)
        self.leaders: Leaders | None = None
        self.is_leader = self.local_rank == 0
        if self.topology.num_hosts > 1:
            if _store_args is None:
                leader_ranks = [self.global_ranks[ranks[0]] for ranks in host_list]
                # new_group is collective over the whole default group.
                made = dist.new_group(leader_ranks, timeout=datetime.timedelta(seconds=self.timeout))
                self.leaders = Leaders(made) if self.is_leader else None
            elif self.is_leader:
                self.leaders = Leaders.from_store(store, self.host_index, self.topology.num_hosts, self.timeout)
        self.executor = Executor()
        # Groups made from this one (e.g. HYBRID's per-host shard group), released with it.
        self.subgroups: list[Group] = []

    @classmethod
    def from_store(cls, store, rank: int, world_size: int, *, timeout: float, slot_bytes: int,
                   host_id: str | None = None, global_ranks=None) -> Group:
        """A Group of ``world_size`` ranks that meet through ``store`` (a ``torch.distributed.Store``).

        Needs no ``torch.distributed`` group: host information goes through the
        store (keys under ``shardkit_group/``), and across hosts the leaders get
        a gloo group of their own, made from the same store. ``global_ranks``
        (default ``range(world_size)``) only name ranks in error messages.
        Collective over the ``world_size`` ranks: every one must call it.
        """
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an int in 0..{world_size - 1}, got {rank!r}")
        return cls(None, timeout=timeout, slot_bytes=slot_bytes, host_id=host_id,
                   _store_args=(dist.PrefixStore("shardkit_group/", store), rank, world_size, global_ranks))

    @property
    def leaders_group(self):
        """The leaders' ``torch.distributed`` process group (None off leaders or on one host)."""
        return None if self.leaders is None else self.leaders.pg

    def local_ranks(self, host: int | None = None) -> tuple[int, ...]:
        """Group ranks on ``host`` (default: this host)."""
        return self.topology.hosts[self.host_index if host is None else host]

    def set_timeout(self, seconds: float) -> None:
        """How long a rank waits for a peer before raising CommError."""
        if not seconds > 0:
            raise ValueError(f"seconds: expected a positive timeout, got {seconds!r}")
        self.timeout = float(seconds)
        self.shm.set_timeout(self.timeout)

    def destroy(self) -> None:
        """Finish pending work and unmap the shared memory, this group's and its subgroups'. Idempotent."""
        while self.subgroups:
            self.subgroups.pop().destroy()
        self.executor.shutdown()
        self.shm.close()


def _exchange_over_group(torch_group, world_size: int) -> Callable[[str, object], list]:
    def exchange(_key: str, obj) -> list:
        out: list = [None] * world_size
        dist.all_gather_object(out, obj, group=torch_group)
        return out

    return exchange


def _exchange_over_store(store, rank: int, world_size: int, timeout: float) -> Callable[[str, object], list]:
    """Every rank writes its object under ``key/rank`` and reads everyone's; a rank that
    never writes makes the others raise naming it after ``timeout`` seconds."""

    def exchange(key: str, obj) -> list:
        store.set(f"{key}/{rank}", pickle.dumps(obj))
        keys = [f"{key}/{r}" for r in range(world_size)]
        try:
            store.wait(keys, datetime.timedelta(seconds=timeout))
        except Exception as exc:  # noqa: BLE001 - re-raised naming the missing ranks
            missing = [r for r, k in enumerate(keys) if not store.check([k])]
            raise TimeoutError(f"shardkit.comm: group creation timed out after {timeout} s: rank {rank} waited for "
                               f"ranks {missing} to join") from exc
        return [pickle.loads(store.get(k)) for k in keys]

    return exchange


def join(group=None, *, timeout: float | None = None, slot_bytes: int | None = None, host_id: str | None = None) -> Group:
    """Create a Group over ``group`` (default: the default group, created from torchrun's environment)."""
    if timeout is None:
        timeout = float(os.environ.get("SHARDKIT_COMM_TIMEOUT", DEFAULT_TIMEOUT_S))
    if slot_bytes is None:
        slot_bytes = int(os.environ.get("SHARDKIT_COMM_SLOT_BYTES", DEFAULT_SLOT_BYTES))
    if group is None:
        if not dist.is_initialized():
            missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
            if missing:
                raise RuntimeError(
                    "shardkit.comm.init(): torch.distributed is not initialised and the torchrun variables "
                    f"{missing} are not set; run under torchrun or pass an existing group"
                )
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
        group = dist.group.WORLD
    return Group(group, timeout=timeout, slot_bytes=slot_bytes, host_id=host_id)
