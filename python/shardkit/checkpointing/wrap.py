"""Turning checkpointing on for one module, in place, by swapping its class.

The module keeps its name, parameters, state-dict keys and ``isinstance``
relations (a sharding policy that picks units by block class still finds it);
only ``__call__`` changes: the whole call, forward hooks included, runs under
``torch.utils.checkpoint`` (non-reentrant, saved-tensor hooks). Backward
therefore recomputes through ``Module.__call__`` again, so hooks that a later
``shard()`` installs (all-gather before forward) also run on recompute. This
is why checkpointing is applied before sharding (DESIGN.md: checkpointing,
then compile, then sharding).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.checkpoint import checkpoint

_CONFIG_ATTR = "_shardkit_checkpoint"


@dataclass(frozen=True)
class BlockConfig:
    """How one block treats its saved activations."""

    recompute: bool  # keep only the inputs, recompute the rest in backward
    offload: bool  # move saved tensors to pinned CPU memory (a no-op for CPU tensors)


def _on_accelerator(args: tuple, kwargs: dict) -> bool:
    return any(isinstance(t, torch.Tensor) and t.device.type != "cpu" for t in tree_leaves((args, kwargs)))


class CheckpointedModule:
    """Mixin placed before a block's own class; see the module docstring."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        config: BlockConfig = self.__dict__[_CONFIG_ATTR]
        call = super().__call__  # nn.Module.__call__: pre-hooks, forward, post-hooks
        # save_on_cpu would copy even CPU tensors into pinned memory, so it is
        # only installed when there is something on an accelerator to move.
        offloading = config.offload and _on_accelerator(args, kwargs)
        with torch.autograd.graph.save_on_cpu(pin_memory=True) if offloading else contextlib.nullcontext():
            if config.recompute and torch.is_grad_enabled():
                # preserve_rng_state replays dropout masks; non-reentrant checkpoint
                # also re-enters the forward's autocast state on recompute.
                return checkpoint(call, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
            return call(*args, **kwargs)


@functools.cache
def _wrapped_class(cls: type) -> type:
    # Cached so every block of one class shares one wrapped class.
    return type(f"Checkpointed{cls.__name__}", (CheckpointedModule, cls), {})


def wrap(module: nn.Module, config: BlockConfig) -> None:
    """Make ``module`` recompute and/or offload per ``config``, in place."""
    if isinstance(module, CheckpointedModule):
        raise ValueError(f"module {type(module).__name__}: checkpointing is already applied; call remove() first")
    module.__dict__[_CONFIG_ATTR] = config
    module.__class__ = _wrapped_class(type(module))


def unwrap(module: nn.Module) -> None:
    """Undo :func:`wrap`; refuses if another wrapper (e.g. sharding) was applied on top."""
    cls = type(module)
    if not isinstance(module, CheckpointedModule):
        return
    if cls.__bases__[0] is not CheckpointedModule:
        raise ValueError(f"module {cls.__name__}: another wrapper was applied after checkpointing; remove it first")
    module.__class__ = cls.__bases__[1]
    del module.__dict__[_CONFIG_ATTR]


def config_of(module: nn.Module) -> BlockConfig | None:
    """The block's checkpointing config, or None if it is not wrapped."""
    return module.__dict__.get(_CONFIG_ATTR) if isinstance(module, CheckpointedModule) else None
