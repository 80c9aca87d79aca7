"""Where the speedrun's training stages run: ``--device cpu|cuda|auto`` and the ranks that follow from it.

``auto`` is ``cuda`` when CUDA is available. On ``cuda`` the stages run one
rank per GPU (``--nproc`` defaults to the GPU count) and each rank trains on
``cuda:LOCAL_RANK``, sharded with torch's ``fully_shard`` (FSDP2) when there
are several; on ``cpu`` they run one rank per core, sharded with
``shardkit.fsdp.shard`` over ``shardkit.comm``. The worker learns the device
from ``DEVICE_ENV`` in its environment.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")
DEVICE_ENV = "SHARDKIT_SPEEDRUN_DEVICE"


def resolve(flag: str, *, cuda_available: bool, cuda_count: int) -> str:
    """``"cpu"`` or ``"cuda"`` for ``--device flag``; ValueError for an unknown flag or CUDA without a GPU."""
    if flag not in DEVICES:
        raise ValueError(f"--device: expected one of {DEVICES}, got {flag!r}")
    if flag == "auto":
        return "cuda" if cuda_available and cuda_count > 0 else "cpu"
    if flag == "cuda" and not (cuda_available and cuda_count > 0):
        raise ValueError("--device cuda: CUDA is not available on this machine; use --device cpu (or auto)")
    return flag


def default_nproc(device: str, *, cuda_count: int, cores: int) -> int:
    """One rank per GPU on ``cuda``, one per core on ``cpu``."""
    return cuda_count if device == "cuda" else cores


def check_nproc(device: str, nproc: int, cuda_count: int) -> None:
    """More ranks than GPUs would put two ranks on one GPU: refuse it with the numbers."""
    if device == "cuda" and nproc > cuda_count:
        raise ValueError(f"--nproc {nproc}: --device cuda runs one rank per GPU and this machine has {cuda_count}")


def this_machine(flag: str) -> tuple[str, int]:
    """``(device, GPU count)`` of this machine for ``--device flag``."""
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    return resolve(flag, cuda_available=available, cuda_count=count), count
