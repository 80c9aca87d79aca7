"""Puts this directory on sys.path, so the spawned ranks can import the shared
rank-side helpers (fsdp_cases) whatever pytest's import mode."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def world2_tp(tmp_path_factory):
    """(output dir, per-rank results of ``plan_trainer_cases.world2_tp_cases``): one world-2 spawn shared by
    test_parallel_memory and test_parallel_preference."""
    import plan_trainer_cases as tc
    from shardkit.testing import spawn

    out = tmp_path_factory.mktemp("world2_tp")
    return out, spawn(tc.world2_tp_cases, 2, args=(str(out),), timeout=300)
