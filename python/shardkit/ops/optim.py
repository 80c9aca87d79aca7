"""Fused optimizer ops: ``torch.ops.shardkit.fused_adam_`` and ``fused_sgd_``.

One call updates a whole list of parameters of one (device, param dtype, grad
dtype) group in a single pass over memory: it reads the gradient (in its own
dtype), the fp32 master and the fp32 moments, and writes the master, the
moments and the low-precision parameter. fp32 parameters are their own master
(pass an empty ``master_params``).

GradScaler protocol: ``grad_scale`` divides the gradients inside the kernel;
a non-zero ``found_inf`` makes the call change nothing at all, including
``state_steps``, which otherwise advance by one.

The plain-torch functions below are the spec: they are the default kernel
(used on devices without a native kernel and with SHARDKIT_DISABLE_NATIVE=1),
and the native kernels are tested bitwise against them.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from shardkit import _native
from shardkit.ops._checks import FLOAT_DTYPES, check_list_length, check_tensor, scalar_flag, single_dtype

ADAM = "shardkit::fused_adam_"
SGD = "shardkit::fused_sgd_"

torch.library.define(
    ADAM,
    "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] master_params, Tensor(c!)[] exp_avgs, "
    "Tensor(d!)[] exp_avg_sqs, Tensor(e!)[] max_exp_avg_sqs, Tensor(f!)[] state_steps, float lr, float beta1, "
    "float beta2, float eps, float weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay, "
    "Tensor? grad_scale=None, Tensor? found_inf=None) -> ()",
)
torch.library.define(
    SGD,
    "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] master_params, Tensor(c!)[] momentum_buffers, "
    "float lr, float momentum, float dampening, float weight_decay, bool nesterov, bool maximize, "
    "bool first_step, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()",
)


def _f32(x: float) -> float:
    """``x`` rounded to fp32, as the native kernels hold their constants."""
    return float(np.float32(x))


def _skipped(found_inf: torch.Tensor | None) -> bool:
    return found_inf is not None and bool(found_inf.item() != 0)


def _unscaled(grad: torch.Tensor, grad_scale: torch.Tensor | None) -> torch.Tensor:
    g = grad.float()  # (numel,) fp32 working copy; bf16/fp16 widen exactly
    if grad_scale is not None:
        g = g * torch.reciprocal(grad_scale.float())
    return g


def fused_adam_reference(
    params, grads, master_params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, eps,
    weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=None, found_inf=None,
) -> None:
    """Plain-torch Adam/AdamW, one tensor at a time, in the native kernels' operation order."""
    if _skipped(found_inf):
        return
    for i, param in enumerate(params):
        step = float(state_steps[i].item()) + 1.0
        step_size = _f32(lr / (1.0 - beta1**step))
        inv_bias2_sqrt = float(np.float32(1.0) / np.float32(math.sqrt(1.0 - beta2**step)))
        master = master_params[i] if len(master_params) else param
        g = _unscaled(grads[i], grad_scale)
        if maximize:
            g = 0.0 - g
        if decoupled_weight_decay:
            master.mul_(_f32(1.0 - lr * weight_decay))
        elif weight_decay != 0:
            g = g + master * _f32(weight_decay)
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        exp_avg.copy_(exp_avg * _f32(beta1) + g * _f32(1.0 - beta1))
        exp_avg_sq.copy_(exp_avg_sq * _f32(beta2) + g * g * _f32(1.0 - beta2))
        second = exp_avg_sq
        if amsgrad:
            torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            second = max_exp_avg_sqs[i]
        # sqrt in fp64, then rounded: torch's fp32 CPU sqrt is not correctly
        # rounded (off by an ulp for ~15% of inputs in torch 2.13); the native
        # kernels' sqrt instruction is, and this gives the same fp32 result.
        denom = second.double().sqrt().float() * inv_bias2_sqrt + _f32(eps)
        master.copy_(master - step_size * exp_avg / denom)
        if master is not param:
            param.copy_(master)  # round to bf16/fp16, nearest-even
        state_steps[i].add_(1)


def fused_sgd_reference(
    params, grads, master_params, momentum_buffers, lr, momentum, dampening, weight_decay, nesterov, maximize,
    first_step, grad_scale=None, found_inf=None,
) -> None:
    """Plain-torch SGD with momentum (torch.optim.SGD's rule), in the native operation order."""
    if _skipped(found_inf):
        return
    for i, param in enumerate(params):
        master = master_params[i] if len(master_params) else param
        g = _unscaled(grads[i], grad_scale)
        if maximize:
            g = 0.0 - g
        if weight_decay != 0:
            g = g + master * _f32(weight_decay)
        if momentum != 0:
            buf = momentum_buffers[i]
            # torch starts the buffer as the first gradient, undamped.
            buf.copy_(g if first_step else buf * _f32(momentum) + g * _f32(1.0 - dampening))
            g = g + buf * _f32(momentum) if nesterov else buf
        master.copy_(master - _f32(lr) * g)
        if master is not param:
            param.copy_(master)


