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


def _installed_libnccl() -> str | None:
    """libnccl from an installed nvidia-nccl-cu* wheel, if any (torch CUDA wheels bring one)."""
    try:
        import nvidia.nccl
    except ImportError:
        return None
    import glob
    import os

    for root in getattr(nvidia.nccl, "__path__", []):
        found = sorted(glob.glob(os.path.join(root, "lib", "libnccl.so*")))
        if found:
            return found[0]
    return None


@pytest.mark.skipif(_native.C_CUDA is None, reason="shardkit._C_cuda not built")
@pytest.mark.skipif(_installed_libnccl() is None, reason="no nvidia-nccl wheel installed")
def test_real_libnccl_loads_without_a_gpu():
    # The dlsym'd entry points and the unique-id ABI match a real NCCL; none of these calls needs a GPU.
    C = _native.C_CUDA
    assert C.nccl_load(_installed_libnccl()) == ""
    assert C.nccl_version() >= 21800
    assert len(C.nccl_unique_id()) == 128
