"""Trainer checkpoints: save and exact resume, without pickle.

``output_dir/checkpoint-<step>/`` holds ``model.safetensors``,
``optimizer.safetensors`` (tensors) + ``optimizer.json`` (the rest of the
state dict), ``extra.safetensors`` (e.g. precomputed reference log-probs),
``rng.safetensors`` and ``trainer_state.json``. The data order is a function
of (seed, step), so the step restores it. A checkpoint is written into a temp
directory and renamed into place, so a crash never leaves a half checkpoint.

A model sharded by ``shardkit.fsdp`` (several ranks) saves instead a sharded
checkpoint (``layout.json`` + one ``shard-*.safetensors`` per rank, holding the
flat parameters and their optimizer state; see
``shardkit.fsdp.sharded_checkpoint``), with the same trainer files beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file, load_model, save_file, save_model


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


def _save_sharded(trainer, final: str) -> str:
    from shardkit import fsdp

    return fsdp.save_sharded_checkpoint(trainer.model, trainer.optimizer, final,
                                        write_extra=lambda tmp: _write_trainer_files(trainer, tmp))


def save(trainer) -> str:
    """Write a checkpoint of ``trainer`` at its current step; returns its directory."""
    args = trainer.args
    os.makedirs(args.output_dir, exist_ok=True)
    final = os.path.join(args.output_dir, f"checkpoint-{trainer.state.global_step}")
    if hasattr(trainer.model, "_shardkit_fsdp"):
        return _save_sharded(trainer, final)
    tmp = tempfile.mkdtemp(prefix=".checkpoint-", dir=args.output_dir)
    try:
        save_model(trainer.model, os.path.join(tmp, "model.safetensors"))
        tensors, meta = _flatten_optimizer(trainer.optimizer.state_dict())
        save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
        with open(os.path.join(tmp, "optimizer.json"), "w") as f:
            json.dump(meta, f)
        _write_trainer_files(trainer, tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_trainer_files(trainer, tmp: str) -> None:
    """Everything but the model and optimizer: extra tensors, RNG, progress, scheduler, config."""
    extra = {k: v.contiguous() for k, v in trainer.extra_checkpoint_tensors().items()}
    save_file(extra, os.path.join(tmp, "extra.safetensors"))
    save_file({"torch": torch.get_rng_state()}, os.path.join(tmp, "rng.safetensors"))
    state = {"global_step": trainer.state.global_step, "num_tokens": trainer.state.num_tokens,
             "log_history": trainer.state.log_history,
             "lr_scheduler": trainer.lr_scheduler.state_dict() if trainer.lr_scheduler else None,
             "config": trainer.args.to_dict()}
    state["lr_scheduler"] = {k: v for k, v in (state["lr_scheduler"] or {}).items() if k != "lr_lambdas"}
    with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
        json.dump(state, f, indent=1)


def load(trainer, path: str) -> None:
    """Restore ``trainer`` (model, optimizer, scheduler, RNG, step, logs) from a checkpoint directory."""
    state_path = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"resume_from_checkpoint={path!r}: no trainer_state.json there")
    with open(state_path) as f:
        state = json.load(f)
    if hasattr(trainer.model, "_shardkit_fsdp"):
        from shardkit import fsdp

        fsdp.load_sharded_checkpoint(trainer.model, trainer.optimizer, path)
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
    torch.set_rng_state(load_file(os.path.join(path, "rng.safetensors"))["torch"])
    trainer.state.global_step = state["global_step"]
    trainer.state.num_tokens = state["num_tokens"]
    trainer.state.log_history = state["log_history"]
