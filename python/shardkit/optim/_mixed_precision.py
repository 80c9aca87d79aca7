"""What FusedAdam/FusedAdamW and FusedSGD share: fp32 state for low-precision
parameters, grouping into one native call per (device, dtype) pair, and a
state_dict that loads both ways with torch.optim.

State of a bf16/fp16 parameter: an fp32 ``master_param`` (created lazily at
its first step, saved in the state_dict) and fp32 moments. The parameter
itself is the master rounded to its dtype after every step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch

from shardkit.ops._checks import FLOAT_DTYPES

#: State entries kept in fp32 whatever the parameter's dtype.
FP32_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "master_param")


def is_low_precision(p: torch.Tensor) -> bool:
    return p.dtype in (torch.bfloat16, torch.float16)


def fp32_zeros_like(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros(p.shape, dtype=torch.float32, device=p.device)


def check_param(p: torch.Tensor, where: str) -> None:
    """Rejects what the fused kernels cannot update in place, before any state exists."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where}: expected a Tensor, got {type(p).__name__}")
    if p.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}: expected a float32, bfloat16 or float16 parameter, got {p.dtype}")
    if p.layout != torch.strided:
        raise TypeError(f"{where}: expected a dense parameter, got layout {p.layout}")
    if not p.is_contiguous():
        raise ValueError(f"{where}: expected a contiguous parameter, got strides {tuple(p.stride())}")


def grad_of(p: torch.Tensor, where: str) -> torch.Tensor:
    g = p.grad
    if g.is_sparse or g.layout != torch.strided:
        raise TypeError(f"{where}.grad: sparse gradients are not supported by the fused optimizers")
    if g.device != p.device:
        raise ValueError(f"{where}.grad: expected a gradient on {p.device}, got one on {g.device}")
    if g.shape != p.shape:
        raise ValueError(f"{where}.grad: expected shape {tuple(p.shape)}, got {tuple(g.shape)}")
    if not g.is_contiguous():
        # torch's CPU fused=True silently mis-updates here (see ANCHORS.md); we refuse.
        raise ValueError(
            f"{where}.grad: expected a contiguous gradient, got strides {tuple(g.stride())}; "
            "call .contiguous() on it explicitly if that copy is intended"
        )
    return g


def bucket_key(p: torch.Tensor, g: torch.Tensor) -> tuple:
    return (p.device, p.dtype, g.dtype)


def group_by_bucket(items: Iterable[tuple[torch.Tensor, torch.Tensor, dict]]) -> dict[tuple, list]:
    """One native call per (device, param dtype, grad dtype)."""
    buckets: dict[tuple, list] = defaultdict(list)
    for p, g, state in items:
        buckets[bucket_key(p, g)].append((p, g, state))
    return buckets


def amp_tensors(optimizer: torch.optim.Optimizer, device: torch.device):
    """GradScaler's grad_scale and found_inf for ``device`` (None without a scaler)."""
    grad_scale = getattr(optimizer, "grad_scale", None)
    found_inf = getattr(optimizer, "found_inf", None)
    if grad_scale is not None:
        grad_scale = grad_scale.to(device=device, dtype=torch.float32).reshape(1)
    if found_inf is not None:
        found_inf = found_inf.to(device=device, dtype=torch.float32).reshape(1)
    return grad_scale, found_inf


def restore_fp32_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """Undoes torch's cast of loaded state to the parameter dtype.

    ``torch.optim.Optimizer.load_state_dict`` casts every floating state tensor
    to its parameter's dtype, which would round fp32 masters and moments of a
    bf16 parameter to bf16. Re-read them from ``state_dict`` in fp32 (state
    saved by torch.optim in bf16 is widened). Step counts become fp32 0-dim
    tensors on the parameter's device, where the kernels read them.
    """
    saved_ids = [pid for group in state_dict["param_groups"] for pid in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for pid, p in zip(saved_ids, params):
        saved = state_dict["state"].get(pid)
        if saved is None:
            continue
        state = optimizer.state[p]
        for key in FP32_STATE_KEYS:
            value = saved.get(key)
            if key == "master_param" and not is_low_precision(p):
                state.pop(key, None)  # an fp32 parameter is its own master
            elif isinstance(value, torch.Tensor):
                state[key] = value.detach().to(device=p.device, dtype=torch.float32, copy=True).contiguous()
        if "step" in saved:
            step = saved["step"]
            step = step.item() if isinstance(step, torch.Tensor) else float(step)
            state["step"] = torch.tensor(step, dtype=torch.float32, device=p.device)
