"""Shared pieces of the fuzz harness (hypothesis): budget, time guard, child runs.

Every target checks one contract: any input either works, or raises a clear
Python exception of the type the code documents (ValueError and its
subclasses such as DataFormatError, TypeError, OSError). Never a crash of the
native core, a hang, a RecursionError or another exception type.

Budget: ``SHARDKIT_FUZZ_EXAMPLES`` examples per target (default 60: the whole
harness stays well under a minute in the normal test run), derandomized so CI
is deterministic. A longer campaign, e.g. before a release::

    SHARDKIT_FUZZ_EXAMPLES=3000 SHARDKIT_FUZZ_SEED=$RANDOM python -m pytest tests/fuzz

(a seed turns derandomization off and makes the run reproducible with the same
seed). The defects the harness found first (catastrophic backtracking, capture
groups, unknown pattern names, deep JSON, non-UTF-8 JSONL, integers past int64
or of 4300+ digits, text a pattern skips) each keep a test with their minimal
input.
"""

from __future__ import annotations

import contextlib
import os
import signal

from hypothesis import HealthCheck, seed, settings

EXAMPLES = int(os.environ.get("SHARDKIT_FUZZ_EXAMPLES", "60"))
SEED = os.environ.get("SHARDKIT_FUZZ_SEED")

_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=SEED is None,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)


def fuzz(test):
    """The fuzz budget and seed for one hypothesis target (apply above ``@given``)."""
    test = _SETTINGS(test)
    return seed(int(SEED))(test) if SEED is not None else test

class Hang(Exception):
    """An input ran past the per-example time limit (a hang, as far as the contract goes)."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raise Hang if the block runs longer than ``seconds`` (SIGALRM; main thread only).

    The ``regex`` module checks for signals while it matches, so a
    backtracking pattern is interrupted too.
    """

    def on_alarm(signum, frame):
        raise Hang(f"{what}: still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _child(conn, fn, args):
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # sent back to the parent, re-raised there
        conn.send(("raised", exc))


def run_in_child(fn, args: tuple, timeout: float):
    """``fn(*args)`` in a forked process; Hang if it runs past ``timeout`` s.

    For inputs that may hang inside C code (the ``regex`` engine does not
    check for signals), which a time limit in this process cannot interrupt.
    """
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise Hang(f"{getattr(fn, '__name__', fn)}{args!r:.200}: still running after {timeout} s")
        status, value = parent.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    if status == "raised":
        raise value
    return value
