"""Trainer checkpoints: save and exact resume, without pickle.

``output_dir/checkpoint-<step>/`` holds ``model.safetensors``,
``optimizer.safetensors`` (tensors) + ``optimizer.json`` (the rest of the
state dict), ``extra.safetensors`` (e.g. precomputed reference log-probs),
``rng.safetensors`` (torch's RNG state; with several ranks each rank's, as
``torch.rank<r>``), ``ema.safetensors`` with ``ema_decay`` and ``trainer_state.json``. The data order is a function
of (seed, step), so the step restores it. A checkpoint is written into a
staging directory and put in place by ``shardkit.atomic.replace_dir``, which
removes an older copy of the same step only once the new one is in: a crash
at any point leaves a complete ``checkpoint-<step>`` (or its ``.old-`` copy,
which ``load`` and ``latest`` rename back).

A model sharded by ``shardkit.fsdp`` (several ranks) saves instead a sharded
checkpoint (``layout.json`` + one ``shard-*.safetensors`` per rank, holding the
flat parameters and their optimizer state; see
``shardkit.fsdp.sharded_checkpoint``), with the same trainer files beside it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from shardkit import atomic
from shardkit.trainers import data_parallel, fsdp2_engine

_PATTERN = "checkpoint-*"


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for pid, pstate in state_dict["state"].items():
        entry = {}
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.contiguous()
                entry[key] = {"tensor": f"{pid}.{key}"}
            else:
                entry[key] = value
        meta["state"][str(pid)] = entry
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for pid, entry in meta["state"].items():
        state[int(pid)] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for k, v in entry.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_states(trainer) -> dict[str, torch.Tensor]:
    """torch's RNG state of every rank (a collective when sharded: rank 0 writes them all)."""
    state = torch.get_rng_state()  # (n,) uint8
    if not data_parallel.is_sharded(trainer.model):
        return {"torch": state}
    world, rank = data_parallel.data_parallel_world(), data_parallel.rank()
    gathered = torch.zeros(world, state.numel(), dtype=torch.float64)  # bytes are exact in float64
    gathered[rank] = state.double()
    data_parallel.all_reduce_sum_(gathered, trainer.model)
    states = {f"torch.rank{r}": gathered[r].to(torch.uint8) for r in range(world)}
    return {"torch": states["torch.rank0"].clone(), **states}  # safetensors refuses shared storage


def _save_sharded(trainer, final: str) -> str:
    from shardkit import fsdp

    rng = _rng_states(trainer)
    if fsdp.get_state(trainer.model).rank == 0:  # the ranks touch no file before the save's first barrier
        atomic.sweep(os.path.dirname(final), _PATTERN)
    return fsdp.save_sharded_checkpoint(trainer.model, trainer.optimizer, final,
                                        write_extra=lambda tmp: _write_trainer_files(trainer, tmp, rng))


def _save_fsdp2(trainer, final: str) -> str:
    """The full state gathered from the FSDP2 ranks; rank 0 writes the directory, the others wait for it."""
    import torch.distributed as dist

    rng = _rng_states(trainer)  # a collective, like the gathers below
    rank0 = dist.get_rank() == 0
    tmp = None
    if rank0:
        atomic.sweep(os.path.dirname(final), _PATTERN)
        tmp = atomic.staging_dir(final)
    try:
        fsdp2_engine.save(trainer, tmp)
        if rank0:
            _write_trainer_files(trainer, tmp, rng)
            atomic.replace_dir(tmp, final)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    dist.barrier()  # no rank reads the checkpoint (or the next step's files) before it is in place
    return final


