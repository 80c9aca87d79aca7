"""FusedAdam and FusedAdamW: drop-ins for torch.optim.Adam / AdamW.

Same constructor, param_groups, state_dict keys (per-parameter fp32 ``step``
tensors, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` with amsgrad), LR
scheduler and GradScaler support. Each step is one native call per (device,
param dtype, grad dtype) group, one pass over memory.

bf16/fp16 parameters get an fp32 ``master_param`` and fp32 moments in their
state: the update happens in fp32 and the parameter receives the rounded
result, so small updates are not lost to bf16's 8-bit mantissa.
"""

from __future__ import annotations

import torch

from shardkit.optim import _mixed_precision as mp
from shardkit.optim._dtensor import local


class FusedAdam(mp.FusedOptimizer):
    """Adam with L2 weight decay (``decoupled_weight_decay=False``) or AdamW.

    Args are those of :class:`torch.optim.Adam`. ``foreach`` and ``fused`` are
    accepted for compatibility and ignored (this optimizer is always fused);
    ``capturable`` and ``differentiable`` are not supported.
    """

    def __init__(
        self,
        params,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError(f"lr: expected a float or a one-element tensor, got shape {tuple(lr.shape)}")
        if not 0.0 <= float(lr):
            raise ValueError(f"lr: expected >= 0, got {float(lr)}")
        if not 0.0 <= eps:
            raise ValueError(f"eps: expected >= 0, got {eps}")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        for index, beta in enumerate(betas):
            if not 0.0 <= float(beta) < 1.0:
                raise ValueError(f"betas[{index}]: expected 0 <= beta < 1, got {float(beta)}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if capturable:
            raise ValueError("capturable: CUDA-graph capture is not supported by shardkit's fused Adam")
        if differentiable:
            raise ValueError("differentiable: not supported by shardkit's fused Adam")
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
            foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    _required_state_keys = ("step", "exp_avg", "exp_avg_sq")

    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = mp.fp32_zeros_like(p)
            state["exp_avg_sq"] = mp.fp32_zeros_like(p)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = mp.fp32_zeros_like(p)
        if mp.is_low_precision(p) and "master_param" not in state:
            # First step, or state loaded from torch.optim (no master): start from the parameter.
            state["master_param"] = mp.fp32_master(p)
        return state

    def _fused_step(self, group: dict, bucket: list, grad_scale, found_inf) -> None:
        amsgrad = group["amsgrad"]
        beta1, beta2 = group["betas"]
        states = [s for _, _, s in bucket]
        torch.ops.shardkit.fused_adam_(
            [local(p) for p, _, _ in bucket],
            [local(g) for _, g, _ in bucket],
            [local(s["master_param"]) for s in states if "master_param" in s],
            [local(s["exp_avg"]) for s in states],
            [local(s["exp_avg_sq"]) for s in states],
            [local(s["max_exp_avg_sq"]) for s in states] if amsgrad else [],
            [s["step"] for s in states],
            float(group["lr"]),
            float(beta1),
            float(beta2),
            float(group["eps"]),
            float(group["weight_decay"]),
            amsgrad,
            group["maximize"],
            group["decoupled_weight_decay"],
            grad_scale,
            found_inf,
        )


class FusedAdamW(FusedAdam):
    """AdamW (decoupled weight decay, default 1e-2): a drop-in for :class:`torch.optim.AdamW`."""

    def __init__(
        self,
        params,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused, decoupled_weight_decay=True,
        )
