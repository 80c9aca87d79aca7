"""Step time of torch FSDP2 and DDP on the ``shardkit`` torch.distributed backend against gloo, side by side.

``python -m benchmarks.bench_backend [--steps 6] [--batch 4] [--seq 256] [--nproc 2] [--out benchmarks/out/backend.json]``

Relaunches itself under ``torchrun --nproc-per-node N`` at torchrun's
defaults (so OMP_NUM_THREADS=1 per rank, as torchrun sets it); run directly
under torchrun it does the same work. The default group is
``init_process_group("shardkit")``; a gloo group over the same ranks carries
the gloo setups (``DDP(process_group=gloo)``, ``fully_shard`` on
``DeviceMesh.from_group(gloo)``). Same model for all four: the 33.6M GPT of
bench_fsdp, fp32, AdamW, random tokens. Every rank holds all four setups,
built from the same weights, and steps them round-robin (interleaved) so
that noise from other processes hits all alike. Reported: median and spread
(min, max) of the step times after one warm-up step, and the gloo / shardkit
ratios.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.bench_fsdp import _batch, _model


def _setups(world: int):
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    gloo = dist.new_group(backend="gloo")
    base = _model()
    setups = {}
    for name, group in (("shardkit", None), ("gloo", gloo)):
        ddp = DistributedDataParallel(copy.deepcopy(base), process_group=group)
        setups[f"DDP {name}"] = (ddp, torch.optim.AdamW(ddp.parameters(), lr=1e-4))
    for name, mesh in (("shardkit", init_device_mesh("cpu", (world,))), ("gloo", DeviceMesh.from_group(gloo, "cpu"))):
        f2 = copy.deepcopy(base)
        for block in f2.layers:
            fully_shard(block, mesh=mesh)
        fully_shard(f2, mesh=mesh)
        setups[f"FSDP2 {name}"] = (f2, torch.optim.AdamW(f2.parameters(), lr=1e-4))
    return setups


def _run(args) -> None:
    import torch.distributed as dist

    import shardkit  # noqa: F401  (registers the backend)
    from shardkit.bench._common import machine_info

    dist.init_process_group("shardkit", timeout=datetime.timedelta(seconds=600))
    rank, world = dist.get_rank(), dist.get_world_size()
    setups = _setups(world)
    times = {name: [] for name in setups}
    losses = {name: [] for name in setups}
    for step in range(args.steps + 1):  # step 0 warms up
        x = _batch(args.batch * world, args.seq, step)[rank * args.batch : (rank + 1) * args.batch]
        for name, (model, opt) in setups.items():
            dist.barrier()
            t = time.perf_counter()
            loss = model(x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dist.barrier()
            losses[name].append(loss.item())
            if step:
                times[name].append(time.perf_counter() - t)
    if rank == 0:
        _report(args, world, times, losses, machine_info())
    dist.destroy_process_group()


def _report(args, world, times, losses, machine) -> None:
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "machine": machine,
        "note": "2 shared cores (other jobs may run at the same time); compare ratios",
        "launcher": f"torchrun --nproc-per-node {world} (defaults; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})",
        "torch": torch.__version__, "params": sum(p.numel() for p in _model().parameters()),
        "world": world, "batch_per_rank": args.batch, "seq": args.seq, "steps": args.steps,
        "median_step_s": med,
        "min_step_s": {n: min(t) for n, t in times.items()},
        "max_step_s": {n: max(t) for n, t in times.items()},
        "step_times_s": times,
        "speedup_gloo_over_shardkit": {k: med[f"{k} gloo"] / med[f"{k} shardkit"] for k in ("DDP", "FSDP2")},
        "losses_equal": {k: losses[f"{k} gloo"] == losses[f"{k} shardkit"] for k in ("DDP", "FSDP2")},
    }
    print(f"{'setup':16s} {'median (s)':>11s} {'min':>8s} {'max':>8s}")
    for name in med:
        print(f"{name:16s} {med[name]:11.3f} {result['min_step_s'][name]:8.3f} {result['max_step_s'][name]:8.3f}")
    for k, v in result["speedup_gloo_over_shardkit"].items():
        print(f"{k + ' gloo / shardkit':28s} {v:6.2f}x   losses equal: {result['losses_equal'][k]}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4, help="rows per rank")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--nproc", type=int, default=2, help="ranks (torchrun --nproc-per-node)")
    parser.add_argument("--out", default="benchmarks/out/backend.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.nproc < 2:
        parser.error("--steps must be >= 1 and --nproc >= 2")
    if "RANK" in os.environ:
        _run(args)
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc),
           "-m", "benchmarks.bench_backend", *(argv if argv is not None else sys.argv[1:])]
    raise SystemExit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
