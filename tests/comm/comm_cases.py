"""Rank-side checks shared by the comm tests: every collective of shardkit.comm
against torch.distributed gloo and a plain-torch reference on the same inputs.

Each rank builds every rank's input from the same seed, so it can compute the
reference itself; gloo runs the same collective on copies of the same data.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from shardkit import comm

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int32, torch.int64)
OPS = ("sum", "avg", "max", "min")
# Sizes: empty, single, odd, and many 8 KiB slots (the tests use small slots
# so that chunking, pipelining and slot reuse are exercised on small data);
# 5 and 4099 are not divisible by 2, 3 or 4.
SIZES = (0, 1, 5, 4099)
TEST_SLOT_BYTES = 8192

_GLOO_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def inputs(world: int, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """(world, n) inputs of all ranks; small integers so integer sums cannot overflow."""
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return (torch.randn(world, n, generator=g, dtype=torch.float64) * 4).to(dtype)
    return torch.randint(-1000, 1000, (world, n), generator=g, dtype=dtype)


def reference(full: torch.Tensor, op: str) -> torch.Tensor:
    """Reduction over dim 0 in float64 (exact for these inputs), rounded once to the dtype."""
    wide = full.double() if full.is_floating_point() else full
    if op in ("sum", "avg"):
        r = wide.sum(0)
        if op == "avg":
            r = r / full.shape[0]
    elif op == "max":
        r = wide.amax(0)
    else:
        r = wide.amin(0)
    return r.to(full.dtype)


def tolerance(dtype: torch.dtype, world: int) -> tuple[float, float]:
    """(rtol, atol) against the float64 reference: one rounding of the result,
    plus fp32 accumulation for 16-bit types, plus summation order for 32-bit."""
    return {
        torch.float32: (1e-5, 1e-5 * world),
        torch.float64: (1e-12, 1e-12),
        torch.bfloat16: (8e-3, 1e-2),
        torch.float16: (1e-3, 2e-3),
        torch.int32: (0.0, 0.0),
        torch.int64: (0.0, 0.0),
    }[dtype]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, what: str) -> None:
    """Like torch.testing.assert_close (same dtype and shape, |a - e| <= atol + rtol |e|),
    several times cheaper, which matters for the thousands of checks here."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (
        f"{what}: got {actual.dtype}{tuple(actual.shape)}, expected {expected.dtype}{tuple(expected.shape)}"
    )
    if actual.numel() == 0:
        return
    a, e = actual.double(), expected.double()
    err = (a - e).abs() - (atol + rtol * e.abs())
    if not bool((err <= 0).all()):
        i = int(err.argmax())
        raise AssertionError(f"{what}: element {i} is {a[i].item()}, expected {e[i].item()} (rtol {rtol}, atol {atol})")


