"""Faults: a killed or stalled rank makes the others raise, naming it, within
the timeout; ranks calling different collectives raise instead of mixing
memory; bad arguments raise clear errors; no segment is left in /dev/shm."""

import os
import re
import subprocess
import time

import pytest

from shardkit import comm
from shardkit.testing import spawn

import fault_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def shm_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("shardkit_")}


def test_killed_rank_names_it_and_leaks_nothing():
    before = shm_segments()
    results = spawn(fault_cases.killed_rank, 3, timeout=60, may_die=[2])
    for rank in (0, 1):
        err = results[rank]["error"]
        assert err is not None and "rank 2" in err and ("died" in err or "aborted" in err), err
        assert results[rank]["seconds"] < 10, results[rank]
    assert shm_segments() - before == set()


def test_stalled_rank_times_out_naming_it():
    results = spawn(fault_cases.stalled_rank, 2, timeout=60)
    err0 = results[0]["error"]
    assert err0 is not None and "timed out" in err0 and "rank 1" in err0, err0
    assert 1.0 < results[0]["seconds"] < 6, results[0]
    # The late rank finds the group aborted instead of hanging.
    assert results[1]["error"] is not None and "aborted" in results[1]["error"], results[1]


@pytest.mark.parametrize("case", ["numel", "dtype", "collective", "skipped"])
def test_mismatched_collectives_raise(case):
    results = spawn(fault_cases.mismatch, 2, args=(case,), timeout=60)
    errors = [r["error"] for r in results]
    assert all(e is not None for e in errors), errors
    assert any("mismatch" in e for e in errors), errors
    assert all(r["finite"] for r in results)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("case", ["src", "dst", "src_empty"])
def test_mismatched_roots_raise_naming_both(case, world):
    # Ranks that disagree on broadcast's src or reduce's dst used to return
    # with diverged tensors (or wait for each other until the timeout).
    start = time.monotonic()
    results = spawn(fault_cases.mismatch, world, args=(case,), timeout=60)
    errors = [r["error"] for r in results]
    assert all(e is not None for e in errors), errors
    name = "dst" if case == "dst" else "src"
    # The message names both ranks' values, e.g. "... src=0) but rank 1 ... called broadcast #1 (... src=1)".
    assert any("mismatch" in e and len(set(re.findall(rf"\b{name}=(\d+)", e))) == 2 for e in errors), errors
    assert time.monotonic() - start < 15  # detected at once, not by the 20 s timeout


def test_bad_arguments_raise_clear_errors():
    messages = spawn(fault_cases.validation, 2, timeout=60)[0]
    *errors, last = messages
    assert "no error" not in errors, errors
    for needle, message in zip(
        ["tensor: expected a contiguous", "tensor: expected one of", "avg", "op:", "algo:", "out:", "inp:", "out: expected dtype",
         "out: expected world_size", "src:", "dst:", "tensor: expected a torch.Tensor"],
        errors,
    ):
        assert needle in message, (needle, message)
    assert last == "sum=3.0"


def test_rank_zero_killed_in_init_leaks_no_segment():
    # The last rank to attach removes the name, so rank 0's death after creating it leaks nothing.
    before = shm_segments()
    results = spawn(fault_cases.killed_in_init, 2, args=(True,), timeout=60, may_die=[0])
    assert results[1] == "joined"
    assert shm_segments() - before == set()


def test_segment_of_a_job_killed_in_init_is_swept_by_the_next_init():
    before = shm_segments()
    spawn(fault_cases.killed_in_init, 2, args=(False,), timeout=60, may_die=[0, 1])
    left = shm_segments() - before
    assert len(left) == 1, left  # nobody attached after the creator died: only a sweep can remove it
    spawn(fault_cases.killed_rank, 2, timeout=60, may_die=[1])  # any later job on this host
    assert not left & shm_segments()


def test_stale_segments_are_removed():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"/dev/shm/shardkit_{dead.pid}_deadbeef_0"
    live = f"/dev/shm/shardkit_{os.getpid()}_alive_0"
    for path in (stale, live):
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)
    try:
        assert comm.cleanup_stale_segments() >= 1
        assert not os.path.exists(stale)
        assert os.path.exists(live)  # its creator (this process) is alive
    finally:
        for path in (stale, live):
            if os.path.exists(path):
                os.unlink(path)
