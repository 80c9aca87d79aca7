"""comm.init(): from torchrun's environment, or wrapping an existing group."""

import pytest

from shardkit.testing import spawn

import init_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def test_init_from_torchrun_environment():
    assert spawn(init_cases.from_torchrun_env, 2, backend=None, store="tcp", timeout=60) == [3.0, 3.0]


def test_init_wraps_an_existing_subgroup():
    assert spawn(init_cases.existing_subgroup, 3, timeout=60) == [None, 3.0, 3.0]


def test_world_size_one_uses_the_same_path():
    assert spawn(init_cases.single_rank, 1, timeout=60)[0] > 100
