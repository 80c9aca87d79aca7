"""What FusedAdam/FusedAdamW and FusedSGD share: fp32 state for low-precision
parameters, grouping into one native call per (device, dtype) pair, and a
state_dict that loads both ways with torch.optim.

State of a bf16/fp16 parameter: an fp32 ``master_param`` (created lazily at
its first step, saved in the state_dict) and fp32 moments. The parameter
itself is the master rounded to its dtype after every step.

DTensor parameters (torch FSDP2, tensor parallel) are updated shard by shard
with state laid out like them: see ``_dtensor``.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from shardkit.ops._checks import FLOAT_DTYPES
from shardkit.optim import _dtensor
from shardkit.optim._dtensor import local

#: State entries kept in fp32 whatever the parameter's dtype.
FP32_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "master_param")


def is_low_precision(p: torch.Tensor) -> bool:
    return p.dtype in (torch.bfloat16, torch.float16)


def fp32_zeros_like(p: torch.Tensor) -> torch.Tensor:
    """fp32 zeros laid out like ``p`` (a DTensor's state is a DTensor with its placements)."""
    if _dtensor.is_dtensor(p):
        return _dtensor.fp32_zeros_like(p)
    return torch.zeros(p.shape, dtype=torch.float32, device=p.device)


def fp32_master(p: torch.Tensor) -> torch.Tensor:
    """The fp32 master copy of a bf16/fp16 parameter, laid out like it."""
    if _dtensor.is_dtensor(p):
        return _dtensor.fp32_copy(p)
    return p.detach().float()


def check_param(p: torch.Tensor, where: str, group_mesh=None):
    """Rejects what the fused kernels cannot update in place, before any state exists.

    Returns the root mesh of the group's DTensor parameters so far (``group_mesh``,
    or ``p``'s when it is the first DTensor), None while there is none.
    """
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where}: expected a Tensor, got {type(p).__name__}")
    if p.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}: expected a float32, bfloat16 or float16 parameter, got {p.dtype}")
    if p.layout != torch.strided:
        raise TypeError(f"{where}: expected a dense parameter, got layout {p.layout}")
    if _dtensor.is_dtensor(p):
        group_mesh = _dtensor.check_param(p, where, group_mesh)
    if not local(p).is_contiguous():
        raise ValueError(f"{where}: expected a contiguous parameter, got strides {tuple(local(p).stride())}")
    return group_mesh


def grad_of(p: torch.Tensor, where: str) -> torch.Tensor:
    """``p.grad``, checked (and for a DTensor, laid out like ``p``)."""
    g = p.grad
    if g.is_sparse or g.layout != torch.strided:
        raise TypeError(f"{where}.grad: sparse gradients are not supported by the fused optimizers")
    if _dtensor.is_dtensor(p):
        g = _dtensor.grad_matching(p, g, where)
    elif _dtensor.is_dtensor(g):
        raise ValueError(f"{where}.grad: expected a plain Tensor gradient for a plain parameter, got a DTensor")
    if g.device != p.device:
        raise ValueError(f"{where}.grad: expected a gradient on {p.device}, got one on {g.device}")
    if g.shape != p.shape:
        raise ValueError(f"{where}.grad: expected shape {tuple(p.shape)}, got {tuple(g.shape)}")
    if not local(g).is_contiguous():
        # torch's CPU fused=True silently mis-updates here (see ANCHORS.md); we refuse.
        raise ValueError(
            f"{where}.grad: expected a contiguous gradient, got strides {tuple(g.stride())}; "
            "call .contiguous() on it explicitly if that copy is intended"
        )
    return g


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the fused optimizers: parameter checks, per-step bucketing and
    a state_dict loader that keeps fp32 state in fp32."""

    _step_supports_amp_scaling = True  # GradScaler passes grad_scale/found_inf

    def __init__(self, params, defaults: dict) -> None:
        super().__init__(params, defaults)  # calls add_param_group, which checks

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        mesh = None
        for pi, p in enumerate(self.param_groups[gi]["params"]):
            mesh = check_param(p, f"param_groups[{gi}]['params'][{pi}]", mesh)

    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        """The parameter's state, created or completed for this step."""
        raise NotImplementedError

    def _buckets(self, gi: int, group: dict) -> dict[tuple, list[tuple[torch.Tensor, torch.Tensor, dict]]]:
        """(param, grad, state) of the group's parameters that have a gradient,
        by (device, param dtype, grad dtype): one native call each. DTensors and
        plain tensors share a call (the kernel gets their local tensors)."""
        buckets: dict[tuple, list] = defaultdict(list)
        for pi, p in enumerate(group["params"]):
            if p.grad is not None:
                g = grad_of(p, f"param_groups[{gi}]['params'][{pi}]")
                buckets[(p.device, p.dtype, g.dtype)].append((p, g, self._init_state(p, group)))
        return buckets

    def _fused_step(self, group: dict, bucket: list, grad_scale, found_inf) -> None:
        """One native call updating ``bucket``'s (param, grad, state) triples (through ``local``)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        """Performs one optimization step; ``closure`` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            for (device, _, _), bucket in self._buckets(gi, group).items():
                self._fused_step(group, bucket, *amp_tensors(self, device))
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """Loads state saved by this class or by its torch.optim counterpart, keeping fp32 state in fp32."""
        super().load_state_dict(state_dict)
        restore_fp32_state(self, state_dict)


