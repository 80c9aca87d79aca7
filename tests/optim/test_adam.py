"""FusedAdam/FusedAdamW against torch.optim.Adam/AdamW, the anchor."""

import copy
import itertools

import pytest
import torch

from shardkit.optim import FusedAdam, FusedAdamW

pytestmark = pytest.mark.native

SHAPES = [(64, 33), (33,), (1,), (0,), (7, 5, 3), (300, 129)]


def make_params(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in SHAPES]


def grads_for(params, step, dtype=None):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=gen).to(dtype or p.dtype) for p in params]


def run(optimizer_cls, params, steps, scheduler=None, groups=None, **kwargs):
    opt = optimizer_cls(groups(params) if groups else params, **kwargs)
    sched = scheduler(opt) if scheduler else None
    for step in range(steps):
        for p, g in zip(params, grads_for(params, step)):
            p.grad = g
        opt.step()
        if sched:
            sched.step()
    return opt


OPTIONS = [
    dict(amsgrad=a, maximize=m, weight_decay=w, lr=lr)
    for a, m, w, lr in itertools.product([False, True], [False, True], [0.0, 0.05], [1e-2, torch.tensor(3e-3)])
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("ours,theirs", [(FusedAdamW, torch.optim.AdamW), (FusedAdam, torch.optim.Adam)])
def test_50_steps_match_torch_fp32(ours, theirs, options):
    a, b = make_params(), make_params()
    run(ours, a, 50, **options)
    run(theirs, b, 50, **options)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_param_groups_and_lr_scheduler_match_torch():
    def groups(params):
        return [{"params": params[:3], "lr": 1e-2}, {"params": params[3:], "lr": 5e-3, "weight_decay": 0.1}]

    def cosine(opt):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)

    a, b = make_params(), make_params()
    oa = run(FusedAdamW, a, 20, scheduler=cosine, groups=groups)
    ob = run(torch.optim.AdamW, b, 20, scheduler=cosine, groups=groups)
    assert [g["lr"] for g in oa.param_groups] == [g["lr"] for g in ob.param_groups]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grad_dtype", ["same", torch.float32])
def test_mixed_precision_tracks_the_fp32_run(dtype, grad_dtype):
    """bf16/fp16 params with fp32 masters follow an fp32 AdamW run fed the same gradients.

    Tolerance: the fp32 master matches the fp32 run to fp32 rounding
    (rtol 1e-5); the low-precision parameter is that master rounded, so it is
    within half an ulp of its dtype of the fp32 run (rtol 2^-8 for bf16,
    2^-11 for fp16).
    """
    low = make_params(dtype)
    if grad_dtype != "same":
        for p in low:
            p.grad_dtype = grad_dtype  # torch >= 2.10 checks .grad's dtype against this
    ref = [torch.nn.Parameter(p.detach().float()) for p in low]
    opt = FusedAdamW(low, lr=1e-3, weight_decay=0.01)
    ref_opt = torch.optim.AdamW(ref, lr=1e-3, weight_decay=0.01)
    for step in range(30):
        grads = grads_for(low, step, None if grad_dtype == "same" else grad_dtype)
        for p, r, g in zip(low, ref, grads):
            p.grad = g
            r.grad = g.float()
        opt.step()
        ref_opt.step()
    half_ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    for p, r in zip(low, ref):
        torch.testing.assert_close(opt.state[p]["master_param"], r.detach(), rtol=1e-5, atol=1e-6)
        assert p.dtype == dtype
        torch.testing.assert_close(p.float(), r.detach(), rtol=half_ulp, atol=1e-6)
        assert opt.state[p]["exp_avg"].dtype == torch.float32


def test_small_updates_survive_in_bf16_thanks_to_the_master():
    # lr 1e-5 moves a weight of 1.0 by less than half a bf16 ulp (2^-8):
    # a plain bf16 AdamW loses every update, the fp32 master accumulates them.
    p = torch.nn.Parameter(torch.ones(1000, dtype=torch.bfloat16))
    naive = torch.nn.Parameter(torch.ones(1000, dtype=torch.bfloat16))
    ours, theirs = FusedAdamW([p], lr=1e-5, weight_decay=0.0), torch.optim.AdamW([naive], lr=1e-5, weight_decay=0.0)
    for _ in range(400):
        p.grad = torch.ones_like(p)
        naive.grad = torch.ones_like(naive)
        ours.step()
        theirs.step()
    assert torch.all(naive == 1.0)
    assert torch.all(p < 1.0)  # 400 * 1e-5 = 4e-3 > one ulp
    torch.testing.assert_close(ours.state[p]["master_param"], torch.full((1000,), 1.0 - 4e-3), rtol=0, atol=1e-5)


