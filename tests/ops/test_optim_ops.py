"""The fused optimizer ops against their plain-torch reference kernels.

With FMA contraction off, every native path (scalar, AVX2, AVX-512) performs
the reference's fp32 operations in the same order, so results must be
bitwise equal, for every param/grad dtype pair and awkward sizes.
"""

import itertools
import os
import subprocess
import sys

import pytest
import torch

import shardkit
from shardkit import _native
from shardkit.ops.optim import fused_adam_reference, fused_sgd_reference
from shardkit.testing.optim_inputs import make_adam_inputs

pytestmark = pytest.mark.native

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SIZES = [[0], [1], [7, 64, 1000, 4097, 33], [70_001, 5]]  # 70k+ elements engage both threads
ISAS = [isa for isa in ("scalar", "avx2", "avx512") if _native.C is not None and _native.C.cpu_isa_available(isa)]


@pytest.fixture(params=ISAS)
def isa(request):
    previous = _native.C.get_cpu_isa()
    _native.C.set_cpu_isa(request.param)
    yield request.param
    _native.C.set_cpu_isa(previous)


def clone_inputs(inputs):
    return {k: [t.clone() for t in v] for k, v in inputs.items()}


def assert_bitwise(a, b):
    for key in a:
        for x, y in zip(a[key], b[key]):
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{key}: {m}")


ADAM_OPTIONS = [
    dict(amsgrad=a, maximize=m, decoupled_weight_decay=d, weight_decay=w)
    for a, m, d, w in itertools.product([False, True], [False, True], [False, True], [0.0, 0.1])
]


@pytest.mark.parametrize("param_dtype,grad_dtype", list(itertools.product(DTYPES, DTYPES)))
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_adam_native_matches_reference_bitwise(isa, param_dtype, grad_dtype, sizes):
    for options in ADAM_OPTIONS[:: 3 if len(sizes) > 1 else 1]:
        inputs = make_adam_inputs(sizes, param_dtype, grad_dtype, options["amsgrad"])
        expected = clone_inputs(inputs)
        hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, **options)
        torch.ops.shardkit.fused_adam_(**inputs, **hyper)
        fused_adam_reference(**expected, **hyper)
        assert_bitwise(inputs, expected)


@pytest.mark.parametrize("param_dtype,grad_dtype", list(itertools.product(DTYPES, DTYPES)))
@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("first_step", [True, False])
def test_sgd_native_matches_reference_bitwise(isa, param_dtype, grad_dtype, sizes, first_step):
    for momentum, dampening, nesterov, wd, maximize in [
        (0.0, 0.0, False, 0.0, False), (0.9, 0.0, True, 0.01, False), (0.9, 0.1, False, 0.0, True),
    ]:
        inputs = make_adam_inputs(sizes, param_dtype, grad_dtype, amsgrad=False)
        sgd_inputs = {
            "params": inputs["params"], "grads": inputs["grads"], "master_params": inputs["master_params"],
            "momentum_buffers": inputs["exp_avgs"] if momentum else [],
        }
        expected = clone_inputs(sgd_inputs)
        hyper = dict(lr=0.05, momentum=momentum, dampening=dampening, weight_decay=wd, nesterov=nesterov,
                     maximize=maximize, first_step=first_step)
        torch.ops.shardkit.fused_sgd_(**sgd_inputs, **hyper)
        fused_sgd_reference(**expected, **hyper)
        assert_bitwise(sgd_inputs, expected)


def test_grad_scale_divides_and_found_inf_skips(isa):
    inputs = make_adam_inputs([100, 3], torch.bfloat16, torch.bfloat16, amsgrad=True)
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, amsgrad=True, maximize=False,
                 decoupled_weight_decay=True)
    scale = torch.tensor([1024.0])
    expected = clone_inputs(inputs)
    torch.ops.shardkit.fused_adam_(**inputs, **hyper, grad_scale=scale, found_inf=torch.tensor([0.0]))
    fused_adam_reference(**expected, **hyper, grad_scale=scale, found_inf=torch.tensor([0.0]))
    assert_bitwise(inputs, expected)
    # The scaled gradient equals an unscaled one divided by the (power-of-two) scale.
    unscaled = clone_inputs(make_adam_inputs([100, 3], torch.bfloat16, torch.bfloat16, amsgrad=True))
    unscaled["grads"] = [(g.float() / 1024.0).to(torch.bfloat16) for g in unscaled["grads"]]
    fused_adam_reference(**unscaled, **hyper)
    assert_bitwise({k: v for k, v in inputs.items() if k != "grads"}, unscaled)

    before = clone_inputs(inputs)
    torch.ops.shardkit.fused_adam_(**inputs, **hyper, grad_scale=scale, found_inf=torch.tensor([1.0]))
    assert_bitwise(inputs, before)  # nothing changed, state_steps included


