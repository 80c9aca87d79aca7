"""shardkit: train language models where memory and communication are the limit.

Fused mixed-precision optimizers (``shardkit.optim``), native ops declared
with ``torch.library`` (``torch.ops.shardkit.*``), and the tools built on them.
``import shardkit`` also registers the ``"shardkit"`` torch.distributed
backend (shared-memory collectives; ``shardkit.comm.backend``).
``python -m shardkit.env`` says which native parts are enabled.
"""

from shardkit import _native, ops  # noqa: F401  (registers torch.ops.shardkit.*)
from shardkit._native import HAS_CUDA_KERNELS, HAS_NATIVE, HAS_NCCL
from shardkit._register_backend import register as _register_shardkit_backend

_register_shardkit_backend()  # dist.init_process_group("shardkit"); see shardkit.comm.backend

__version__ = "0.1.0"

__all__ = ["HAS_NATIVE", "HAS_CUDA_KERNELS", "HAS_NCCL", "__version__"]