def _check_group(params, grads, master_params, states: dict[str, list], *, state_dtype=torch.float32):
    """Validates one fused call; returns (device, param dtype, grad dtype)."""
    n = len(params)
    check_list_length(grads, "grads", n)
    if n == 0:
        return None, None, None
    device = params[0].device
    for i in range(n):
        check_tensor(params[i], f"params[{i}]", device=device, dtypes=FLOAT_DTYPES)
        numel = params[i].numel()
        check_tensor(grads[i], f"grads[{i}]", device=device, dtypes=FLOAT_DTYPES, numel=numel)
        if grads[i].shape != params[i].shape:
            raise ValueError(f"grads[{i}]: expected shape {tuple(params[i].shape)}, got {tuple(grads[i].shape)}")
        for name, tensors in states.items():
            check_tensor(tensors[i], f"{name}[{i}]", device=device, dtypes=(state_dtype,), numel=numel)
    param_dtype = single_dtype(params, "params")
    grad_dtype = single_dtype(grads, "grads")
    if param_dtype == torch.float32:
        if len(master_params):
            raise ValueError("master_params: float32 params are their own master; pass an empty list")
    else:
        check_list_length(master_params, "master_params", n)
        for i in range(n):
            check_tensor(master_params[i], f"master_params[{i}]", device=device, dtypes=(torch.float32,),
                         numel=params[i].numel())
    return device, param_dtype, grad_dtype


def _ptrs(tensors) -> list[int]:
    return [t.data_ptr() for t in tensors]


def _check_adam(
    params, grads, master_params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, eps,
    weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=None, found_inf=None,
):
    n = len(params)
    for name, tensors in (("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs), ("state_steps", state_steps)):
        check_list_length(tensors, name, n)
    states = {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    if amsgrad:
        check_list_length(max_exp_avg_sqs, "max_exp_avg_sqs", n)
        states["max_exp_avg_sqs"] = max_exp_avg_sqs
    device, param_dtype, grad_dtype = _check_group(params, grads, master_params, states)
    for i, step in enumerate(state_steps):
        check_tensor(step, f"state_steps[{i}]", device=device, dtypes=(torch.float32,), numel=1)
    return device, param_dtype, grad_dtype


def _check_sgd(params, grads, master_params, momentum_buffers, lr, momentum, *args, **kwargs):
    states = {}
    if momentum != 0:
        check_list_length(momentum_buffers, "momentum_buffers", len(params))
        states["momentum_buffers"] = momentum_buffers
    return _check_group(params, grads, master_params, states)


def _fused_adam_fake(*args, **kwargs) -> None:
    # Metadata checks work on fake tensors too, so a traced or meta-device
    # call rejects what the real kernel would.
    _check_adam(*args, **kwargs)


def _fused_sgd_fake(*args, **kwargs) -> None:
    _check_sgd(*args, **kwargs)


def _fused_adam_default(*args, **kwargs) -> None:
    _check_adam(*args, **kwargs)
    fused_adam_reference(*args, **kwargs)


def _fused_sgd_default(*args, **kwargs) -> None:
    _check_sgd(*args, **kwargs)
    fused_sgd_reference(*args, **kwargs)


torch.library.register_fake(ADAM, _fused_adam_fake)
torch.library.register_fake(SGD, _fused_sgd_fake)
# The checked reference is the default kernel: the fallback on devices
# without a native kernel, and on the CPU without shardkit._C.
torch.library.impl(ADAM, "default", _fused_adam_default)
torch.library.impl(SGD, "default", _fused_sgd_default)


def _launch_context(device: torch.device):
    """(last native argument, context): thread count on the CPU, stream on CUDA."""
    if device.type == "cuda":
        return torch.cuda.current_stream(device).cuda_stream, torch.cuda.device(device)
    return torch.get_num_threads(), contextlib.nullcontext()


def _native_module(device: torch.device):
    return _native.C_CUDA if device.type == "cuda" else _native.C


def _fused_adam_native(
    params, grads, master_params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, eps,
    weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=None, found_inf=None,
) -> None:
    device, param_dtype, grad_dtype = _check_adam(
        params, grads, master_params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, eps,
        weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale, found_inf,
    )
    if device is None:
        return
    last, context = _launch_context(device)
    with context:
        _native_module(device).adam_step(
            _ptrs(params), _ptrs(grads), _ptrs(master_params), _ptrs(exp_avgs), _ptrs(exp_avg_sqs),
            _ptrs(max_exp_avg_sqs) if amsgrad else [], _ptrs(state_steps), [p.numel() for p in params],
            _native.dtype_code(param_dtype), _native.dtype_code(grad_dtype), lr, beta1, beta2, eps, weight_decay,
            amsgrad, maximize, decoupled_weight_decay, scalar_flag(grad_scale, "grad_scale", device),
            scalar_flag(found_inf, "found_inf", device), last,
        )


def _fused_sgd_native(
    params, grads, master_params, momentum_buffers, lr, momentum, dampening, weight_decay, nesterov, maximize,
    first_step, grad_scale=None, found_inf=None,
) -> None:
    device, param_dtype, grad_dtype = _check_sgd(params, grads, master_params, momentum_buffers, lr, momentum)
    if device is None:
        return
    last, context = _launch_context(device)
    with context:
        _native_module(device).sgd_step(
            _ptrs(params), _ptrs(grads), _ptrs(master_params), _ptrs(momentum_buffers) if momentum != 0 else [],
            [p.numel() for p in params], _native.dtype_code(param_dtype), _native.dtype_code(grad_dtype), lr,
            momentum, dampening, weight_decay, nesterov, maximize, first_step,
            scalar_flag(grad_scale, "grad_scale", device), scalar_flag(found_inf, "found_inf", device), last,
        )


for _device, _module in (("cpu", _native.C), ("cuda", _native.C_CUDA)):
    if _module is not None:
        torch.library.register_kernel(ADAM, _device, _fused_adam_native)
        torch.library.register_kernel(SGD, _device, _fused_sgd_native)
