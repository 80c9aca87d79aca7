"""Finding the blocks (the units checkpointing recomputes) in a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


def find_blocks(model: nn.Module, blocks: Any = None) -> list[tuple[str, nn.Module]]:
    """Outermost modules matching ``blocks``, as ``(qualified name, module)`` in model order.

    ``blocks`` is None (the children of the model's first non-empty
    ``nn.ModuleList``, i.e. the layer stack of Llama- and GPT-style models), a
    module class or a tuple/list of classes, or a callable ``(name, module) ->
    bool``. Raises ValueError when nothing matches.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if blocks is None:
        for name, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module):
                prefix = f"{name}." if name else ""
                return [(f"{prefix}{child_name}", child) for child_name, child in module.named_children()]
        raise ValueError("blocks: the model has no nn.ModuleList of blocks; pass block classes or a callable")
    if isinstance(blocks, type):
        blocks = (blocks,)
    if isinstance(blocks, (tuple, list)):
        if not blocks or not all(isinstance(b, type) and issubclass(b, nn.Module) for b in blocks):
            raise TypeError(f"blocks: expected nn.Module subclasses, got {blocks!r}")
        classes = tuple(blocks)
        matches: Callable[[str, nn.Module], bool] = lambda _name, module: isinstance(module, classes)  # noqa: E731
    elif callable(blocks):
        matches = blocks
    else:
        raise TypeError(f"blocks: expected None, module classes or a callable (name, module) -> bool, got {blocks!r}")
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        inside_match = any(name.startswith(f"{outer}.") or outer == "" for outer, _ in found)
        if not inside_match and matches(name, module):
            found.append((name, module))
    if not found:
        raise ValueError(f"blocks: no module of {type(model).__name__} matched {blocks!r}")
    return found
