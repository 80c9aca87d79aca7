"""Every collective, dtype and reduction of shardkit.comm at world sizes 2, 3
and 4 on one host, against torch.distributed gloo and a float64 reference."""

import pytest

from shardkit.testing import spawn

import comm_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_all_collectives_match_gloo(world):
    counts = spawn(comm_cases.run_all, world, timeout=150)
    # Every rank ran the same number of checks, and there were some.
    assert len(set(counts)) == 1 and counts[0] > 100
