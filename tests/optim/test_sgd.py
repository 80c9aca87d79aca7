"""FusedSGD against torch.optim.SGD, the anchor."""

import copy

import pytest
import torch

from shardkit.optim import FusedSGD

pytestmark = pytest.mark.native

SHAPES = [(64, 33), (33,), (1,), (0,), (300, 129)]


def make_params(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in SHAPES]


def step_all(opt, params, steps, start=0):
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        opt.step()


OPTIONS = [
    dict(momentum=0.0),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.1),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(momentum=0.5, weight_decay=0.1, maximize=True),
    dict(momentum=0.0, weight_decay=0.1, lr=torch.tensor(0.02)),
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_50_steps_match_torch_fp32(options):
    options = {"lr": 0.05, **options}
    a, b = make_params(), make_params()
    step_all(FusedSGD(a, **options), a, 50)
    step_all(torch.optim.SGD(b, **options), b, 50)
    # torch's add_(x, alpha=a) rounds once (an FMA) where we round twice; over
    # 50 momentum steps that is ~1e-6 absolute on values near zero.
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_bf16_holds_12_bytes_per_parameter_and_tracks_fp32():
    low = make_params(torch.bfloat16)
    ref = [torch.nn.Parameter(p.detach().float()) for p in low]
    opt = FusedSGD(low, lr=0.01, momentum=0.9)
    ref_opt = torch.optim.SGD(ref, lr=0.01, momentum=0.9)
    for step in range(20):
        gen = torch.Generator().manual_seed(step)
        for p, r in zip(low, ref):
            p.grad = torch.randn(p.shape, generator=gen).to(torch.bfloat16)
            r.grad = p.grad.float()
        opt.step()
        ref_opt.step()
    numel = sum(p.numel() for p in low)
    held = sum(p.element_size() * p.numel() + p.grad.element_size() * p.grad.numel() for p in low)
    held += sum(t.element_size() * t.numel() for s in opt.state.values() for t in s.values())
    assert held == 12 * numel
    for p, r in zip(low, ref):
        torch.testing.assert_close(opt.state[p]["master_param"], r.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p.float(), r.detach(), rtol=2.0**-8, atol=1e-6)


def test_state_dict_loads_both_ways():
    a, b = make_params(), make_params()
    ours, theirs = FusedSGD(a, lr=0.05, momentum=0.9), torch.optim.SGD(b, lr=0.05, momentum=0.9)
    step_all(ours, a, 5)
    step_all(theirs, b, 5)
    assert ours.state_dict()["param_groups"][0].keys() == theirs.state_dict()["param_groups"][0].keys()
    results = []
    for sd, src, cls in [(theirs.state_dict(), b, FusedSGD), (ours.state_dict(), a, torch.optim.SGD)]:
        params = [torch.nn.Parameter(p.detach().clone()) for p in src]
        opt = cls(params, lr=0.05, momentum=0.9)
        opt.load_state_dict(copy.deepcopy(sd))
        step_all(opt, params, 10, start=5)
        results.append(params)
    for x, y in zip(*results):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_inf_gradient_skips_the_step_and_the_buffer_start():
    p = torch.nn.Parameter(torch.ones(10))
    opt = FusedSGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad = torch.ones(10)
    opt.grad_scale, opt.found_inf = torch.tensor(1.0), torch.tensor(1.0)  # as GradScaler sets them
    opt.step()
    assert torch.equal(p, torch.ones(10)) and opt.state[p].get("momentum_buffer") is None
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    del opt.grad_scale, opt.found_inf
    # torch's first step starts the buffer undamped at the gradient.
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], torch.ones(10))
    torch.testing.assert_close(p.detach(), torch.full((10,), 0.9))


def test_bad_arguments():
    with pytest.raises(ValueError, match="nesterov"):
        FusedSGD(make_params(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        FusedSGD(make_params(), lr=0.1, momentum=-1)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        FusedSGD([torch.zeros(3, dtype=torch.float64, requires_grad=True)], lr=0.1)
