"""Checkpoints of a run under a ``ParallelPlan``: save, and resume under the same plan.

``checkpoint-<step>/`` holds, beside the trainer files of
``trainers.checkpoint`` (``trainer_state.json`` with the config and so the
plan, ``extra.safetensors``, ``rng.safetensors``):

* ``model.safetensors``: the full model (every DTensor gathered, the pipeline
  stages merged), loadable by one process whatever plan wrote it;
* ``rank-<r>.safetensors`` + ``rank-<r>.json``: rank r's local shards of the
  parameters (``model/<name>``) and of the optimizer state, and the optimizer's
  non-tensor state. Resuming copies them back as they are, so the run goes on
  bit for bit; it therefore needs the same plan on the same world size
  (ValueError naming ``parallel`` otherwise; load ``model.safetensors`` to
  change plans).

Rank 0 writes every file (the shards travel to it through an object gather:
it briefly holds all of them) into a staging directory that
``atomic.replace_dir`` puts in place. Nothing is unpickled from the files.
"""

from __future__ import annotations

import json
import os
import shutil

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from shardkit import atomic
from shardkit.trainers.checkpoint import _PATTERN, _write_trainer_files


def _local(t: torch.Tensor) -> torch.Tensor:
    return t._local_tensor if hasattr(t, "_local_tensor") else t


def _rank_state(pm, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """This rank's local parameter and optimizer-state tensors, and the optimizer's other state."""
    tensors = {f"model/{n}": _local(p).detach().cpu().clone() for n, p in pm.named_parameters()}
    sd = optimizer.state_dict()
    meta = {"param_groups": sd["param_groups"], "state": {}}
    for pid, pstate in sd["state"].items():
        entry = {}
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}.{key}"] = _local(value).detach().cpu().clone()
                entry[key] = {"tensor": f"optim/{pid}.{key}", "dtensor": hasattr(value, "_local_tensor")}
            else:
                entry[key] = value
        meta["state"][str(pid)] = entry
    return tensors, meta


def save(trainer, pm) -> str:
    """Write ``checkpoint-<global_step>`` (collective: every rank calls it); returns its directory."""
    from shardkit.parallel import full_state_dict

    args = trainer.args
    final = os.path.join(args.output_dir, f"checkpoint-{trainer.state.global_step}")
    full = full_state_dict(pm)
    mine = _rank_state(pm, trainer.optimizer)
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    parts = [None] * world
    if world > 1:
        dist.all_gather_object(parts, mine)
    else:
        parts = [mine]
    if rank == 0:
        os.makedirs(args.output_dir, exist_ok=True)
        atomic.sweep(args.output_dir, _PATTERN)
        tmp = atomic.staging_dir(final)
        try:
            model = {k: v.contiguous() for k, v in full.items()}
            atomic.write_atomic(os.path.join(tmp, "model.safetensors"), lambda path: save_file(model, path))
            for r, (tensors, meta) in enumerate(parts):
                atomic.write_atomic(os.path.join(tmp, f"rank-{r}.safetensors"),
                                    lambda path, t=tensors: save_file(t, path))
                atomic.write_json(os.path.join(tmp, f"rank-{r}.json"), meta)
            _write_trainer_files(trainer, tmp, {"torch": torch.get_rng_state()})
            atomic.replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if dist.is_initialized():
        dist.barrier()  # no rank reads (or writes) the next checkpoint before this one is in place
    return final


@torch.no_grad()
def load(trainer, pm, path: str) -> None:
    """Restore parameters, optimizer, scheduler, progress and extra tensors saved by ``save`` under this plan."""
    atomic.recover_dir(path)
    state_path = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"resume_from_checkpoint={path!r}: no trainer_state.json there")
    with open(state_path) as f:
        state = json.load(f)
    saved_plan, plan = state["config"].get("parallel"), trainer.args.parallel
    if saved_plan != plan:
        raise ValueError(f"parallel: the checkpoint {path!r} was written under {saved_plan}, this run has {plan}; "
                         "resume under the same plan, or load its model.safetensors into a new run")
    rank = dist.get_rank() if dist.is_initialized() else 0
    tensors = load_file(os.path.join(path, f"rank-{rank}.safetensors"))
    with open(os.path.join(path, f"rank-{rank}.json")) as f:
        meta = json.load(f)
    params = dict(pm.named_parameters())
    for name, p in params.items():
        _local(p).copy_(tensors[f"model/{name}"])
    ordered = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    optim_state = {}
    for pid, entry in meta["state"].items():
        p, restored = ordered[int(pid)], {}
        for key, value in entry.items():
            if isinstance(value, dict) and "tensor" in value:
                t = tensors[value["tensor"]].to(_local(p).device)
                if value["dtensor"]:
                    from torch.distributed.tensor import DTensor

                    t = DTensor.from_local(t, p.device_mesh, p.placements, run_check=False,
                                           shape=p.shape, stride=p.stride())
                restored[key] = t
            else:
                restored[key] = value
        optim_state[int(pid)] = restored
    trainer.optimizer.load_state_dict({"state": optim_state, "param_groups": meta["param_groups"]})
    if state.get("lr_scheduler"):
        trainer.lr_scheduler.load_state_dict({**trainer.lr_scheduler.state_dict(), **state["lr_scheduler"]})
    trainer.load_extra_checkpoint_tensors(load_file(os.path.join(path, "extra.safetensors")))
    torch.set_rng_state(load_file(os.path.join(path, "rng.safetensors"))["torch"])
    trainer.state.global_step = state["global_step"]
    trainer.state.num_tokens = state["num_tokens"]
    trainer.state.train_seconds = state.get("train_seconds", 0.0)
    trainer.state.log_history = state["log_history"]
