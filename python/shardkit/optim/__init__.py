"""Fused mixed-precision optimizers, drop-ins for torch.optim.

- :class:`FusedAdamW` / :class:`FusedAdam`: torch.optim.AdamW / Adam.
- :class:`FusedSGD`: torch.optim.SGD with momentum.

bf16/fp16 parameters keep an fp32 master copy and fp32 moments in the
optimizer state; each step is one pass over memory per (device, dtype) group.
"""

from shardkit.optim.adam import FusedAdam, FusedAdamW
from shardkit.optim.sgd import FusedSGD

__all__ = ["FusedAdam", "FusedAdamW", "FusedSGD"]
