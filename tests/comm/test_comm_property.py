"""Property-based sizes (hypothesis) for all_reduce / reduce_scatter / all_gather."""

import pytest

from shardkit.testing import spawn

import property_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


@pytest.mark.parametrize("world", [2, 3])
def test_random_sizes_match_reference(world):
    counts = spawn(property_cases.run, world, args=(40,), timeout=120)
    assert counts[0] == 40 and len(set(counts)) == 1
