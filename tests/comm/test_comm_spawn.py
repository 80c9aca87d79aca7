"""shardkit.testing.spawn: results by rank, child errors re-raised with the
rank, deaths and timeouts reported instead of hanging."""

import os
import time

import pytest

from shardkit.testing import ChildError, spawn

pytestmark = pytest.mark.distributed


def _env(rank, world):
    return (rank, world, os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ.get("EXTRA"))


def _raise_on_one(rank, world):
    if rank == 1:
        raise KeyError("boom")
    return rank


def _die_on_zero(rank, world):
    if rank == 0:
        os._exit(7)
    return rank


def _sleep_on_one(rank, world):
    if rank == 1:
        time.sleep(60)
    return rank


def test_results_and_environment():
    out = spawn(_env, 3, backend=None, rank_env=lambda r: {"EXTRA": f"x{r}"})
    assert out == [(r, 3, str(r), "3", f"x{r}") for r in range(3)]


def test_tcp_store_joins_a_group():
    # The children join gloo through env:// (MASTER_ADDR/MASTER_PORT set by spawn).
    assert spawn(_env, 2, store="tcp")[1][:2] == (1, 2)


def test_child_exception_names_the_rank():
    with pytest.raises(ChildError, match=r"rank 1 raised KeyError: 'boom'") as info:
        spawn(_raise_on_one, 2, backend=None)
    assert info.value.rank == 1


def test_dead_child_is_reported():
    with pytest.raises(ChildError, match=r"rank 0 died with exit code 7"):
        spawn(_die_on_zero, 2, backend=None)
    assert spawn(_die_on_zero, 2, backend=None, may_die=[0]) == [None, 1]


def test_timeout_kills_and_names_the_missing_rank():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[1\] did not finish"):
        spawn(_sleep_on_one, 2, backend=None, timeout=3)
    assert time.monotonic() - start < 20
