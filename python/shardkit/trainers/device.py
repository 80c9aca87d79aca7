"""Where a trainer runs, and how its batches get there.

``resolve_device`` is the rule, a pure function of its inputs so it is
tested without a GPU: ``device="auto"`` (the default) takes
``cuda:LOCAL_RANK`` when CUDA is available (``cuda:0`` outside torchrun, or
the model's own GPU when it is already on one), else the CPU; ``"cpu"``,
``"cuda"`` (``cuda:LOCAL_RANK``) and ``"cuda:N"`` override it.
``select_device`` feeds it this process's facts and makes the CUDA device
current, as every rank of a torchrun job must before NCCL starts.

``move_batch`` sends every tensor of a collated batch to the device with
``non_blocking=True``; to a CUDA device from pinned host memory (``should_pin``
decides), so the copy really is asynchronous and overlaps the step that runs.
It also notes, on the host, which attention masks are right-padded: the
forward may then drop them (``logprobs.forward_logits``) without asking the
device, which would be a host sync per micro-batch.
"""

from __future__ import annotations

import os
import re

import torch

from shardkit.models.attention_mask import is_right_padded

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def check_device(spec) -> str:
    """``spec`` if it is ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; else ValueError naming the field."""
    if isinstance(spec, str) and (spec in ("auto", "cpu", "cuda") or _CUDA_INDEX.fullmatch(spec)):
        return spec
    raise ValueError(f"TrainingConfig.device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N >= 0), got {spec!r}")


def resolve_device(spec: str, *, cuda_available: bool, cuda_count: int, local_rank: int | None,
                   model_device: torch.device | None = None) -> torch.device:
    """The device a rank trains on.

    Args:
        spec: ``TrainingConfig.device``.
        cuda_available, cuda_count: what ``torch.cuda`` reports on this host.
        local_rank: ``LOCAL_RANK`` under torchrun, else None.
        model_device: where the model's parameters are now (``auto`` keeps a
            model that is already on a GPU there).
    """
    spec = check_device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto":
        if not cuda_available or cuda_count < 1:
            return torch.device("cpu")
        if model_device is not None and model_device.type == "cuda" and local_rank is None:
            return torch.device("cuda", model_device.index or 0)
    elif not cuda_available or cuda_count < 1:
        raise ValueError(f"TrainingConfig.device={spec!r} but CUDA is not available here; use 'cpu' or 'auto'")
    match = _CUDA_INDEX.fullmatch(spec)
    index = int(match.group(1)) if match else (local_rank or 0)
    if index >= cuda_count:
        what = f"device={spec!r}" if match else f"LOCAL_RANK={local_rank} (one GPU per rank)"
        raise ValueError(f"TrainingConfig.device: {what} needs GPU {index}, but this host has {cuda_count}; "
                         "start at most one rank per GPU (torchrun --nproc-per-node)")
    return torch.device("cuda", index)


def local_rank_from_env(environ=os.environ) -> int | None:
    """``LOCAL_RANK`` as torchrun (and ``shardkit.testing.spawn``) set it, or None outside them."""
    value = environ.get("LOCAL_RANK")
    if value is None:
        return None
    if not value.isdigit():
        raise ValueError(f"LOCAL_RANK must be a non-negative integer, got {value!r}")
    return int(value)


def model_device(model: torch.nn.Module) -> torch.device | None:
    """The device of the model's first parameter (None for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return None


def select_device(spec: str, model: torch.nn.Module | None = None) -> torch.device:
    """``resolve_device`` with this process's CUDA and ``LOCAL_RANK``; makes a CUDA device the current one."""
    available = torch.cuda.is_available()
    device = resolve_device(spec, cuda_available=available, cuda_count=torch.cuda.device_count() if available else 0,
                            local_rank=local_rank_from_env(), model_device=None if model is None else model_device(model))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def should_pin(tensor: torch.Tensor, device: torch.device) -> bool:
    """Pin ``tensor`` before copying it to ``device``: only host tensors bound for a CUDA device, not pinned yet.

    A copy from pageable memory with ``non_blocking=True`` is staged through a
    pinned buffer synchronously anyway; from pinned memory it is a real
    asynchronous DMA. Pinning for a CPU target would only cost time (and
    needs CUDA).
    """
    return device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned()


class DeviceBatch(dict):
    """A batch on its device, plus what the host knew about it: ``right_padded[key]`` per attention mask."""

    right_padded: dict[str, bool]


def move_batch(batch: dict, device: torch.device | str) -> DeviceBatch:
    """Every tensor of ``batch`` on ``device`` (``non_blocking=True``, pinned first for CUDA); other values as they are.

    The masks (keys ending in ``attention_mask``) are checked for right
    padding here, on the host copy, before they move.
    """
    device = torch.device(device)
    out = DeviceBatch()
    out.right_padded = {key: is_right_padded(value) for key, value in batch.items()
                        if key.endswith("attention_mask") and isinstance(value, torch.Tensor)
                        and value.device.type == "cpu" and value.dim() == 2}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            if should_pin(value, device):
                value = value.pin_memory()
            value = value.to(device, non_blocking=True)
        out[key] = value
    return out


def mask_is_right_padded(batch: dict, key: str = "attention_mask") -> bool:
    """Whether ``batch[key]`` is right-padded: from what ``move_batch`` noted on the host, else computed."""
    known = getattr(batch, "right_padded", {})
    return known[key] if key in known else is_right_padded(batch[key])


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak bytes allocated on ``device`` since the last reset (``torch.cuda.max_memory_allocated``); None on CPU,
    where torch keeps no such counter (the trainers then report the process's peak resident set instead)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return None


def peak_host_rss_bytes() -> int | None:
    """Peak resident set size of this process (``ru_maxrss``), or None where ``resource`` is missing."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` moved to ``device``; a model sharded already (by ``shard()`` or FSDP2) stays where it is."""
    from torch.distributed.fsdp import FSDPModule

    from shardkit import fsdp

    if isinstance(model, FSDPModule):
        return model
    try:
        fsdp.get_state(model)
        return model
    except TypeError:
        return model.to(device)
