"""Random inputs for the fused optimizer ops, shared by the CPU and GPU tests."""

from __future__ import annotations

import torch


def make_adam_inputs(sizes, param_dtype, grad_dtype, amsgrad, seed=0, steps=3.0, device="cpu"):
    """Lists for ``torch.ops.shardkit.fused_adam_``: one tensor of each size, reproducible from ``seed``.

    fp32 masters are drawn first and the parameters are their rounded copies,
    as in a real mixed-precision run; ``state_steps`` differ per tensor.
    """
    gen = torch.Generator().manual_seed(seed)
    masters = [torch.randn(n, generator=gen) for n in sizes]
    inputs = {
        "params": [m.to(param_dtype) for m in masters],
        "grads": [torch.randn(n, generator=gen).to(grad_dtype) for n in sizes],
        "master_params": [m.clone() for m in masters] if param_dtype != torch.float32 else [],
        "exp_avgs": [torch.randn(n, generator=gen) * 0.1 for n in sizes],
        "exp_avg_sqs": [torch.rand(n, generator=gen) * 0.01 for n in sizes],
        "max_exp_avg_sqs": [torch.rand(n, generator=gen) * 0.01 for n in sizes] if amsgrad else [],
        "state_steps": [torch.tensor(steps + i % 5) for i in range(len(sizes))],
    }
    return {k: [t.to(device) for t in v] for k, v in inputs.items()}