def amp_tensors(optimizer: torch.optim.Optimizer, device: torch.device):
    """GradScaler's grad_scale and found_inf for ``device`` (None without a scaler)."""
    tensors = []
    for name in ("grad_scale", "found_inf"):
        t = getattr(optimizer, name, None)
        if t is not None:
            if not isinstance(t, torch.Tensor) or t.numel() != 1:
                raise ValueError(f"optimizer.{name}: expected a one-element tensor, got {t!r}")
            if t.device.type == "meta":
                # A meta tensor holds no value: the step would otherwise skip or unscale at random.
                raise ValueError(f"optimizer.{name}: expected a tensor with a value, got one on the meta device")
            t = t.to(device=device, dtype=torch.float32).reshape(1)
        tensors.append(t)
    return tuple(tensors)


def restore_fp32_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """Undoes torch's cast of loaded state to the parameter dtype, and checks the state fits.

    ``torch.optim.Optimizer.load_state_dict`` casts every floating state tensor
    to its parameter's dtype, which would round fp32 masters and moments of a
    bf16 parameter to bf16. Re-read them from ``state_dict`` in fp32 (state
    saved by torch.optim in bf16 is widened), laid out like the parameter (a
    DTensor's state is a DTensor with its mesh and placements). Step counts
    become fp32 0-dim tensors on the parameter's device, where the kernels read
    them. A state tensor of the wrong shape or layout, or a partial state
    (moments without ``step``), raises a ValueError naming the entry.
    """
    saved_ids = [pid for group in state_dict["param_groups"] for pid in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    required = getattr(optimizer, "_required_state_keys", ())
    for pid, p in zip(saved_ids, params):
        saved = state_dict["state"].get(pid)
        if saved is None:
            continue
        where = f"state_dict['state'][{pid!r}]"
        missing = [key for key in required if key not in saved]
        if missing and len(missing) < len(required):
            raise ValueError(f"{where}: missing {missing}; a saved state has all of {list(required)} or none")
        state = optimizer.state[p]
        for key in FP32_STATE_KEYS:
            value = saved.get(key)
            if key == "master_param" and not is_low_precision(p):
                state.pop(key, None)  # an fp32 parameter is its own master
            elif isinstance(value, torch.Tensor):
                state[key] = _loaded_fp32(p, value, f"{where}[{key!r}]")
        if "step" in saved:
            step = saved["step"]
            step = step.item() if isinstance(step, torch.Tensor) else float(step)
            state["step"] = torch.tensor(step, dtype=torch.float32, device=p.device)


def _loaded_fp32(p: torch.Tensor, value: torch.Tensor, where: str) -> torch.Tensor:
    """A saved state tensor as fp32 state of ``p``: its own copy, of ``p``'s shape and layout."""
    if _dtensor.is_dtensor(p):
        return _dtensor.loaded_state(p, value, where)
    if _dtensor.is_dtensor(value):
        raise ValueError(
            f"{where}: a DTensor with placements {tuple(value.placements)} does not fit a plain parameter; "
            "load the full state dict (torch.distributed.checkpoint.state_dict with full_state_dict=True)"
        )
    if value.shape != p.shape:
        raise ValueError(f"{where}: expected shape {tuple(p.shape)} like its parameter, got {tuple(value.shape)}")
    return value.detach().to(device=p.device, dtype=torch.float32, copy=True).contiguous()