def equal(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert_close(actual, expected, 0.0, 0.0, what)


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    rtol, atol = tolerance(expected.dtype, 4)
    assert_close(actual, expected, rtol, atol, what)


def loose(actual: torch.Tensor, gloo: torch.Tensor, what: str) -> None:
    """shardkit vs gloo: 16-bit gloo accumulates in 16 bits, so allow its rounding."""
    if actual.dtype in (torch.bfloat16, torch.float16):
        rtol, atol = (4e-2, 8e-2) if actual.dtype == torch.bfloat16 else (8e-3, 2e-2)
    else:
        rtol, atol = tolerance(actual.dtype, 4)
    assert_close(actual, gloo, rtol, atol, f"{what} vs gloo")


def gloo_all_reduce(x: torch.Tensor, op: str, world: int) -> torch.Tensor:
    y = x.clone()
    dist.all_reduce(y, op=_GLOO_OPS["sum" if op == "avg" else op])
    return y / world if op == "avg" else y


def check_all_reduce(rank: int, world: int, sizes=SIZES, dtypes=DTYPES, ops=OPS, algos=("ring", "tree", "auto")) -> int:
    count = 0
    for n in sizes:
        for dtype in dtypes:
            for op in ops:
                if op == "avg" and not dtype.is_floating_point:
                    continue
                full = inputs(world, n, dtype, seed=n * 31 + len(str(dtype)))
                expected = reference(full, op)
                gloo = gloo_all_reduce(full[rank], op, world)
                for algo in algos:
                    what = f"all_reduce(n={n}, {dtype}, {op}, {algo})"
                    t = full[rank].clone()
                    comm.all_reduce(t, op, algo)  # in place
                    close(t, expected, what)
                    loose(t, gloo, what)
                    out = torch.empty_like(t)
                    src = full[rank].clone()
                    comm.all_reduce(src, op, algo, out=out)  # out of place
                    equal(src, full[rank], f"{what}: input modified")
                    close(out, expected, what + " out-of-place")
                    count += 1
    return count


def check_reduce_scatter_all_gather(rank: int, world: int, sizes=SIZES, dtypes=DTYPES) -> int:
    count = 0
    for m in sizes:
        for dtype in dtypes:
            full = inputs(world, world * m, dtype, seed=m + 7)
            for op in OPS:
                if op == "avg" and not dtype.is_floating_point:
                    continue
                out = torch.empty(m, dtype=dtype)
                comm.reduce_scatter(out, full[rank].clone(), op)
                close(out, reference(full, op)[rank * m : (rank + 1) * m], f"reduce_scatter(m={m}, {dtype}, {op})")
                if op != "avg":
                    g = torch.empty(m, dtype=dtype)
                    _reduce_scatter_single(g, full[rank].clone(), op=_GLOO_OPS[op])
                    loose(out, g, f"reduce_scatter(m={m}, {dtype}, {op})")
                count += 1
            shard = full[rank, :m].clone()
            out = torch.empty(world * m, dtype=dtype)
            comm.all_gather(out, shard)
            g = torch.empty(world * m, dtype=dtype)
            _all_gather_single(g, shard)
            equal(out, full[:, :m].reshape(-1), f"all_gather(m={m}, {dtype})")
            equal(out, g, f"all_gather(m={m}, {dtype}) vs gloo")
            # In place: this rank's block of out is the input.
            inplace = torch.zeros(world * m, dtype=dtype)
            inplace[rank * m : (rank + 1) * m] = shard
            comm.all_gather(inplace, inplace[rank * m : (rank + 1) * m])
            equal(inplace, g, f"in-place all_gather(m={m}, {dtype})")
            count += 2
    return count


def check_broadcast_reduce(rank: int, world: int, sizes=SIZES, dtypes=DTYPES) -> int:
    count = 0
    for n in sizes:
        for dtype in dtypes:
            full = inputs(world, n, dtype, seed=n + 99)
            for root in range(world):
                t = full[rank].clone()
                comm.broadcast(t, root)
                g = full[rank].clone()
                dist.broadcast(g, root)
                equal(t, full[root], f"broadcast(n={n}, {dtype}, src={root})")
                equal(t, g, f"broadcast(n={n}, {dtype}) vs gloo")
                op = OPS[(n + root) % 4] if dtype.is_floating_point else ("sum", "max", "min")[(n + root) % 3]
                t = full[rank].clone()
                comm.reduce(t, root, op)
                what = f"reduce(n={n}, {dtype}, {op}, dst={root})"
                if rank == root:
                    close(t, reference(full, op), what)
                else:
                    equal(t, full[rank], f"{what}: non-dst tensor changed")
                count += 2
    return count


def check_async_and_torch_ops(rank: int, world: int) -> int:
    """Async handles complete in order; ReduceOp objects are accepted; barrier passes."""
    full = inputs(world, 4097, torch.float32, seed=5)
    a, b = full[rank].clone(), full[rank].clone()
    w1 = comm.all_reduce(a, dist.ReduceOp.SUM, async_op=True)
    w2 = comm.all_reduce(b, dist.ReduceOp.MAX, async_op=True)
    c = full[rank].clone()
    comm.all_reduce(c, "min")  # issued after the async ones: runs after them
    assert w1.wait() and w2.wait() and w1.is_completed()
    close(a, reference(full, "sum"), "async sum")
    close(b, reference(full, "max"), "async max")
    close(c, reference(full, "min"), "sync after async")
    out = torch.empty(world * 3)
    comm.all_gather(out, torch.full((3,), float(rank)), async_op=True).wait()
    assert out.tolist() == [float(r) for r in range(world) for _ in range(3)]
    comm.barrier(async_op=True).wait()
    comm.barrier()
    return 4


def run_all(rank: int, world: int, timeout: float = 60.0) -> int:
    comm.init(timeout=timeout, slot_bytes=TEST_SLOT_BYTES)
    try:
        return (
            check_all_reduce(rank, world)
            + check_reduce_scatter_all_gather(rank, world)
            + check_broadcast_reduce(rank, world)
            + check_async_and_torch_ops(rank, world)
        )
    finally:
        comm.destroy()
