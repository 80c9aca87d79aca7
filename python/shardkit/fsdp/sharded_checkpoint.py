"""Sharded checkpoints: each rank writes its flat shards and their optimizer state.

Directory layout::

    layout.json                  world size, each flat group's names/shapes/sizes, optimizer hyper-parameters
    shard-00000-of-00004.safetensors   flat.{k}, optim.{k}.{key} of rank 0 (k = flat group index)
    ...

A checkpoint written with N ranks loads with M ranks: a loading rank joins
the N saved shards of one group into the unpadded flat values, then cuts its
own padded block for M ranks, one group at a time (the whole model is never
held). Under HYBRID every host holds the same shards, so only the first
host's ranks write, one file per rank of a host: the checkpoint looks like
a FULL_SHARD one of that many ranks and loads with any strategy and world
size, as FULL_SHARD checkpoints load into HYBRID models. Element-wise optimizer state (moments, momentum, fp32 masters) is
resharded the same way; scalar state (the step) is taken from rank 0's file.
Everything is written (by ``shardkit.atomic``) into a staging directory that
rank 0 puts in place with ``atomic.replace_dir`` once all ranks are done: the
previous copy is renamed aside and deleted only after the new one is in, so
a crash at any point leaves a complete checkpoint, under its name or as
``.old-<name>``, which ``load_sharded_checkpoint`` and the next save rename
back. No pickle: safetensors and JSON only.
"""

from __future__ import annotations

import json
import os
import shutil

import torch
from torch import nn

from shardkit import atomic
from shardkit.fsdp.sharded_model import get_state

_LAYOUT = "layout.json"


def _shard_file(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}.safetensors"


def _barrier(state) -> None:
    if state.transport is not None and state.world_size > 1:
        state.transport.barrier()


def _layout(state, optimizer) -> dict:
    groups = [{"names": [[n for _, _, n in uses] for uses in g.uses], "shapes": [list(s) for s in g.shapes],
               "numel": sum(g.numels), "shard_numel": g.shard_numel, "sharded": g.shard_world > 1,
               "dtype": str(g.dtype).removeprefix("torch.")} for g in state.groups]
    hyper = None
    if optimizer is not None:
        hyper = [{k: v for k, v in pg.items() if k != "params" and isinstance(v, (int, float, bool, str, list, tuple, type(None)))}
                 for pg in optimizer.param_groups]
    # world_size: how many shard files there are (the ranks of one replica).
    return {"format": "shardkit.fsdp.sharded/1", "world_size": state.shard_world_size, "groups": groups,
            "param_groups": hyper}


def save_sharded_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer | None, directory: str | os.PathLike,
                            *, write_extra=None) -> str:
    """Write this rank's shards (and ``optimizer``'s state for them) under ``directory``; a collective.

    ``write_extra(tmp_dir)``, if given, runs on rank 0 before the rename, to
    add files (e.g. a trainer's state) to the same atomic checkpoint.
    Returns the directory. An existing checkpoint there is replaced only once the new one is complete.
    """
    from safetensors.torch import save_file

    state = get_state(model)
    final = os.path.abspath(os.fspath(directory))
    tmp = os.path.join(os.path.dirname(final), f".tmp-{os.path.basename(final)}")
    if state.rank == 0:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        atomic.recover_dir(final)  # an earlier crashed save's .old- copy: back in place, or deleted
        atomic.staging_dir(final)
    _barrier(state)
    tensors: dict[str, torch.Tensor] = {}
    elementwise: dict[str, list[str]] = {}
    for k, g in enumerate(state.groups):
        tensors[f"flat.{k}"] = g.shard.detach().clone()
        per_param = optimizer.state.get(g.shard, {}) if optimizer is not None else {}
        for key, value in per_param.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer: state {key!r} is a {type(value).__name__}; only tensor state can be saved")
            tensors[f"optim.{k}.{key}"] = value.detach().clone().reshape(value.shape)
            if value.dim() == 1 and value.numel() == g.shard_numel and key != "step":
                elementwise.setdefault(str(k), []).append(key)
    try:
        if state.replica_index == 0:  # the other replicas hold the same shards
            name = os.path.join(tmp, _shard_file(state.shard_rank, state.shard_world_size))
            metadata = {"elementwise": json.dumps(elementwise)}
            atomic.write_atomic(name, lambda path: save_file(tensors, path, metadata=metadata))
        if state.rank == 0:
            atomic.write_json(os.path.join(tmp, _LAYOUT), _layout(state, optimizer), indent=1)
            if write_extra is not None:
                write_extra(tmp)
        _barrier(state)
        if state.rank == 0:
            atomic.replace_dir(tmp, final)
    except BaseException:
        # The staging directory is never a checkpoint: rank 0 removes it (the next save would too).
        if state.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _barrier(state)
    return final


