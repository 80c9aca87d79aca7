"""``engine="fsdp2"``: the trainers on torch's ``fully_shard`` with shardkit's ``FusedAdamW``.

For users who already standardise on FSDP2: each block of the model (then
the root) becomes an ``FSDPModule`` over a 1-D ``DeviceMesh`` of all ranks;
parameters are DTensors, which ``FusedAdamW`` steps directly (see
``shardkit.optim._dtensor``). The process group is torch's own: joined from
torchrun's environment with ``cpu:gloo,cuda:nccl`` when it is not
initialised yet, so host tensors (the loop's metrics) reduce over gloo and
device tensors over NCCL. Gradients are averaged over the ranks, as
``shardkit.fsdp`` does, so the loop's loss scaling is the same for both engines.

Checkpoints hold the full (unsharded) state, gathered with
``torch.distributed.checkpoint.state_dict`` and written by rank 0:
``model.safetensors`` (tied weights once, their other names in
``model_aliases.json``) and the optimizer state keyed by parameter name.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

ENGINES = ("auto", "shardkit", "fsdp2")


def resolve_engine(engine: str, device: torch.device) -> str:
    """The engine that shards a model on ``device``: ``auto`` is ``shardkit`` on CPU and ``fsdp2`` on CUDA.

    ``shardkit.fsdp.shard`` takes CUDA parameters too (NCCL through
    ``shardkit.comm.nccl``, side-stream overlap), so ``engine="shardkit"`` runs
    on GPUs; ``auto`` stays FSDP2 there because that CUDA path has been tested
    on CPU only (its process-group transport over gloo), never timed on a GPU.
    """
    if engine not in ENGINES:
        raise ValueError(f"TrainingConfig.engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "fsdp2" if device.type == "cuda" else "shardkit"
    return engine


def is_fsdp2(model: torch.nn.Module) -> bool:
    """True when ``model`` is a root ``fully_shard`` module."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def init_process_group() -> None:
    """Join torchrun's ranks (``RANK``, ``WORLD_SIZE``, ``MASTER_*``) if torch.distributed is not initialised."""
    if dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)


def shard_fsdp2(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``fully_shard`` each block of ``model`` (``checkpointing.blocks.find_blocks``), then the root, over all ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from shardkit.checkpointing.blocks import find_blocks

    init_process_group()
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    try:
        blocks = [m for _, m in find_blocks(model)]
    except ValueError:
        blocks = []  # no layer stack: the root is the only unit
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def all_reduce_(values: torch.Tensor, op: str, model: torch.nn.Module) -> torch.Tensor:
    """Reduce ``values`` over the ranks in place (through the model's device when the group is NCCL-only)."""
    backend = dist.get_backend()
    on_device = values
    if values.device.type == "cpu" and "gloo" not in backend:
        on_device = values.to(next(model.parameters()).device)
    dist.all_reduce(on_device, op=_REDUCE_OPS[op])
    if on_device is not values:
        values.copy_(on_device)
    return values


def clip_and_norm(params: list[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """The global gradient norm (a plain 0-d tensor) before clipping; clips when ``max_norm`` > 0."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()  # the shards' partial norms combined over the ranks
    if max_norm is not None and max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def save(trainer, tmp: str | None) -> None:
    """Write the full model and optimizer state into ``tmp`` (rank 0 writes; every rank must call it)."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    from shardkit import atomic
    from shardkit.trainers import checkpoint

    model_state = get_model_state_dict(trainer.model, options=_options())
    optim_state = get_optimizer_state_dict(trainer.model, trainer.optimizer, options=_options())
    if dist.get_rank() != 0:
        return
    # Tied weights (an LM head sharing the embedding) come back as one tensor under two names, which
    # safetensors refuses: keep the first name and record the others as aliases of it.
    kept, aliases = {}, {}
    for name, value in model_state.items():
        same = next((k for k, v in kept.items() if v.data_ptr() == value.data_ptr() and v.shape == value.shape), None)
        if same is None:
            kept[name] = value.contiguous()
        else:
            aliases[name] = same
    atomic.write_atomic(os.path.join(tmp, "model.safetensors"), lambda path: save_file(kept, path))
    atomic.write_json(os.path.join(tmp, "model_aliases.json"), aliases)
    tensors, meta = checkpoint._flatten_optimizer(optim_state)
    atomic.write_atomic(os.path.join(tmp, "optimizer.safetensors"), lambda path: save_file(tensors, path))
    atomic.write_json(os.path.join(tmp, "optimizer.json"), meta)


def load(trainer, path: str) -> None:
    """Load a full-state checkpoint (every rank reads it) into the FSDP2 model and its optimizer."""
    import json

    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    model_state = load_file(os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "model_aliases.json")) as f:
        model_state.update({name: model_state[same] for name, same in json.load(f).items()})
    with open(os.path.join(path, "optimizer.json")) as f:
        meta = json.load(f)
    tensors = load_file(os.path.join(path, "optimizer.safetensors"))
    # Keys are parameter names (FQNs), as get_optimizer_state_dict wrote them.
    state = {fqn: {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v for k, v in entry.items()}
             for fqn, entry in meta["state"].items()}
    optim_state = {"state": state, "param_groups": meta["param_groups"]}
    set_model_state_dict(trainer.model, model_state, options=_options())
    set_optimizer_state_dict(trainer.model, trainer.optimizer, optim_state, options=_options())
