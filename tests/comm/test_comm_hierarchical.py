"""The cross-host path (reduce in the host, all-reduce between host leaders
over torch.distributed, broadcast in the host), on one machine: two
simulated hosts with interleaved ranks, and every rank its own host."""

import pytest

from shardkit.testing import spawn

import hier_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def test_two_simulated_hosts_with_interleaved_ranks():
    # Ranks 0 and 2 on host "a", 1 and 3 on host "b": a host's ranks are not
    # a contiguous block of global ranks, which the gather/scatter must respect.
    out = spawn(hier_cases.run, 4, args=(2,), rank_env=lambda r: {"SHARDKIT_HOST_ID": "ab"[r % 2]}, timeout=150)
    assert out[0]["hosts"] == [[0, 2], [1, 3]]
    assert [o["local_rank"] for o in out] == [0, 0, 1, 1]
    assert len({o["checks"] for o in out}) == 1 and out[0]["checks"] > 50


def test_every_rank_its_own_host():
    out = spawn(hier_cases.run, 3, args=(3,), rank_env=lambda r: {"SHARDKIT_HOST_ID": f"host{r}"}, timeout=150)
    assert out[0]["hosts"] == [[0], [1], [2]]
    assert len({o["checks"] for o in out}) == 1 and out[0]["checks"] > 50
