"""The collectives' copy/reduce threads: how many (SHARDKIT_COMM_THREADS, else
this rank's share of its affinity cores, capped; never OMP_NUM_THREADS), and
that any thread count gives bitwise the results of one thread."""

import os

import pytest

from shardkit.comm import group as group_mod
from shardkit.testing import spawn
from shardkit.testing.spawn import ChildError

import threads_cases


@pytest.fixture
def cores(monkeypatch):
    """Set the affinity mask's size that the thread rule sees; the variable starts unset."""
    monkeypatch.delenv(group_mod.THREADS_ENV, raising=False)

    def set_cores(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)

    return set_cores


@pytest.mark.parametrize(("ncores", "local_world", "expected"), [
    (64, 8, 8), (64, 2, 8), (64, 1, 8), (12, 4, 3), (6, 4, 1), (2, 2, 1), (2, 1, 2), (1, 4, 1), (200, 10, 8),
])
def test_default_is_the_ranks_share_of_its_cores_capped(cores, ncores, local_world, expected):
    cores(ncores)
    assert group_mod.default_threads(local_world) == expected
    assert group_mod.comm_threads(local_world) == expected


def test_cap_is_documented_value(cores):
    cores(10_000)
    assert group_mod.comm_threads(1) == group_mod.THREADS_CAP == 8


def test_omp_num_threads_and_torch_threads_are_ignored(cores, monkeypatch):
    import torch

    cores(16)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert group_mod.comm_threads(2) == 8
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("value", ["1", "3", "16", " 5 "])
def test_env_override_wins(cores, monkeypatch, value):
    cores(64)
    monkeypatch.setenv(group_mod.THREADS_ENV, value)
    assert group_mod.comm_threads(8) == int(value)


def test_empty_override_means_unset(cores, monkeypatch):
    cores(12)
    monkeypatch.setenv(group_mod.THREADS_ENV, "")
    assert group_mod.comm_threads(4) == 3


@pytest.mark.parametrize("value", ["0", "-2", "abc", "1.5", "2x"])
def test_bad_override_raises_naming_the_variable(cores, monkeypatch, value):
    monkeypatch.setenv(group_mod.THREADS_ENV, value)
    with pytest.raises(ValueError, match="SHARDKIT_COMM_THREADS.*positive integer"):
        group_mod.comm_threads(2)


@pytest.mark.native
def test_native_set_threads_validates():
    from shardkit import _native

    g = _native.C.ShmGroup(f"shardkit_{os.getpid()}_threadtest", 0, 1, 8192, 10.0, [0])
    try:
        assert g.threads == 1
        g.set_threads(4, 4096)
        assert (g.threads, g.min_bytes_per_thread) == (4, 4096)
        with pytest.raises(Exception, match="threads"):
            g.set_threads(0, 4096)
        with pytest.raises(Exception, match="min_bytes_per_thread"):
            g.set_threads(2, 0)
    finally:
        g.close()


@pytest.mark.native
@pytest.mark.distributed
@pytest.mark.parametrize(("world", "threads"), [(2, 2), (2, 3), (3, 2), (3, 3), (2, 5)])
def test_threads_give_bitwise_the_one_thread_results(world, threads):
    # 5 threads: more workers than the slot scale (4), and not a power of two.
    counts = spawn(threads_cases.threads_match_one_thread, world, args=(threads,), timeout=300)
    assert len(set(counts)) == 1 and counts[0] > 500


@pytest.mark.native
@pytest.mark.distributed
def test_group_default_threads_follow_affinity():
    got = spawn(threads_cases.default_group_threads, 2, timeout=60)
    for threads, expected, slot in got:
        assert threads == expected
        assert slot == threads_cases.TEST_SLOT_BYTES * min(threads, group_mod.MAX_SLOT_SCALE)


@pytest.mark.native
@pytest.mark.distributed
def test_bad_override_fails_group_creation():
    with pytest.raises(ChildError, match="SHARDKIT_COMM_THREADS"):
        spawn(threads_cases.bad_override, 2, timeout=60)
