"""The vectorised reduction kernel of the collectives, on every ISA path this
CPU has, against plain torch: each dtype and op, odd lengths, NaN handling,
fp32 accumulation of 16-bit types, and in-place use."""

import pytest
import torch

from shardkit import _native

pytestmark = pytest.mark.native

OP_CODES = {"sum": 0, "avg": 1, "max": 2, "min": 3}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int32, torch.int64]


def reference(acc: torch.Tensor, local: torch.Tensor, op: str, world: int) -> torch.Tensor:
    wide = local.to(acc.dtype)
    if op in ("sum", "avg"):
        r = acc + wide
        if op == "avg":
            r = r / world
    elif op == "max":
        r = torch.maximum(acc, wide)
    else:
        r = torch.minimum(acc, wide)
    return r.to(local.dtype)


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def isa(request):
    C = _native.C
    if not C.cpu_isa_available(request.param):
        pytest.skip(f"CPU lacks {request.param}")
    previous = C.get_cpu_isa()
    C.set_cpu_isa(request.param)
    yield request.param
    C.set_cpu_isa(previous)


# avg is defined for floating dtypes only.
CASES = [(d, op) for d in DTYPES for op in OP_CODES if op != "avg" or d.is_floating_point]


@pytest.mark.parametrize(("dtype", "op"), CASES, ids=[f"{d}-{op}".replace("torch.", "") for d, op in CASES])
@pytest.mark.parametrize("n", [1, 15, 16, 513, 2049])
def test_matches_torch(isa, dtype, op, n):
    g = torch.Generator().manual_seed(n)
    acc_dtype = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
    if dtype.is_floating_point:
        local = (torch.randn(n, generator=g) * 8).to(dtype)
        acc = (torch.randn(n, generator=g) * 8).to(acc_dtype)
        if n > 3 and op in ("max", "min"):
            local[1] = float("nan")
            acc[2] = float("nan")
    else:
        local = torch.randint(-10**6, 10**6, (n,), generator=g, dtype=dtype)
        acc = torch.randint(-10**6, 10**6, (n,), generator=g, dtype=dtype)
    out = torch.empty_like(local)
    _native.C.comm_reduce(out.data_ptr(), acc.data_ptr(), local.data_ptr(), n, _native.dtype_code(dtype), OP_CODES[op], 3)
    torch.testing.assert_close(out, reference(acc, local, op, 3), rtol=0, atol=0, equal_nan=True)
    # In place: the output is the local operand itself.
    _native.C.comm_reduce(local.data_ptr(), acc.data_ptr(), local.data_ptr(), n, _native.dtype_code(dtype), OP_CODES[op], 3)
    torch.testing.assert_close(local, out, rtol=0, atol=0, equal_nan=True)


def test_bad_op_and_dtype_raise():
    t = torch.ones(4)
    with pytest.raises(ValueError, match="op: expected sum, avg, max or min"):
        _native.C.comm_reduce(t.data_ptr(), t.data_ptr(), t.data_ptr(), 4, 0, 9, 1)
    u = torch.ones(4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="dtype: collectives support"):
        _native.C.comm_reduce(u.data_ptr(), u.data_ptr(), u.data_ptr(), 4, 6, 0, 1)
