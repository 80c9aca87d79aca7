"""Full (unsharded) state dicts of a sharded model: gathered unit by unit, saved as safetensors.

Only one unit's gathered buffer exists at a time besides the result, which
lives on rank 0 alone, so the whole model is never held twice.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from shardkit import atomic
from shardkit.fsdp.sharded_model import get_state


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Persistent buffers, by their unsharded names."""
    return {k: v for k, v in model.state_dict().items() if not k.rpartition(".")[2].startswith("_flat_param_")}


def full_state_dict(model: nn.Module, *, rank0_only: bool = True) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` with the names and shapes of the unsharded model's ``state_dict()``.

    Tied parameters appear under each of their names (the same tensor). With
    ``rank0_only`` the other ranks get ``{}``. Collective: every rank must call it.
    """
    state = get_state(model)
    keep = state.rank == 0 or not rank0_only
    out: dict[str, torch.Tensor] = {}
    for g in state.groups:
        full = g.full_values()  # (padded,) gathered on every rank, one unit at a time
        if not keep:
            continue
        offset = 0
        for uses, shape, numel in zip(g.uses, g.shapes, g.numels):
            value = full[offset : offset + numel].view(shape).clone()
            offset += numel
            for _, _, name in uses:
                out[name] = value
    if keep:
        out.update({k: v.detach().clone() for k, v in _buffers(model).items()})
    return out


def save_full_state_dict(model: nn.Module, path: str | os.PathLike) -> None:
    """Gather the full state on rank 0 and write it to ``path`` as safetensors, atomically.

    A tied parameter is written once, under its first name; the file's
    metadata ``shardkit.tied`` maps the other names to it. Collective.
    """
    from safetensors.torch import save_file

    state = get_state(model)
    tensors = full_state_dict(model)
    if state.rank != 0:
        return
    unique: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    first_name: dict[int, str] = {}
    for name, t in tensors.items():
        if id(t) in first_name:
            tied[name] = first_name[id(t)]
        else:
            first_name[id(t)] = name
            unique[name] = t.contiguous()
    metadata = {"format": "pt", "shardkit.tied": json.dumps(tied)}
    atomic.write_atomic(path, lambda tmp: save_file(unique, tmp, metadata=metadata))


def load_full_state_dict(model: nn.Module, source) -> None:
    """Load an unsharded state (a dict, or a safetensors file written by ``save_full_state_dict``
    or ``safetensors.torch.save_model``) into every rank's shards and buffers.

    Raises ValueError naming missing, unexpected or mis-shaped entries (a
    checkpoint of another model). Not a collective: each rank reads its slices.
    """
    state = get_state(model)
    if isinstance(source, (str, os.PathLike)):
        from safetensors import safe_open

        with safe_open(os.fspath(source), framework="pt") as f:
            tied = json.loads((f.metadata() or {}).get("shardkit.tied", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        for alias, name in tied.items():
            tensors.setdefault(alias, tensors.get(name))
    elif isinstance(source, dict):
        tensors = dict(source)
    else:
        raise TypeError(f"source: expected a path or a dict of tensors, got {type(source).__name__}")

    buffers = _buffers(model)
    expected = {name: shape for g in state.groups for uses, shape in zip(g.uses, g.shapes) for _, _, name in uses}
    expected.update({k: v.shape for k, v in buffers.items()})
    # A tied weight saved by save_model may carry only one of its names.
    for g in state.groups:
        for uses in g.uses:
            present = [n for _, _, n in uses if n in tensors]
            for _, _, n in uses:
                if present and n not in tensors:
                    tensors[n] = tensors[present[0]]
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        raise ValueError(f"source: not a state of this model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"wrong shapes {[(k, tuple(tensors[k].shape), tuple(expected[k])) for k in wrong[:5]]}")
    with torch.no_grad():
        for g in state.groups:
            # (padded,) this group's full values, then this rank's block.
            flat = torch.zeros(g.padded_numel, dtype=g.dtype)
            offset = 0
            for uses, numel in zip(g.uses, g.numels):
                flat[offset : offset + numel] = tensors[uses[0][2]].reshape(-1)
                offset += numel
            lo = g.rank * g.shard_numel if g.shard_world > 1 else 0
            g.shard.copy_(flat[lo : lo + g.shard_numel])
            g.stale = not g.alias
        for k, v in buffers.items():
            v.copy_(tensors[k])
