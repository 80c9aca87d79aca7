"""Step time of shardkit.fsdp against torch DDP and FSDP2 (``fully_shard``), side by side.

``python -m benchmarks.bench_fsdp [--steps 6] [--batch 4] [--seq 256] [--hosts 2] [--transports]
[--out benchmarks/out/fsdp.json]``

A GPT of about 33.6M parameters (the ANCHORS.md setting), 2 ranks x 1 thread,
fp32, AdamW. Every rank holds all four setups built from the same weights and
steps them round-robin (interleaved), so noise from other processes hits all
alike; the single-process run on 2 threads uses the same global batch. Also
reported: per-rank parameter + gradient + optimizer bytes against 16 bytes x
parameters / world (fp32 AdamW), i.e. the padding overhead.

``--hosts H`` simulates H hosts (``SHARDKIT_HOST_ID``, world / H ranks each)
and adds shardkit HYBRID against torch HSDP (``fully_shard`` on a 2-D
(replicate, shard) mesh); the other setups then also run over the
simulated hosts (the collectives take the cross-host path).

``--transports`` adds shardkit FULL_SHARD on its ``process_group`` transport
(``torch.distributed`` over gloo: the device code path of ``shard()``, with
no-op streams on CPU) beside the default shared-memory one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from shardkit.bench._common import machine_info
from shardkit.models import GPT, GPTConfig

CONFIG = dict(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_layers=10, num_heads=8, num_kv_heads=4,
              max_position_embeddings=1024, tie_word_embeddings=True)


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**CONFIG))


def _batch(rows: int, seq: int, step: int) -> torch.Tensor:
    return torch.randint(0, CONFIG["vocab_size"], (rows, seq), generator=torch.Generator().manual_seed(step))


def _state_bytes(params, optimizer) -> int:
    total = 0
    for p in params:
        total += p.numel() * p.element_size() * (2 if p.grad is not None else 1)
        for v in optimizer.state.get(p, {}).values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                total += v.numel() * v.element_size()
    return total


def _rank(rank, world, steps, batch, seq, hosts, transports=False):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    from shardkit import comm, fsdp
    from shardkit.models.gpt import Block
    from shardkit.optim import FusedAdamW

    torch.set_num_threads(1)
    comm.init()
    base = _model()
    setups = {}
    strategies = ["FULL_SHARD", "NO_SHARD"] + (["HYBRID"] if hosts > 1 else [])
    for strategy in strategies:
        m = fsdp.shard(copy.deepcopy(base), units=[Block], strategy=strategy)
        setups[f"shardkit {strategy}"] = (m, FusedAdamW(m.parameters(), lr=1e-4))
    if transports:
        m = fsdp.shard(copy.deepcopy(base), units=[Block], strategy="FULL_SHARD", transport="process_group")
        setups["shardkit FULL_SHARD gloo"] = (m, FusedAdamW(m.parameters(), lr=1e-4))
    ddp = DistributedDataParallel(copy.deepcopy(base))
    setups["torch DDP"] = (ddp, torch.optim.AdamW(ddp.parameters(), lr=1e-4, fused=True))
    f2 = copy.deepcopy(base)
    mesh = init_device_mesh("cpu", (world,))
    for block in f2.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(f2, mesh=mesh)
    setups["torch FSDP2"] = (f2, torch.optim.AdamW(f2.parameters(), lr=1e-4))
    if hosts > 1:
        hsdp = copy.deepcopy(base)
        mesh_2d = init_device_mesh("cpu", (hosts, world // hosts), mesh_dim_names=("replicate", "shard"))
        for block in hsdp.layers:
            fully_shard(block, mesh=mesh_2d)
        fully_shard(hsdp, mesh=mesh_2d)
        setups["torch HSDP"] = (hsdp, torch.optim.AdamW(hsdp.parameters(), lr=1e-4))
    del base
    times = {name: [] for name in setups}
    for step in range(steps + 1):  # step 0 warms up
        x = _batch(batch * world, seq, step)[rank * batch : (rank + 1) * batch]
        for name, (model, opt) in setups.items():
            comm.barrier()
            t = time.perf_counter()
            model(x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            comm.barrier()
            if step:
                times[name].append(time.perf_counter() - t)
    # Model-state bytes with gradients present (after a backward, before the step).
    ours, opt = setups["shardkit FULL_SHARD"]
    ours(x, labels=x).loss.backward()
    n_params = sum(p.numel() for p in _model().parameters())
    padded = sum(g.padded_numel for g in fsdp.get_state(ours).groups)
    return {"times": times, "state_bytes": _state_bytes(list(ours.parameters()), opt), "params": n_params,
            "padding": padded / n_params - 1}


def _single(steps, batch, seq, world):
    from shardkit.optim import FusedAdamW

    torch.set_num_threads(2)
    model = _model()
    opt = FusedAdamW(model.parameters(), lr=1e-4)
    times = []
    for step in range(steps + 1):
        x = _batch(batch * world, seq, step)
        t = time.perf_counter()
        model(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        if step:
            times.append(time.perf_counter() - t)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="rows per rank")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--hosts", type=int, default=1, help="simulated hosts; > 1 adds HYBRID vs torch HSDP")
    parser.add_argument("--transports", action="store_true",
                        help="add FULL_SHARD on the process_group transport (gloo) beside shared memory")
    parser.add_argument("--out", default="benchmarks/out/fsdp.json")
    args = parser.parse_args(argv)
    from shardkit.testing import spawn

    world = 2
    if args.hosts < 1 or world % args.hosts:
        parser.error(f"--hosts: expected a divisor of the world size {world}, got {args.hosts}")
    rank_env = (lambda r: {"SHARDKIT_HOST_ID": f"host{r * args.hosts // world}"}) if args.hosts > 1 else None
    single = _single(args.steps, args.batch, args.seq, world)
    ranks = spawn(_rank, world, args=(args.steps, args.batch, args.seq, args.hosts, args.transports),
                  timeout=3000, rank_env=rank_env)
    single += _single(args.steps, args.batch, args.seq, world)  # before and after: drift shows up in both
    med = {name: statistics.median(t) for name, t in ranks[0]["times"].items()}
    med["single process, 2 threads"] = statistics.median(single)
    n = ranks[0]["params"]
    result = {
        "machine": machine_info(), "note": "2 shared cores (other jobs ran at the same time); compare ratios",
        "params": n, "world": world, "batch_per_rank": args.batch, "seq": args.seq,
        "median_step_s": med,
        "hosts": args.hosts,
        "ratios": {"FULL_SHARD / FSDP2": med["shardkit FULL_SHARD"] / med["torch FSDP2"],
                   "NO_SHARD / DDP": med["shardkit NO_SHARD"] / med["torch DDP"],
                   **({"HYBRID / HSDP": med["shardkit HYBRID"] / med["torch HSDP"]} if args.hosts > 1 else {}),
                   **({"FULL_SHARD gloo / shm": med["shardkit FULL_SHARD gloo"] / med["shardkit FULL_SHARD"]}
                      if args.transports else {})},
        "state_bytes_per_rank": ranks[0]["state_bytes"],
        "state_bytes_over_16psi_per_n": ranks[0]["state_bytes"] / (16 * n / world),
        "padding_fraction": ranks[0]["padding"],
    }
    print(f"{'setup':32s} {'median step (s)':>16s}")
    for name, t in med.items():
        print(f"{name:32s} {t:16.3f}")
    for k, v in result["ratios"].items():
        print(f"{k:32s} {v:16.2f}x")
    print(f"{'bytes/rank over 16*params/N':32s} {result['state_bytes_over_16psi_per_n']:16.4f}")
    print(f"{'padding':32s} {result['padding_fraction']:16.2e}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
