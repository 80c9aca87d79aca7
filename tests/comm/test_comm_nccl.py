"""NCCL wrappers: loading libnccl fails softly, and with a GPU every op
matches the reference (one rank per GPU; world 1 with a single GPU)."""

import pytest
import torch

from shardkit import _native
from shardkit.testing import spawn

import nccl_cases


@pytest.mark.skipif(_native.C_CUDA is None, reason="shardkit._C_cuda not built")
def test_missing_library_is_reported_not_fatal():
    if _native.C_CUDA.nccl_loaded():
        pytest.skip("NCCL already loaded in this process")
    reason = _native.C_CUDA.nccl_load("/nonexistent/libnccl.so.2")
    assert "dlopen(/nonexistent/libnccl.so.2) failed" in reason
    assert not _native.C_CUDA.nccl_loaded()


@pytest.mark.gpu
@pytest.mark.distributed
def test_nccl_collectives_match_reference():
    world = max(1, min(2, torch.cuda.device_count()))
    counts = spawn(nccl_cases.run, world, timeout=300)
    assert counts[0] > 20