def save(trainer) -> str:
    """Write a checkpoint of ``trainer`` at its current step; returns its directory."""
    args = trainer.args
    os.makedirs(args.output_dir, exist_ok=True)
    final = os.path.join(args.output_dir, f"checkpoint-{trainer.state.global_step}")
    from shardkit import fsdp

    if fsdp.is_sharded(trainer.model):
        return _save_sharded(trainer, final)
    if fsdp2_engine.is_fsdp2(trainer.model):
        return _save_fsdp2(trainer, final)
    atomic.sweep(args.output_dir, _PATTERN)  # what crashed saves left
    rng = _rng_states(trainer)
    tmp = atomic.staging_dir(final)
    try:
        atomic.write_atomic(os.path.join(tmp, "model.safetensors"), lambda path: save_model(trainer.model, path))
        tensors, meta = _flatten_optimizer(trainer.optimizer.state_dict())
        atomic.write_atomic(os.path.join(tmp, "optimizer.safetensors"), lambda path: save_file(tensors, path))
        atomic.write_json(os.path.join(tmp, "optimizer.json"), meta)
        _write_trainer_files(trainer, tmp, rng)
        atomic.replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_trainer_files(trainer, tmp: str, rng: dict[str, torch.Tensor]) -> None:
    """Everything but the model and optimizer: extra tensors, RNG, progress, scheduler, config."""
    extra = {k: v.contiguous() for k, v in trainer.extra_checkpoint_tensors().items()}
    atomic.write_atomic(os.path.join(tmp, "extra.safetensors"), lambda path: save_file(extra, path))
    atomic.write_atomic(os.path.join(tmp, "rng.safetensors"), lambda path: save_file(rng, path))
    if getattr(trainer, "ema", None) is not None:
        trainer.ema.save(tmp)
    state = {"global_step": trainer.state.global_step, "num_tokens": trainer.state.num_tokens,
             "train_seconds": trainer.state.train_seconds, "log_history": trainer.state.log_history,
             "lr_scheduler": trainer.lr_scheduler.state_dict() if trainer.lr_scheduler else None,
             "config": trainer.args.to_dict()}
    state["lr_scheduler"] = {k: v for k, v in (state["lr_scheduler"] or {}).items() if k != "lr_lambdas"}
    atomic.write_json(os.path.join(tmp, "trainer_state.json"), state, indent=1)


def latest(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``checkpoint-<step>`` in ``output_dir`` (None if none), after recovering crashed saves.

    Every rank may call it at once (the recovery tolerates that).
    """
    output_dir = Path(output_dir)
    for old in output_dir.glob(f".old-{_PATTERN}"):
        atomic.recover_dir(output_dir / old.name.removeprefix(".old-"))
    found = [p for p in output_dir.glob(_PATTERN) if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def load(trainer, path: str) -> None:
    """Restore ``trainer`` (model, optimizer, scheduler, RNG, step, logs) from a checkpoint directory."""
    atomic.recover_dir(path)  # a save that crashed between its renames left the copy as .old-<name>
    state_path = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"resume_from_checkpoint={path!r}: no trainer_state.json there")
    with open(state_path) as f:
        state = json.load(f)
    saved_plan = state.get("config", {}).get("parallel")
    if saved_plan != trainer.args.parallel:  # a plan's checkpoint holds per-rank shards (trainers/plan_checkpoint.py)
        raise ValueError(f"parallel: the checkpoint {path!r} was written under {saved_plan}, this run has "
                         f"{trainer.args.parallel}; resume under the same plan, or load its model.safetensors")
    from shardkit import fsdp

    if fsdp.is_sharded(trainer.model):
        fsdp.load_sharded_checkpoint(trainer.model, trainer.optimizer, path)
    elif fsdp2_engine.is_fsdp2(trainer.model):
        fsdp2_engine.load(trainer, path)
    else:
        missing, unexpected = load_model(trainer.model, os.path.join(path, "model.safetensors"), strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {path!r} does not fit the model: missing {missing}, unexpected {unexpected}")
        with open(os.path.join(path, "optimizer.json")) as f:
            meta = json.load(f)
        trainer.optimizer.load_state_dict(_unflatten_optimizer(load_file(os.path.join(path, "optimizer.safetensors")), meta))
    if state.get("lr_scheduler"):
        trainer.lr_scheduler.load_state_dict({**trainer.lr_scheduler.state_dict(), **state["lr_scheduler"]})
    trainer.load_extra_checkpoint_tensors(load_file(os.path.join(path, "extra.safetensors")))
    if getattr(trainer, "ema", None) is not None:
        trainer.ema.load(path)
    rng = load_file(os.path.join(path, "rng.safetensors"))
    # This rank's own state when the checkpoint has one (same or larger world), else rank 0's.
    own = f"torch.rank{data_parallel.rank()}" if data_parallel.is_sharded(trainer.model) else "torch"
    torch.set_rng_state(rng.get(own, rng["torch"]))
    trainer.state.global_step = state["global_step"]
    trainer.state.num_tokens = state["num_tokens"]
    trainer.state.train_seconds = state.get("train_seconds", 0.0)  # absent from older checkpoints
    trainer.state.log_history = state["log_history"]