def test_state_dict_has_torch_keys_and_loads_both_ways():
    a, b = make_params(), make_params()
    ours = run(FusedAdamW, a, 5, amsgrad=True)
    theirs = run(torch.optim.AdamW, b, 5, amsgrad=True)
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert sd_ours["param_groups"][0].keys() == sd_theirs["param_groups"][0].keys()
    for pid in sd_theirs["state"]:
        assert sd_ours["state"][pid].keys() == sd_theirs["state"][pid].keys()
        assert sd_ours["state"][pid]["step"].dtype == torch.float32 and sd_ours["state"][pid]["step"].item() == 5

    # torch -> ours and ours -> torch, then 10 more steps each: all four runs agree.
    runs = []
    for src_sd, src_params, dst_cls in [(sd_theirs, b, FusedAdamW), (sd_ours, a, torch.optim.AdamW),
                                        (sd_ours, a, FusedAdamW), (sd_theirs, b, torch.optim.AdamW)]:
        params = [torch.nn.Parameter(p.detach().clone()) for p in src_params]
        opt = dst_cls(params, amsgrad=True)
        opt.load_state_dict(copy.deepcopy(src_sd))
        for step in range(5, 15):
            for p, g in zip(params, grads_for(params, step)):
                p.grad = g
            opt.step()
        runs.append(params)
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_bf16_state_dict_keeps_fp32_master_through_a_round_trip():
    params = make_params(torch.bfloat16)
    opt = run(FusedAdamW, params, 3)
    sd = copy.deepcopy(opt.state_dict())
    fresh = FusedAdamW([torch.nn.Parameter(p.detach().clone()) for p in params])
    fresh.load_state_dict(sd)
    for pid, p in enumerate(fresh.param_groups[0]["params"]):
        state = fresh.state[p]
        for key in ("master_param", "exp_avg", "exp_avg_sq"):
            assert state[key].dtype == torch.float32
            torch.testing.assert_close(state[key], sd["state"][pid][key], rtol=0, atol=0)
    # torch.optim.AdamW loads it too (casting to bf16, ignoring the master).
    theirs = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params])
    theirs.load_state_dict(copy.deepcopy(sd))
    # and a torch bf16 state (no master) loads into ours: the master starts from the param.
    torch_params = make_params(torch.bfloat16)
    torch_opt = run(torch.optim.AdamW, torch_params, 3)
    ours = FusedAdamW(torch_params)
    ours.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    for p, g in zip(torch_params, grads_for(torch_params, 3)):
        p.grad = g
    ours.step()
    for p in torch_params:
        assert ours.state[p]["exp_avg"].dtype == torch.float32 and ours.state[p]["step"].item() == 4


def test_inf_gradient_skips_the_step_with_grad_scaler():
    model = torch.nn.Linear(16, 4)
    ref = copy.deepcopy(model)
    ours = FusedAdamW(model.parameters(), lr=1e-2)
    theirs = torch.optim.AdamW(ref.parameters(), lr=1e-2, fused=True)
    scaler_a = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler_b = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x = torch.randn(8, 16)
    for step in range(6):
        for m, opt, scaler in [(model, ours, scaler_a), (ref, theirs, scaler_b)]:
            opt.zero_grad()
            loss = m(x).square().mean()
            scaler.scale(loss).backward()
            if step == 2:
                m.weight.grad[0, 0] = float("inf")
            before = [p.detach().clone() for p in m.parameters()]
            scaler.step(opt)
            scaler.update()
            if step == 2:
                for b, p in zip(before, m.parameters()):
                    assert torch.equal(b, p)
    assert scaler_a.get_scale() == scaler_b.get_scale() == 2.0**9
    for p in model.parameters():
        assert ours.state[p]["step"].item() == 5  # the skipped step did not count
    for x_, y_ in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(x_, y_, rtol=1e-5, atol=1e-6)


def test_zero_grad_and_params_without_grad():
    params = make_params()
    opt = FusedAdamW(params)
    params[0].grad = torch.ones_like(params[0])
    before = params[1].detach().clone()
    opt.step()
    assert torch.equal(params[1], before) and params[1] not in opt.state
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match="int64"):
        FusedAdamW([torch.nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)])
    with pytest.raises(ValueError, match="contiguous parameter"):
        FusedAdamW([torch.nn.Parameter(torch.zeros(4, 3).t())])
    with pytest.raises(ValueError, match="betas\\[1\\]"):
        FusedAdamW(make_params(), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="capturable"):
        FusedAdamW(make_params(), capturable=True)

    p = torch.nn.Parameter(torch.zeros(4, 3))
    opt = FusedAdamW([p])
    p.grad = torch.zeros(3, 4).t()  # transposed: torch's CPU fused=True silently mis-updates this
    with pytest.raises(ValueError, match="contiguous gradient"):
        opt.step()
    p.grad = torch.zeros(4, 3).to_sparse()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()
    assert not opt.state  # nothing was half-updated


def _trained_state():
    params = make_params()
    return params, run(FusedAdamW, params, 2).state_dict()


def test_loading_state_of_the_wrong_shape_raises_naming_the_entry():
    params, sd = _trained_state()
    sd["state"][0]["exp_avg"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"\['state'\]\[0\]\['exp_avg'\]: expected shape \(64, 33\)"):
        FusedAdamW(params).load_state_dict(sd)


def test_loading_state_without_step_raises_instead_of_key_error():
    params, sd = _trained_state()
    del sd["state"][1]["step"]
    with pytest.raises(ValueError, match=r"\['state'\]\[1\]: missing \['step'\]"):
        FusedAdamW(params).load_state_dict(sd)


def test_meta_grad_scale_raises_instead_of_a_silent_no_op():
    params = make_params()
    opt = FusedAdamW(params)
    for p, g in zip(params, grads_for(params, 0)):
        p.grad = g
    opt.grad_scale = torch.ones((), device="meta")
    with pytest.raises(ValueError, match="optimizer.grad_scale: .* meta device"):
        opt.step()
