"""Test-suite wiring: markers and the native-build policy.

Tests marked ``native`` need shardkit._C and skip without it. Under
SHARDKIT_REQUIRE_NATIVE=1 (CI) a missing build never gets that far:
``import shardkit`` itself raises, so every test fails instead of skipping.
Tests marked ``gpu`` skip without a CUDA device.
"""

import pytest
import torch

import shardkit


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "native" in item.keywords and not shardkit.HAS_NATIVE:
            item.add_marker(pytest.mark.skip(reason="shardkit._C not built"))
