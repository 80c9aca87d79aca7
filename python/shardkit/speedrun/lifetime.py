"""The speedrun's processes end with their launcher: no rank trains on after ``shardkit speedrun`` is gone.

The process tree is ``shardkit speedrun`` -> torchrun -> one worker per rank.

- torchrun is started with a parent-death signal (``PR_SET_PDEATHSIG``,
  Linux): when the launcher dies, even by SIGKILL, the kernel sends torchrun
  SIGTERM, and torchrun stops its workers.
- Each worker runs a watchdog thread on its parent (torchrun) and on the
  launcher: if either is gone (torchrun killed too, or stuck), the worker
  sends itself SIGTERM, and ends outright a few seconds later if that did not.
- SIGTERM (and SIGINT) become ``SystemExit`` in the launcher and the workers,
  so ``finally`` blocks run: a save in progress removes its staging directory,
  the launcher stops torchrun and waits for it. What is on disk (atomic
  checkpoints, ``state.json``) is then resumable by running the command again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

LAUNCHER_PID_ENV = "SHARDKIT_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process dies.

    None where the kernel has no such signal (not Linux): the workers'
    watchdog still ends them. Call it, and start the child, from the thread
    that lives as long as the child should: Linux sends the signal when the
    *thread* that forked the child exits.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl  # looked up here: the child, between fork and exec, only calls it
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(128 + int(sig))

    return preexec


def _raise_exit(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals_exit(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Within the block, ``signals`` raise ``SystemExit(128 + signal)`` (so cleanup runs) instead of killing.

    SIGINT already raises KeyboardInterrupt. Main thread only (Python's rule for signal handlers).
    """
    previous = {s: signal.signal(s, _raise_exit) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def start_watchdog(*, interval: float = 0.5, grace: float = 5.0) -> threading.Thread:
    """End this process when its parent or the launcher (``$SHARDKIT_LAUNCHER_PID``) is gone.

    A daemon thread polls every ``interval`` seconds. On a death it sends this
    process SIGTERM (a clean exit under ``signals_exit``), and after ``grace``
    seconds more ends it with ``os._exit`` (the main thread may be blocked in
    native code, where no Python signal handler runs).
    """
    if interval <= 0 or grace < 0:
        raise ValueError(f"interval, grace: expected > 0 and >= 0, got {interval!r}, {grace!r}")
    parent = os.getppid()
    launcher = int(os.environ.get(LAUNCHER_PID_ENV, "0")) or None

    def watch() -> None:
        while True:
            time.sleep(interval)
            # Reparenting (to init or a subreaper) means the parent died.
            if os.getppid() != parent or (launcher is not None and not _alive(launcher)):
                break
        print(f"shardkit: rank pid {os.getpid()}: its launcher is gone; stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(128 + signal.SIGTERM)

    thread = threading.Thread(target=watch, name="shardkit-watchdog", daemon=True)
    thread.start()
    return thread