def test_ops_pass_opcheck():
    inputs = make_adam_inputs([33, 5], torch.bfloat16, torch.float32, amsgrad=True)
    hyper = (1e-3, 0.9, 0.999, 1e-8, 0.01, True, False, True)
    torch.library.opcheck(
        torch.ops.shardkit.fused_adam_.default,
        (inputs["params"], inputs["grads"], inputs["master_params"], inputs["exp_avgs"], inputs["exp_avg_sqs"],
         inputs["max_exp_avg_sqs"], inputs["state_steps"], *hyper),
    )
    torch.library.opcheck(
        torch.ops.shardkit.fused_sgd_.default,
        (inputs["params"], inputs["grads"], inputs["master_params"], inputs["exp_avgs"],
         0.1, 0.9, 0.0, 0.0, True, False, False),
    )


def adam_call(**overrides):
    inputs = make_adam_inputs([10, 4], torch.float32, torch.float32, amsgrad=False)
    inputs.update(overrides)
    torch.ops.shardkit.fused_adam_(**inputs, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                                   amsgrad=False, maximize=False, decoupled_weight_decay=True)


@pytest.mark.parametrize(
    "overrides,error,fragment",
    [
        ({"grads": [torch.randn(10)]}, ValueError, "grads: expected 2 tensors"),
        ({"params": [torch.zeros(10, dtype=torch.int32), torch.zeros(4, dtype=torch.int32)]}, TypeError, "params[0]"),
        ({"grads": [torch.randn(10, device="meta"), torch.randn(4)]}, ValueError, "grads[0]: expected a tensor on cpu"),
        ({"grads": [torch.randn(20)[::2], torch.randn(4)]}, ValueError, "grads[0]: expected a contiguous"),
        ({"grads": [torch.randn(10).to_sparse(), torch.randn(4)]}, TypeError, "grads[0]: expected a dense"),
        ({"exp_avgs": [torch.zeros(10, dtype=torch.bfloat16), torch.zeros(4)]}, TypeError, "exp_avgs[0]"),
        ({"exp_avg_sqs": [torch.zeros(11), torch.zeros(4)]}, ValueError, "exp_avg_sqs[0]: expected 10 elements"),
        ({"master_params": [torch.zeros(10), torch.zeros(4)]}, ValueError, "master_params"),
        ({"grads": [torch.randn(10).half(), torch.randn(4)]}, TypeError, "grads[1]"),
    ],
)
def test_bad_input_raises_naming_the_argument(overrides, error, fragment):
    with pytest.raises(error, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        adam_call(**overrides)


def test_env_var_forces_the_kernel_path():
    for isa in ISAS:
        out = subprocess.run(
            [sys.executable, "-c", "import shardkit; from shardkit import _native; print(_native.C.get_cpu_isa())"],
            env={**os.environ, "SHARDKIT_CPU_ISA": isa}, capture_output=True, text=True, check=True,
        )
        assert out.stdout.strip() == isa
    bad = subprocess.run(
        [sys.executable, "-c", "import shardkit; from shardkit import _native; _native.C.get_cpu_isa()"],
        env={**os.environ, "SHARDKIT_CPU_ISA": "sse9"}, capture_output=True, text=True,
    )
    assert bad.returncode != 0 and "cpu isa" in bad.stderr


def test_disable_native_falls_back_to_reference():
    code = (
        "import torch, shardkit\n"
        "assert not shardkit.HAS_NATIVE\n"
        "p=[torch.ones(3)]; g=[torch.ones(3)]; m=[torch.zeros(3)]; v=[torch.zeros(3)]; s=[torch.tensor(0.)]\n"
        "torch.ops.shardkit.fused_adam_(p,g,[],m,v,[],s,0.1,0.9,0.999,1e-8,0.0,False,False,True)\n"
        "print(p[0][0].item(), s[0].item())\n"
    )
    env = {**os.environ, "SHARDKIT_DISABLE_NATIVE": "1"}
    env.pop("SHARDKIT_REQUIRE_NATIVE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    value, step = map(float, out.stdout.split())
    assert step == 1.0 and abs(value - 0.9) < 1e-6  # first Adam step moves by lr
    assert shardkit.HAS_NATIVE  # this process still uses the native core


def test_both_thread_pools_give_the_same_bits():
    """Kernels run on torch's OpenMP threads when the process has them, else on
    shardkit's own pool (SHARDKIT_THREAD_POOL=own): same work split, same bits."""
    code = (
        "import torch, shardkit\n"
        "from shardkit import _native\n"
        "from shardkit.testing.optim_inputs import make_adam_inputs\n"
        "torch.set_num_threads(2)\n"
        "x = make_adam_inputs([100_003, 70_001, 5], torch.bfloat16, torch.float32, amsgrad=True)\n"
        "torch.ops.shardkit.fused_adam_(**x, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1,\n"
        "                               amsgrad=True, maximize=False, decoupled_weight_decay=True)\n"
        "print(_native.C.thread_pool(), sum(t.float().sum().item() for v in x.values() for t in v).hex())\n"
    )
    outputs = {}
    for pool in ("", "own"):
        env = {**os.environ, "SHARDKIT_THREAD_POOL": pool}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        kind, checksum = out.stdout.split()
        outputs[kind] = checksum
    assert set(outputs) == {"openmp", "own"}  # torch's libgomp is found, and the override works
    assert outputs["openmp"] == outputs["own"]
