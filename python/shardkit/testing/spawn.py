"""Run a function on N local processes, torchrun-style, and collect the results.

Children are started from a fork server that has torch imported already.

Each child gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``
(and ``MASTER_ADDR``/``MASTER_PORT`` with the TCP store), optionally joins a
``torch.distributed`` group, runs ``fn(rank, world_size, *args)`` and sends
back its return value. The parent never hangs: past ``timeout`` the children
are killed and a TimeoutError names the ranks that did not finish; a child's
exception is re-raised in the parent as a ChildError naming its rank, with
the child's traceback; a child that dies without a result is reported with
its exit code.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any


class ChildError(RuntimeError):
    """A spawned rank raised or died; ``rank`` says which one."""

    def __init__(self, rank: int, message: str):
        super().__init__(message)
        self.rank = rank


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _context():
    # A fork server imports torch once; every child is then forked from it
    # (fast, and safe: the server never runs torch's thread pools). Plain
    # "spawn" would import torch again in every child, seconds each.
    ctx = mp.get_context("forkserver")
    # torch._dynamo: torch.optim imports it on first use, seconds per fresh
    # process on a small machine; preloaded once, every rank forks with it.
    ctx.set_forkserver_preload(["torch", "torch.distributed", "torch._dynamo", "shardkit"])
    return ctx


def _child(fn, rank, world_size, args, env, init, results):
    os.environ.update(env)
    try:
        if init is not None:
            import datetime

            import torch.distributed as dist

            backend, init_method, timeout = init
            dist.init_process_group(
                backend,
                init_method=init_method,
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=timeout),
            )
        try:
            value = fn(rank, world_size, *args)
        finally:
            if init is not None:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()
        results.put((rank, "ok", value))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        results.put((rank, "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    *,
    args: tuple = (),
    timeout: float = 120.0,
    backend: str | None = "gloo",
    store: str = "file",
    env: dict[str, str] | None = None,
    rank_env: Callable[[int], dict[str, str]] | None = None,
    may_die: Iterable[int] = (),
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` fresh processes.

    Args:
        fn: a module-level (picklable) function; its return value must pickle.
        world_size: number of processes, at least 1.
        args: extra positional arguments for ``fn``.
        timeout: seconds for the whole run, start-up included.
        backend: ``torch.distributed`` backend to join before ``fn`` runs
            (``None``: join nothing, only set the torchrun variables).
        store: ``"file"`` (a file store in a temporary directory) or ``"tcp"``
            (a TCP store on 127.0.0.1 at a free port, via ``env://``).
        env: variables set in every child.
        rank_env: ``rank -> dict`` of extra variables per child (for example a
            simulated host id).
        may_die: ranks allowed to exit without a result (fault tests); their
            entry in the returned list is None.

    Returns:
        The return values, indexed by rank.

    Raises:
        ChildError: a rank raised (its traceback is in the message) or died.
        TimeoutError: some ranks did not finish within ``timeout``.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size: expected an int >= 1, got {world_size!r}")
    if store not in ("file", "tcp"):
        raise ValueError(f"store: expected 'file' or 'tcp', got {store!r}")
    may_die = set(may_die)
    ctx = _context()
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="shardkit_spawn_") as tmp:
        base_env = {"WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1"}
        if store == "tcp":
            base_env["MASTER_PORT"] = str(_free_port())
            init_method = "env://"
        else:
            init_method = "file://" + os.path.join(tmp, "store")
        init = None if backend is None else (backend, init_method, timeout)
        procs = []
        for rank in range(world_size):
            child_env = dict(base_env, RANK=str(rank), LOCAL_RANK=str(rank), **(env or {}))
            if rank_env is not None:
                child_env.update(rank_env(rank))
            proc = ctx.Process(target=_child, args=(fn, rank, world_size, args, child_env, init, results), daemon=True)
            proc.start()
            procs.append(proc)
        try:
            return _collect(procs, results, timeout, may_die)
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            results.close()


def _collect(procs, results, timeout, may_die) -> list[Any]:
    world_size = len(procs)
    values: list[Any] = [None] * world_size
    done: set[int] = set()
    deadline = time.monotonic() + timeout
    dead_since: dict[int, float] = {}
    while len(done) < world_size:
        try:
            rank, status, value = results.get(timeout=0.05)
        except queue.Empty:
            now = time.monotonic()
            for rank, proc in enumerate(procs):
                if rank in done or proc.is_alive():
                    continue
                # A result may still be in flight through the queue's pipe.
                if now - dead_since.setdefault(rank, now) < 1.0:
                    continue
                if rank in may_die:
                    done.add(rank)
                else:
                    raise ChildError(rank, f"rank {rank} died with exit code {proc.exitcode} without a result")
            if now > deadline:
                missing = sorted(set(range(world_size)) - done)
                raise TimeoutError(f"ranks {missing} did not finish within {timeout:.0f} s (killed)")
            continue
        if status == "error":
            raise ChildError(rank, f"rank {rank} raised {value}")
        values[rank] = value
        done.add(rank)
    return values
