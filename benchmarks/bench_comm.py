"""Collectives benchmark, nccl-tests style: size, time, algbw, busbw for
shardkit.comm against torch.distributed gloo, measured in the same run,
interleaved (each repeat times shardkit then gloo on the same buffers).

    python -m benchmarks.bench_comm                   # 2 ranks, 4 KB .. 256 MB, fp32
    python -m benchmarks.bench_comm --world 4 --max-bytes 64M

busbw follows nccl-tests: all_reduce algbw * 2(p-1)/p; reduce_scatter and
all_gather algbw * (p-1)/p with the full (p * shard) size; broadcast algbw.
A collective's time is the slowest rank's. Writes a JSON file (cases, the
gloo anchor, ratios, machine, versions) and a PNG plot of busbw vs size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast")


def _sizes(lo: int, hi: int) -> list[int]:
    out, s = [], lo
    while s <= hi:
        out.append(s)
        s *= 4
    return out


def _bus_factor(op: str, p: int) -> float:
    return {"all_reduce": 2 * (p - 1) / p, "reduce_scatter": (p - 1) / p, "all_gather": (p - 1) / p}.get(op, 1.0)


def _cases(op: str, nbytes: int, p: int, rank: int):
    """(shardkit fn, gloo fn) moving `nbytes` in total (nccl-tests' size)."""
    from shardkit import comm

    n = nbytes // 4
    m = n // p
    if op == "all_reduce":
        a, b = torch.ones(n), torch.ones(n)
        return (lambda: comm.all_reduce(a, algo="ring"), lambda: dist.all_reduce(b),
                lambda: comm.all_reduce(a, algo="tree"))
    if op == "reduce_scatter":
        inp, out_a, out_b = torch.ones(m * p), torch.empty(m), torch.empty(m)
        rs = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        return (lambda: comm.reduce_scatter(out_a, inp), lambda: rs(out_b, inp), None)
    if op == "all_gather":
        shard, out_a, out_b = torch.ones(m), torch.empty(m * p), torch.empty(m * p)
        ag = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return (lambda: comm.all_gather(out_a, shard), lambda: ag(out_b, shard), None)
    a, b = torch.ones(n), torch.ones(n)
    return (lambda: comm.broadcast(a, 0), lambda: dist.broadcast(b, 0), None)


def _time(fn, iters: int) -> float:
    """Slowest rank's seconds per call over `iters` back-to-back calls."""
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    elapsed = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return elapsed.item()


def _copy_bandwidth() -> float:
    """One core's memcpy bandwidth (GB/s, read + write counted once): the shared-memory limit."""
    src, dst = torch.ones(16 << 20), torch.empty(16 << 20)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return src.numel() * 4 / best / 1e9


def _rank_main(rank: int, world: int, cfg: dict) -> dict:
    from shardkit import comm

    torch.set_num_threads(1)
    comm.init(timeout=600)
    rows = []
    for op in cfg["ops"]:
        for nbytes in _sizes(cfg["min_bytes"], cfg["max_bytes"]):
            ours, gloo, tree = _cases(op, nbytes, world, rank)
            iters = max(1, min(200, int(cfg["target_bytes"] // nbytes)))
            for fn in (ours, gloo) + ((tree,) if tree else ()):
                fn()  # warm-up: page faults, lazy buffers
            t_ours, t_gloo, t_tree = [], [], []
            for _ in range(cfg["repeats"]):
                t_ours.append(_time(ours, iters))
                t_gloo.append(_time(gloo, iters))
                if tree:
                    t_tree.append(_time(tree, iters))
            row = {"op": op, "bytes": nbytes, "iters": iters,
                   "shardkit_s": statistics.median(t_ours), "gloo_s": statistics.median(t_gloo)}
            if tree:
                row["shardkit_tree_s"] = statistics.median(t_tree)
            factor = _bus_factor(op, world)
            for key in ("shardkit", "gloo", "shardkit_tree"):
                if f"{key}_s" in row:
                    row[f"{key}_busbw_gbs"] = nbytes / row[f"{key}_s"] / 1e9 * factor
            row["busbw_ratio"] = row["shardkit_busbw_gbs"] / row["gloo_busbw_gbs"]
            rows.append(row)
            if rank == 0:
                _print_row(row)
    comm.destroy()
    return {"rows": rows, "copy_gbs": _copy_bandwidth()} if rank == 0 else {}


def _print_row(r: dict) -> None:
    tree = f"{r['shardkit_tree_s'] * 1e6:>11.1f}" if "shardkit_tree_s" in r else " " * 11
    print(f"{r['op']:>14} {r['bytes']:>11} {r['shardkit_s'] * 1e6:>11.1f} {r['shardkit_busbw_gbs']:>8.2f} "
          f"{tree} {r['gloo_s'] * 1e6:>11.1f} {r['gloo_busbw_gbs']:>8.2f} {r['busbw_ratio']:>7.2f}x", flush=True)


def _machine() -> dict:
    import shardkit

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "shardkit": shardkit.__version__, "cpu_isa": shardkit._native.C.get_cpu_isa() if shardkit.HAS_NATIVE else None,
            "load_avg_at_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for op in result["config"]["ops"]:
        rows = [r for r in result["rows"] if r["op"] == op]
        if not rows:
            continue
        x = [r["bytes"] for r in rows]
        line, = ax.plot(x, [r["shardkit_busbw_gbs"] for r in rows], marker="o", label=f"shardkit {op}")
        ax.plot(x, [r["gloo_busbw_gbs"] for r in rows], marker="x", linestyle="--", color=line.get_color(),
                label=f"gloo {op}")
    ax.axhline(result["copy_gbs"], color="gray", linestyle=":", label="one-core copy bandwidth")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("busbw (GB/s)")
    ax.set_title(f"CPU collectives, {result['config']['world']} ranks, fp32 (shared 2-core machine)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    from shardkit.commands.comm import parse_bytes
    from shardkit.testing import spawn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--min-bytes", default="4K")
    parser.add_argument("--max-bytes", default="256M")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per size (median taken)")
    parser.add_argument("--target-bytes", default="64M", help="bytes moved per timed batch (sets iterations)")
    parser.add_argument("--out", default="benchmarks/out/comm_{world}.json")
    parser.add_argument("--plot", default="benchmarks/out/comm_busbw_{world}.png")
    args = parser.parse_args(argv)
    cfg = {"world": args.world, "min_bytes": parse_bytes(args.min_bytes), "max_bytes": parse_bytes(args.max_bytes),
           "ops": [o for o in args.ops.split(",") if o], "repeats": args.repeats,
           "target_bytes": parse_bytes(args.target_bytes)}
    unknown = set(cfg["ops"]) - set(OPS)
    if unknown:
        parser.error(f"--ops: unknown {sorted(unknown)}; choose from {OPS}")
    print(f"{'op':>14} {'bytes':>11} {'time us':>11} {'busbw':>8} {'tree us':>11} {'gloo us':>11} {'busbw':>8} {'ratio':>8}")
    result = spawn(_rank_main, args.world, args=(cfg,), timeout=3600)[0]
    result.update(config=cfg, machine=_machine(), anchor="torch.distributed gloo, same run, interleaved",
                  note="busbw in GB/s (1e9); shared machine: other jobs ran on the same 2 cores")
    print(f"one-core copy bandwidth: {result['copy_gbs']:.2f} GB/s")
    out = Path(args.out.format(world=args.world))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    plot = Path(args.plot.format(world=args.world))
    _plot(result, plot)
    print(f"wrote {out} and {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
