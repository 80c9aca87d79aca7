"""Capability flags, set once at import.

``HAS_NATIVE``: ``shardkit._C`` (the torch-free CPU core) imported.
``HAS_CUDA_KERNELS``: ``shardkit._C_cuda`` imported and torch sees a GPU.
``HAS_NCCL``: torch's NCCL process group is usable.

``SHARDKIT_DISABLE_NATIVE=1`` forces the plain-torch reference kernels.
``SHARDKIT_REQUIRE_NATIVE=1`` turns a missing native build into an ImportError
instead of a silent fallback (CI sets it).
``python -m shardkit.env`` prints these flags and why each is off.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

# Mirrors shardkit::DType in csrc/include/shardkit/common.h.
DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 0,
    torch.bfloat16: 1,
    torch.float16: 2,
    torch.float64: 3,
    torch.int32: 4,
    torch.int64: 5,
    torch.uint8: 6,
}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _load(module: str) -> tuple[ModuleType | None, str]:
    if _truthy("SHARDKIT_DISABLE_NATIVE"):
        return None, "disabled by SHARDKIT_DISABLE_NATIVE=1"
    try:
        return __import__(f"shardkit.{module}", fromlist=["_"]), ""
    except ImportError as exc:
        return None, f"import failed: {exc}"


C, NATIVE_REASON = _load("_C")
HAS_NATIVE: bool = C is not None

if not HAS_NATIVE and _truthy("SHARDKIT_REQUIRE_NATIVE"):
    raise ImportError(f"SHARDKIT_REQUIRE_NATIVE=1 but shardkit._C is unavailable: {NATIVE_REASON}")

C_CUDA, CUDA_REASON = _load("_C_cuda")
if C_CUDA is not None and not torch.cuda.is_available():
    CUDA_REASON = "shardkit._C_cuda is built, but torch sees no CUDA device"
elif C_CUDA is None and "No module named" in CUDA_REASON:
    CUDA_REASON = "shardkit._C_cuda was not built (nvcc not found at build time, or SHARDKIT_ENABLE_CUDA=OFF)"
HAS_CUDA_KERNELS: bool = C_CUDA is not None and torch.cuda.is_available()

_nccl_ok = torch.cuda.is_available() and torch.distributed.is_available() and torch.distributed.is_nccl_available()
HAS_NCCL: bool = bool(_nccl_ok)
NCCL_REASON = "" if HAS_NCCL else "torch has no CUDA device or was built without NCCL"


def require_native(what: str) -> ModuleType:
    """Return ``shardkit._C`` or raise a RuntimeError saying why it is missing."""
    if C is None:
        raise RuntimeError(f"{what} needs the native core shardkit._C: {NATIVE_REASON}")
    return C


def dtype_code(dtype: torch.dtype) -> int:
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise TypeError(f"dtype {dtype} has no native kernel") from None
