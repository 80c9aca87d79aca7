"""FusedSGD: a drop-in for torch.optim.SGD (momentum, dampening, nesterov,
weight decay, maximize), one native call per (device, dtype) group.

With bf16 parameters it holds 12 bytes per parameter: 2 (param) + 2 (grad) +
4 (fp32 master) + 4 (fp32 momentum buffer).
"""

from __future__ import annotations

import torch

from shardkit.optim import _mixed_precision as mp
from shardkit.optim._dtensor import local


class FusedSGD(mp.FusedOptimizer):
    """SGD with the arguments and state_dict of :class:`torch.optim.SGD`.

    ``foreach`` and ``fused`` are accepted for compatibility and ignored;
    ``differentiable`` is not supported.
    """

    def __init__(
        self,
        params,
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError(f"lr: expected a float or a one-element tensor, got shape {tuple(lr.shape)}")
        if float(lr) < 0.0:
            raise ValueError(f"lr: expected >= 0, got {float(lr)}")
        if momentum < 0.0:
            raise ValueError(f"momentum: expected >= 0, got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")
        if differentiable:
            raise ValueError("differentiable: not supported by shardkit's fused SGD")
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        state = self.state[p]
        if mp.is_low_precision(p) and "master_param" not in state:
            state["master_param"] = mp.fp32_master(p)
        return state

    def _fused_step(self, group: dict, bucket: list, grad_scale, found_inf) -> None:
        momentum = float(group["momentum"])
        # Parameters without a momentum buffer yet start it from their
        # gradient (torch's rule): they go in a call of their own.
        fresh = [b for b in bucket if b[2].get("momentum_buffer") is None]
        seasoned = [b for b in bucket if b[2].get("momentum_buffer") is not None]
        for first_step, part in ((True, fresh), (False, seasoned)):
            if not part:
                continue
            states = [s for _, _, s in part]
            if momentum != 0 and first_step:
                if found_inf is not None and found_inf.item() != 0:
                    continue  # a skipped step must not start the buffers either
                for p, _, s in part:
                    s["momentum_buffer"] = mp.fp32_zeros_like(p)
            torch.ops.shardkit.fused_sgd_(
                [local(p) for p, _, _ in part],
                [local(g) for _, g, _ in part],
                [local(s["master_param"]) for s in states if "master_param" in s],
                [local(s["momentum_buffer"]) for s in states] if momentum != 0 else [],
                float(group["lr"]),
                momentum,
                float(group["dampening"]),
                float(group["weight_decay"]),
                bool(group["nesterov"]),
                bool(group["maximize"]),
                first_step and momentum != 0,
                grad_scale,
                found_inf,
            )
