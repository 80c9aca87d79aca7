"""shardkit: train language models where memory and communication are the limit.

Fused mixed-precision optimizers (``shardkit.optim``), native ops declared
with ``torch.library`` (``torch.ops.shardkit.*``), and the tools built on them.
``python -m shardkit.env`` says which native parts are enabled.
"""

from shardkit import _native, ops  # noqa: F401  (registers torch.ops.shardkit.*)
from shardkit._native import HAS_CUDA_KERNELS, HAS_NATIVE, HAS_NCCL

__version__ = "0.1.0"

__all__ = ["HAS_NATIVE", "HAS_CUDA_KERNELS", "HAS_NCCL", "__version__"]
