"""Rank-side scenarios of the fault tests: dead, stalled and diverging ranks."""

from __future__ import annotations

import os
import time

import torch

from shardkit import comm


def killed_rank(rank: int, world: int) -> dict:
    comm.init(timeout=30)
    t = torch.ones(100_000)
    comm.all_reduce(t)
    if rank == world - 1:
        os._exit(3)  # dies without a word, between two collectives
    start = time.monotonic()
    try:
        comm.all_reduce(t)
        return {"error": None}
    except comm.CommError as exc:
        return {"error": str(exc), "seconds": time.monotonic() - start}


def stalled_rank(rank: int, world: int) -> dict:
    comm.init(timeout=30)
    comm.get_group().set_timeout(1.5)
    t = torch.ones(1000)
    if rank == 1:
        time.sleep(4.0)  # stalls past the others' timeout
    start = time.monotonic()
    try:
        comm.all_reduce(t)
        return {"error": None}
    except comm.CommError as exc:
        return {"error": str(exc), "seconds": time.monotonic() - start}


def mismatch(rank: int, world: int, case: str) -> dict:
    comm.init(timeout=20)
    if case == "numel":
        t = torch.ones(10 + 2 * rank)
        call = lambda: comm.all_reduce(t)  # noqa: E731
    elif case == "dtype":
        t = torch.ones(64, dtype=torch.float32 if rank == 0 else torch.float64)
        call = lambda: comm.all_reduce(t)  # noqa: E731
    elif case == "collective":
        t = torch.ones(64)
        call = (lambda: comm.all_reduce(t)) if rank == 0 else (lambda: comm.broadcast(t, 0))
    elif case == "src":  # every rank believes itself the root
        t = torch.full((64,), float(rank))
        call = lambda: comm.broadcast(t, src=rank)  # noqa: E731
    elif case == "dst":
        t = torch.full((64,), float(rank))
        call = lambda: comm.reduce(t, dst=rank)  # noqa: E731
    elif case == "src_empty":  # zero-size tensors are checked too
        t = torch.ones(0)
        call = lambda: comm.broadcast(t, src=rank)  # noqa: E731
    else:  # a rank that skipped a collective (zero-size ones return at once)
        t = torch.ones(64)
        empty = torch.ones(0)

        def call():
            if rank == 0:
                comm.all_reduce(empty)
            comm.all_reduce(t, algo="ring")
            comm.all_reduce(t, algo="ring")

    before = t.clone()
    try:
        call()
        return {"error": None}
    except comm.CommError as exc:
        # Other ranks' data were never mixed in: the tensor is untouched or was
        # only reduced with a matching peer before the error.
        return {"error": str(exc), "finite": bool(torch.isfinite(t).all()), "unchanged": bool(torch.equal(t, before))}
    finally:
        try:
            comm.destroy()
        except Exception:  # noqa: BLE001 - the group is aborted; destroy only unmaps
            pass


def validation(rank: int, world: int) -> list[str]:
    """Bad arguments raise a clear TypeError/ValueError; returns the messages."""
    comm.init(timeout=10)
    cases = [
        lambda: comm.all_reduce(torch.ones(4, 4).t()),
        lambda: comm.all_reduce(torch.ones(4, dtype=torch.uint8)),
        lambda: comm.all_reduce(torch.ones(4, dtype=torch.int32), "avg"),
        lambda: comm.all_reduce(torch.ones(4), "prod"),
        lambda: comm.all_reduce(torch.ones(4), algo="star"),
        lambda: comm.all_reduce(torch.ones(4), out=torch.ones(5)),
        lambda: comm.reduce_scatter(torch.ones(3), torch.ones(3 * world + 1)),
        lambda: comm.reduce_scatter(torch.ones(3, dtype=torch.float64), torch.ones(3 * world)),
        lambda: comm.all_gather(torch.ones(2 * world + 1), torch.ones(2)),
        lambda: comm.broadcast(torch.ones(4), world),
        lambda: comm.reduce(torch.ones(4), -1),
        lambda: comm.all_reduce([1.0, 2.0]),
    ]
    messages = []
    for case in cases:
        try:
            case()
            messages.append("no error")
        except (TypeError, ValueError) as exc:
            messages.append(f"{type(exc).__name__}: {exc}")
    # The group still works after rejected calls (nothing was half-started).
    t = torch.full((5,), float(rank + 1))
    comm.all_reduce(t)
    messages.append(f"sum={t[0].item()}")
    comm.destroy()
    return messages


def killed_in_init(rank: int, world: int, other_joins: bool) -> str:
    """Local rank 0 is SIGKILLed while it waits in comm.init for the others to attach to its segment.

    ``other_joins``: the other ranks attach afterwards (and must not leak the
    segment); else they are killed before attaching too (the segment stays for
    the next init's sweep).
    """
    import signal
    import threading

    from shardkit import _native

    real = _native.C.ShmGroup

    def delayed(*args, **kwargs):
        if rank == 0:
            threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        elif other_joins:
            time.sleep(2.5)  # attach after rank 0 is dead
        else:
            time.sleep(2.0)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    _native.C.ShmGroup = delayed
    comm.init(timeout=5)
    return "joined"
