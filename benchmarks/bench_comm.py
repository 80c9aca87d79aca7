"""Collectives benchmark, nccl-tests style: shardkit.comm against torch.distributed gloo, side by side.

    python -m benchmarks.bench_comm                      # 2 ranks, 4 KB .. 256 MB, fp32
    python -m benchmarks.bench_comm --nproc 4 --max-bytes 64M

Launched as users launch training: the script relaunches itself under
``torchrun --nproc-per-node N`` at torchrun's defaults (``OMP_NUM_THREADS=1``
per rank); run directly under torchrun it does the same work.

Every case times batches of back-to-back calls (enough to move about 16 MB,
1 to 20 calls) on random per-rank data, refilled before each batch outside
the timer (sums of a constant buffer grow into infinities and are not what
training reduces). Ranks start each batch together (a barrier) and a batch's
time is its slowest rank's. Cases are interleaved batch by batch, so that
noise hits all of them alike: all_reduce
(ring, tree, and what ``algo="auto"`` picks after ``comm.calibrate()``), reduce_scatter, all_gather,
broadcast and reduce, each beside gloo. Reported: median and the 10th-90th
percentiles over the batches of the time per call, busbw as nccl-tests defines it (all_reduce algbw *
2(p-1)/p; reduce_scatter and all_gather algbw * (p-1)/p of the full p * shard
size; broadcast and reduce algbw), and the ratio to gloo. Writes JSON and a
PNG of busbw against size beside the one-core copy bandwidth, the bound of a
transport where one core moves each byte.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce")
ARGV_ENV = "SHARDKIT_BENCH_COMM_ARGV"


def sizes(lo: int, hi: int) -> list[int]:
    out, s = [], lo
    while s <= hi:
        out.append(s)
        s *= 4
    return out


def bus_factor(op: str, p: int) -> float:
    return {"all_reduce": 2 * (p - 1) / p, "reduce_scatter": (p - 1) / p, "all_gather": (p - 1) / p}.get(op, 1.0)


def cases(op: str, nbytes: int, p: int) -> tuple[list[torch.Tensor], dict]:
    """(buffers refilled before each call, {case name: call}) moving ``nbytes`` in total (nccl-tests' size)."""
    from shardkit import comm

    n = max(p, nbytes // 4 // p * p)  # fp32 elements, a multiple of p
    m = n // p
    if op == "all_reduce":
        a, b, c = (torch.empty(n) for _ in range(3))
        auto = comm.get_group().model.choose(comm.get_group().local_world_size, n * 4)
        return [a, b, c], {"shardkit ring": lambda: comm.all_reduce(a, algo="ring"),
                           "shardkit tree": lambda: comm.all_reduce(b, algo="tree"),
                           f"shardkit auto ({auto})": lambda: comm.all_reduce(c, algo="auto"),
                           "gloo": lambda: dist.all_reduce(a)}
    if op == "reduce_scatter":
        inp, out = torch.empty(n), torch.empty(m)
        return [inp], {"shardkit": lambda: comm.reduce_scatter(out, inp),
                       "gloo": lambda: dist.reduce_scatter_tensor(out, inp)}
    if op == "all_gather":
        shard, out = torch.empty(m), torch.empty(n)
        return [shard], {"shardkit": lambda: comm.all_gather(out, shard),
                         "gloo": lambda: dist.all_gather_into_tensor(out, shard)}
    a = torch.empty(n)
    if op == "broadcast":
        return [a], {"shardkit": lambda: comm.broadcast(a, 0), "gloo": lambda: dist.broadcast(a, 0)}
    return [a], {"shardkit": lambda: comm.reduce(a, 0), "gloo": lambda: dist.reduce(a, 0)}


def time_cases(buffers, calls: dict, batches: int, per_batch: int, gen: torch.Generator) -> dict[str, list[float]]:
    """Seconds per call of every case, the slowest rank's, one sample per batch of ``per_batch``
    back-to-back calls, interleaved batch by batch. The random data are refilled before every batch
    (at most 20 sums in a row grow them by world**20: no overflow at 8 ranks)."""
    source = [torch.randn(buf.numel(), generator=gen) for buf in buffers]
    mine: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(batches + 1):  # the first round warms up: page faults, lazy buffers
        for name, call in calls.items():
            for buf, src in zip(buffers, source):
                buf.copy_(src)
            dist.barrier()
            start = time.perf_counter()
            for _ in range(per_batch):
                call()
            if i:
                mine[name].append((time.perf_counter() - start) / per_batch)
    flat = torch.tensor([t for name in calls for t in mine[name]], dtype=torch.float64)
    dist.all_reduce(flat, op=dist.ReduceOp.MAX)
    return {name: flat[k * batches:(k + 1) * batches].tolist() for k, name in enumerate(calls)}


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"median_s": statistics.median(ordered), "p10_s": pick(0.1), "p90_s": pick(0.9)}


def copy_bandwidth() -> float:
    """One core's copy bandwidth (GB/s, bytes copied per second): the bound of a one-core transport."""
    src, dst = torch.randn(16 << 20), torch.empty(16 << 20)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return src.numel() * 4 / best / 1e9


def rank_main(args) -> None:
    from shardkit import comm
    from shardkit.bench._common import machine_info, write_json

    dist.init_process_group("gloo")
    group = comm.init(timeout=600)
    comm.calibrate(store=False)  # "auto" follows what this run's calibration measured (not a cached model)
    rank, world = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(1000 + rank)
    rows = []
    if rank == 0:
        print(f"# {world} ranks, {torch.get_num_threads()} torch thread(s) each; times in us per call: "
              f"median [p10, p90] over {args.repeats} batches; busbw GB/s")
        print(f"{'op':<15} {'bytes':>10} {'case':<22} {'median':>10} {'p10':>10} {'p90':>10} {'busbw':>7} {'x gloo':>7}")
    for op in args.ops:
        for nbytes in sizes(args.min_bytes, args.max_bytes):
            per_batch = max(1, min(20, args.target_bytes // nbytes))
            buffers, calls = cases(op, nbytes, world)
            times = time_cases(buffers, calls, args.repeats, per_batch, gen)
            moved = buffers[0].numel() * 4 * (world if op == "all_gather" else 1)
            gloo = summary(times["gloo"])["median_s"]
            for name, samples in times.items():
                row = {"op": op, "bytes": moved, "case": name, "batches": args.repeats, "calls_per_batch": per_batch,
                       **summary(samples)}
                row["busbw_gbs"] = moved / row["median_s"] / 1e9 * bus_factor(op, world)
                row["x_gloo"] = gloo / row["median_s"]
                rows.append(row)
                if rank == 0:
                    print(f"{op:<15} {moved:>10} {name:<22} {row['median_s'] * 1e6:>10.1f} {row['p10_s'] * 1e6:>10.1f} "
                          f"{row['p90_s'] * 1e6:>10.1f} {row['busbw_gbs']:>7.2f} {row['x_gloo']:>6.2f}x", flush=True)
            del buffers, calls
    copy_gbs = copy_bandwidth()
    if rank == 0:
        result = {"machine": {**machine_info(), "world_size": world, "load_avg_at_end": os.getloadavg(),
                              "calibrated_model": group.model.to_dict()},
                  "anchor": "torch.distributed gloo, same run, interleaved batch by batch",
                  "copy_gbs": copy_gbs, "rows": rows}
        out = Path(args.out.format(world=world))
        write_json(out, result)
        plot(result, Path(args.plot.format(world=world)))
        print(f"# one-core copy bandwidth {copy_gbs:.2f} GB/s; wrote {out} and {args.plot.format(world=world)}")
    comm.destroy()
    dist.destroy_process_group()


def plot(result: dict, path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shardkit import atomic

    ops = list(dict.fromkeys(r["op"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(ops), figsize=(3.6 * len(ops), 3.8), sharey=True, squeeze=False)
    for ax, op in zip(axes[0], ops):
        rows = [r for r in result["rows"] if r["op"] == op]
        for case in dict.fromkeys(r["case"] for r in rows):
            if case.startswith("shardkit auto"):
                continue  # the same as ring or tree
            mine = [r for r in rows if r["case"] == case]
            ax.plot([r["bytes"] for r in mine], [r["busbw_gbs"] for r in mine], marker="o" if case != "gloo" else "x",
                    linestyle="--" if case == "gloo" else "-", label=case)
        ax.axhline(result["copy_gbs"], color="gray", linestyle=":", label="one-core copy")
        ax.set_xscale("log", base=2)
        ax.set_title(op, fontsize=9)
        ax.set_xlabel("bytes")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("busbw (GB/s)")
    world = result["machine"]["world_size"]
    fig.suptitle(f"CPU collectives, {world} ranks under torchrun, fp32, random data", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic.write_atomic(path, buf.getvalue())


def parse_args(argv):
    from shardkit.commands.comm import parse_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks (torchrun --nproc-per-node)")
    parser.add_argument("--min-bytes", type=parse_bytes, default="4K")
    parser.add_argument("--max-bytes", type=parse_bytes, default="256M")
    parser.add_argument("--ops", type=lambda s: [o for o in s.split(",") if o], default=list(OPS))
    parser.add_argument("--repeats", type=int, default=9, help="timed batches per case and size (median, p10, p90)")
    parser.add_argument("--target-bytes", type=parse_bytes, default="16M",
                        help="bytes per batch, which set its number of back-to-back calls (1 to 20)")
    parser.add_argument("--out", default="benchmarks/out/comm_{world}.json")
    parser.add_argument("--plot", default="benchmarks/comm_busbw_{world}ranks.png")
    args = parser.parse_args(argv)
    unknown = set(args.ops) - set(OPS)
    if unknown:
        parser.error(f"--ops: unknown {sorted(unknown)}; choose from {', '.join(OPS)}")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "LOCAL_RANK" in os.environ:  # under torchrun
        rank_main(parse_args(json.loads(os.environ.get(ARGV_ENV, "null")) or argv))
        return 0
    parse_args(argv)  # bad arguments fail here, before any rank starts
    # The arguments travel in the environment: torchrun's own parser would take
    # "--nproc" (and any prefix of its options) that follow the module name.
    env = dict(os.environ, **{ARGV_ENV: json.dumps(argv)})
    nproc = parse_args(argv).nproc
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "-m", "benchmarks.bench_comm"]
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