def load_sharded_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer | None, directory: str | os.PathLike) -> None:
    """Load a checkpoint written by ``save_sharded_checkpoint`` with any number of ranks.

    Raises ValueError when it belongs to another model (names, shapes or
    sizes differ) and FileNotFoundError when files are missing.
    """
    from safetensors import safe_open

    state = get_state(model)
    directory = os.fspath(directory)
    atomic.recover_dir(directory)  # a save that crashed between its renames left the copy as .old-<name>
    layout_path = os.path.join(directory, _LAYOUT)
    if not os.path.isfile(layout_path):
        raise FileNotFoundError(f"directory: {directory!r} has no {_LAYOUT}; not a shardkit sharded checkpoint")
    with open(layout_path) as f:
        layout = json.load(f)
    mine = _layout(state, None)["groups"]
    saved = layout["groups"]
    for key in ("names", "shapes", "numel", "dtype"):
        ours, theirs = [g[key] for g in mine], [g[key] for g in saved]
        if ours != theirs:
            raise ValueError(f"directory: checkpoint of another model ({key} differ: saved {theirs!r:.200}, model {ours!r:.200})")
    saved_world = int(layout["world_size"])
    files = [os.path.join(directory, _shard_file(r, saved_world)) for r in range(saved_world)]
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"directory: missing {os.path.basename(path)} of a {saved_world}-rank checkpoint")
    handles = [safe_open(p, framework="pt") for p in files]
    elementwise = json.loads(handles[0].metadata().get("elementwise", "{}"))
    with torch.no_grad():
        for k, (g, info) in enumerate(zip(state.groups, saved)):
            lo = g.rank * g.shard_numel if g.shard_world > 1 else 0

            def resharded(name: str) -> torch.Tensor:
                # The saved blocks of all ranks (one only if saved unsharded), unpadded, then this rank's new block.
                blocks = [h.get_tensor(name) for h in (handles if info["sharded"] else handles[:1])]
                flat = torch.cat(blocks)[: info["numel"]]
                out = torch.zeros(g.shard_numel, dtype=flat.dtype)
                piece = flat[lo : lo + g.shard_numel]
                out[: piece.numel()] = piece
                return out

            g.shard.copy_(resharded(f"flat.{k}"))
            g.stale = not g.alias
            if optimizer is None:
                continue
            keys = [n.split(".", 2)[2] for n in handles[0].keys() if n.startswith(f"optim.{k}.")]
            if keys:
                optimizer.state[g.shard] = {
                    # On the shard's device: the fused optimizers take their state where the parameter is.
                    key: (resharded(f"optim.{k}.{key}") if key in elementwise.get(str(k), [])
                          else handles[0].get_tensor(f"optim.{k}.{key}")).to(g.shard.device)
                    for key in keys
                }
        if optimizer is not None and layout.get("param_groups"):
            if len(layout["param_groups"]) != len(optimizer.param_groups):
                raise ValueError(f"optimizer: {len(optimizer.param_groups)} param groups, the checkpoint has {len(layout['param_groups'])}")
            for pg, hyper in zip(optimizer.param_groups, layout["param_groups"]):
                pg.update({k: tuple(v) if isinstance(pg.get(k), tuple) else v for k, v in hyper.items()})
