"""The CUDA fused optimizer kernels against the plain-torch reference (on CPU copies).

The CUDA build uses --fmad=false and IEEE division/sqrt, so it performs the
reference's fp32 operations in the same order; bias corrections are computed
on the device in double. Tolerance: bitwise for moments and masters is
expected, rtol 1e-6 is allowed for the device's double pow.
"""

import itertools

import pytest
import torch

from shardkit import _native
from shardkit.ops.optim import fused_adam_reference, fused_sgd_reference

pytestmark = [pytest.mark.gpu, pytest.mark.native]

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# 40 tensors exceed one launch's table (36); 17M elements exceed its 256 chunks.
SIZES = {"many": [1, 0, 7, 65536, 65537, 300] * 7, "large": [17_000_001, 3]}


def make_inputs(sizes, param_dtype, grad_dtype, amsgrad, device):
    gen = torch.Generator().manual_seed(0)
    masters = [torch.randn(n, generator=gen) for n in sizes]
    inputs = {
        "params": [m.to(param_dtype) for m in masters],
        "grads": [torch.randn(n, generator=gen).to(grad_dtype) for n in sizes],
        "master_params": [m.clone() for m in masters] if param_dtype != torch.float32 else [],
        "exp_avgs": [torch.randn(n, generator=gen) * 0.1 for n in sizes],
        "exp_avg_sqs": [torch.rand(n, generator=gen) * 0.01 for n in sizes],
        "max_exp_avg_sqs": [torch.rand(n, generator=gen) * 0.01 for n in sizes] if amsgrad else [],
        "state_steps": [torch.tensor(float(i % 5)) for i in range(len(sizes))],
    }
    return {k: [t.to(device) for t in v] for k, v in inputs.items()}


def assert_matches(gpu, cpu):
    for key in gpu:
        for x, y in zip(gpu[key], cpu[key]):
            torch.testing.assert_close(x.cpu(), y, rtol=1e-6, atol=0, msg=lambda m: f"{key}: {m}")


def test_cuda_kernels_are_registered():
    assert _native.HAS_CUDA_KERNELS, _native.CUDA_REASON


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("param_dtype,grad_dtype", list(itertools.product(DTYPES, DTYPES)))
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_cuda_matches_reference(sizes, param_dtype, grad_dtype, amsgrad):
    gpu = make_inputs(sizes, param_dtype, grad_dtype, amsgrad, "cuda")
    cpu = make_inputs(sizes, param_dtype, grad_dtype, amsgrad, "cpu")
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=amsgrad, maximize=False,
                 decoupled_weight_decay=True)
    scale = torch.tensor([256.0])
    torch.ops.shardkit.fused_adam_(**gpu, **hyper, grad_scale=scale.cuda(), found_inf=torch.zeros(1, device="cuda"))
    fused_adam_reference(**cpu, **hyper, grad_scale=scale, found_inf=torch.zeros(1))
    assert_matches(gpu, cpu)
    before = {k: [t.clone() for t in v] for k, v in gpu.items()}
    torch.ops.shardkit.fused_adam_(**gpu, **hyper, found_inf=torch.ones(1, device="cuda"))
    assert_matches(gpu, {k: [t.cpu() for t in v] for k, v in before.items()})


@pytest.mark.parametrize("param_dtype,grad_dtype", list(itertools.product(DTYPES, DTYPES)))
@pytest.mark.parametrize("first_step", [True, False])
def test_sgd_cuda_matches_reference(param_dtype, grad_dtype, first_step):
    sizes = SIZES["many"]
    gpu = make_inputs(sizes, param_dtype, grad_dtype, False, "cuda")
    cpu = make_inputs(sizes, param_dtype, grad_dtype, False, "cpu")
    pick = lambda d: {"params": d["params"], "grads": d["grads"], "master_params": d["master_params"],  # noqa: E731
                      "momentum_buffers": d["exp_avgs"]}
    hyper = dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True, maximize=False,
                 first_step=first_step)
    torch.ops.shardkit.fused_sgd_(**pick(gpu), **hyper)
    fused_sgd_reference(**pick(cpu), **hyper)
    assert_matches(pick(gpu), pick(cpu))


def test_fused_adamw_trains_on_cuda_like_torch():
    from shardkit.optim import FusedAdamW

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 8)).cuda()
    ref = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
    ours, theirs = FusedAdamW(model.parameters(), lr=1e-3), torch.optim.AdamW(ref, lr=1e-3, fused=True)
    for _ in range(20):
        for p, r in zip(model.parameters(), ref):
            g = torch.randn_like(p)
            p.grad, r.grad = g, g.clone()
        ours.step()
        theirs.step()
    for p, r in zip(model.parameters(), ref):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
        assert ours.state[p]["step"].device.type == "cuda"


def test_cpu_cuda_mix_is_rejected():
    p = [torch.zeros(4, device="cuda")]
    g = [torch.zeros(4)]
    with pytest.raises(ValueError, match="grads\\[0\\]"):
        torch.ops.shardkit.fused_adam_(p, g, [], [torch.zeros(4, device="cuda")], [torch.zeros(4, device="cuda")],
                                       [], [torch.zeros((), device="cuda")], 1e-3, 0.9, 0.999, 1e-8, 0.0, False,
                                       False, True)
