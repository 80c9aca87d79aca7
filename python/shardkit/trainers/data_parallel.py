"""What the training loop needs to know when several ranks train one model (data parallelism).

Rank r of W takes rows [r*bs, (r+1)*bs) of every global micro-batch of W*bs
examples, so W ranks with ``per_device_train_batch_size`` bs train exactly
like one process with W*bs. Gradients are averaged over ranks by
``shardkit.fsdp``; a token-level loss divides by the token count of all
ranks and is scaled by W to undo that average.
"""

from __future__ import annotations

import os

import torch

from shardkit.trainers import fsdp2_engine
from shardkit.trainers.setup import data_parallel_world


def rank() -> int:
    """This process's rank among the data-parallel ranks (0 when alone)."""
    from shardkit import comm

    if comm.is_initialized():
        return comm.get_group().rank
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def _is_plan_model(model) -> bool:
    """A ``shardkit.parallel.PlanCausalLM`` (checked by name: parallel sits above the trainers' helpers)."""
    return type(model).__name__ == "PlanCausalLM" and hasattr(model, "all_reduce_")


def is_sharded(model: torch.nn.Module) -> bool:
    """True when ``model`` is sharded over ranks (``shard()`` with a group; one process sharding alone is not)."""
    if _is_plan_model(model):  # its TP ranks must see the same rows: not split like data-parallel ranks
        return False
    if fsdp2_engine.is_fsdp2(model):
        return True
    from shardkit import fsdp

    return fsdp.is_sharded(model) and fsdp.get_state(model).transport is not None


def all_reduce_(values: torch.Tensor, op: str, model: torch.nn.Module) -> torch.Tensor:
    """Reduce ``values`` (float64, contiguous) over the ranks in place with ``op`` (sum, min or max).

    Untouched when the model is not sharded. The reduction runs on the sharded model's transport: values on
    another device (CPU values of a CUDA model, CUDA values of a CPU one) go through a copy (a sync, only when
    sharded). A ``shardkit.parallel.PlanCausalLM`` reduces over its plan's data-parallel axes (its TP ranks hold the
    same values).
    """
    if _is_plan_model(model):
        return model.all_reduce_(values, op)
    if fsdp2_engine.is_fsdp2(model):
        return fsdp2_engine.all_reduce_(values, op, model)
    if is_sharded(model):
        from shardkit import fsdp

        fsdp.get_state(model).transport.all_reduce_any(values, op)
    return values


def all_reduce_sum_(values: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """Sum ``values`` over the ranks in place: ``all_reduce_(values, "sum", model)``."""
    return all_reduce_(values, "sum", model)


def sum_over_ranks(value: float, model: torch.nn.Module) -> float:
    """``value`` summed over the ranks (itself when the model is not sharded)."""
    if not is_sharded(model):
        return float(value)
    return float(all_reduce_sum_(torch.tensor([float(value)], dtype=torch.float64), model))


def rank_rows(start: int, stop: int, model: torch.nn.Module) -> range:
    """This rank's share of rows [start, stop) of a batch that all ranks process together through ``model``.

    Contiguous and as even as possible (all of them when the model is not
    sharded). With fewer rows than ranks every rank takes them all: a sharded
    model's forward is a collective, so no rank may sit one out, and sums and
    counts reduced over ranks then scale alike.
    """
    world, n = (data_parallel_world() if is_sharded(model) else 1), stop - start
    if n < world or world == 1:  # world 1: every row, whatever this process's rank
        return range(start, stop)
    r = rank()
    return range(start + r * n // world, start + (r + 1) * n // world)


def clip_and_norm(model: torch.nn.Module, params: list[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """The global gradient norm before clipping (a 0-d tensor, left on the device); clips to ``max_norm`` when > 0.

    ``max_norm`` None or 0 disables clipping; the norm is still computed, so
    ``grad_norm`` is logged whether or not clipping is on.
    """
    clip = max_norm is not None and max_norm > 0
    if fsdp2_engine.is_fsdp2(model):
        return fsdp2_engine.clip_and_norm(params, max_norm)
    if is_sharded(model):
        from shardkit import fsdp

        return fsdp.clip_grad_norm_(model, max_norm if clip else float("inf"))
    if clip:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


__all__ = ["rank", "data_parallel_world", "is_sharded", "all_reduce_sum_", "sum_over_ranks", "rank_rows",
           "clip_and_norm"]
