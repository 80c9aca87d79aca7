"""shardkit.parallel layouts: step time, model-state bytes per rank, and the pipeline bubble vs its formula.

``python -m benchmarks.bench_parallel [--steps 4] [--out benchmarks/out/parallel.json]``

ON CPU THIS IS A CORRECTNESS HARNESS, NOT A SPEED BENCHMARK: gloo over
loopback, 2 cores shared by all ranks (world 4 is oversubscribed), a small
GPT. What carries over to GPUs is the bytes per rank (exact, and checked
against ``shardkit.memory.parallel_terms``) and the bubble's trend in m and v;
step times only compare layouts measured in the same run.

* Layouts on 2 ranks: tp=2; dp_shard=2 through the plan (torch ``fully_shard``)
  next to ``shardkit.fsdp.shard()`` on the same model and batch (the sharding
  choice of ``shardkit.parallel.parallelize``); pp=2 under each schedule.
  On 4 ranks: tp2 x pp2 and dp_shard2 x tp2.
* Saved activations: the peak of saved-for-backward bytes alive at once on
  each rank during one step (saved-tensor hooks, DTensors by local shard),
  next to ``shardkit.memory.parallel_activations`` per pipeline rank (layouts
  without data parallelism: under ``fully_shard`` the gathered weights that
  autograd saves would count as activations).
* Bubble: each pipeline rank times its stage computations
  (``forward_one_chunk``, ``backward_one_chunk``, ``backward_weight_one_chunk``);
  measured bubble = 1 - busy / step wall time, averaged over ranks, next to
  (p-1)/(m+p-1) (GPipe, 1F1B) or (p-1)/(v*m+p-1) (interleaved, v=2). On CPU
  the loopback send/recv and Python overhead count as idle time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from shardkit.bench._common import machine_info
from shardkit.memory import SavedActivationCounter
from shardkit.models import GPT, GPTConfig

CONFIG = {
    "vocab_size": 2048,
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_layers": 8,
    "num_heads": 4,
    "num_kv_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}
BATCH, SEQ = 8, 128  # rows per data-parallel replica per step


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**CONFIG))


def _batch(rows: int, step: int) -> torch.Tensor:
    return torch.randint(
        0,
        CONFIG["vocab_size"],
        (rows, SEQ),
        generator=torch.Generator().manual_seed(step),
    )


def _local(t):
    return t._local_tensor if hasattr(t, "_local_tensor") else t


def _state_bytes(params, optimizer) -> int:
    total = 0
    for p in params:
        total += _local(p).numel() * p.element_size() * (2 if p.grad is not None else 1)
        for v in optimizer.state.get(p, {}).values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                total += _local(v).numel() * v.element_size()
    return total


def _time_stage_compute(pm, busy: list[float]) -> None:
    for stage in pm.pp_stages or []:
        for name in (
            "forward_one_chunk",
            "backward_one_chunk",
            "backward_weight_one_chunk",
        ):
            method = getattr(stage, name, None)
            if method is None:
                continue

            def timed(*a, _m=method, **k):
                t = time.perf_counter()
                try:
                    return _m(*a, **k)
                finally:
                    busy[0] += time.perf_counter() - t

            setattr(stage, name, timed)


def _run_plan(kw: dict, steps: int) -> dict:
    import torch.distributed as dist
    from shardkit import parallel

    plan = parallel.ParallelPlan(**kw)
    pm = parallel.parallelize(_model(), plan)
    opt = torch.optim.AdamW(list(pm.parameters()), lr=1e-4, foreach=False)
    d = (
        0
        if pm.mesh is None
        else pm.mesh.get_local_rank("dp_replicate") * plan.dp_shard
        + pm.mesh.get_local_rank("dp_shard")
    )
    busy, times, bubbles = [0.0], [], []
    _time_stage_compute(pm, busy)
    state = 0
    saved = None
    for step in range(steps + 2):  # step 0 warms up; the last one only counts saved activations
        ids = _batch(BATCH * plan.dp, step)[d * BATCH : (d + 1) * BATCH]
        if step == steps + 1:
            if plan.dp == 1:  # under fully_shard the gathered weights would count as saves
                with SavedActivationCounter(exclude=list(pm.parameters()), track_peak=True) as c:
                    pm.forward_backward(ids)
                saved = c.peak_bytes
            pm.zero_grad()
            break
        dist.barrier()
        busy[0] = 0.0
        t = time.perf_counter()
        pm.forward_backward(ids)
        wall = time.perf_counter() - t
        if step == steps:
            state = _state_bytes(list(pm.parameters()), opt)
        parallel.clip_grad_norm_(pm, 1.0)
        opt.step()
        pm.zero_grad()
        dist.barrier()
        total = time.perf_counter() - t
        if step:
            times.append(total)
            bubbles.append(1 - busy[0] / wall)
    return {
        "times": times,
        "state_bytes": state,
        "saved_bytes": saved,
        "pp_rank": 0 if pm.mesh is None else pm.mesh.get_local_rank("pp"),
        "bubble": statistics.mean(bubbles) if plan.pp > 1 else None,
    }


def _run_shard(steps: int) -> dict:
    """dp=2 with shardkit.fsdp.shard() (FULL_SHARD, one unit per block) for the sharding comparison."""
    import torch.distributed as dist
    from shardkit import comm, fsdp
    from shardkit.models.gpt import Block

    comm.init()
    model = fsdp.shard(_model(), units=[Block], strategy="FULL_SHARD")
    opt = torch.optim.AdamW(list(model.parameters()), lr=1e-4, foreach=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    times, state = [], 0
    for step in range(steps + 1):
        ids = _batch(BATCH * world, step)[rank * BATCH : (rank + 1) * BATCH]
        dist.barrier()
        t = time.perf_counter()
        model(ids, labels=ids).loss.backward()
        if step == steps:
            state = _state_bytes(list(model.parameters()), opt)
        fsdp.clip_grad_norm_(model, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        if step:
            times.append(time.perf_counter() - t)
    return {"times": times, "state_bytes": state, "bubble": None}


def _rank(rank, world, layouts, steps):
    torch.set_num_threads(1)
    out = {}
    for name, kw in layouts:
        out[name] = _run_shard(steps) if kw is None else _run_plan(kw, steps)
    return out


LAYOUTS_2 = [
    ("shardkit shard() dp=2", None),
    ("plan dp_shard=2 (fully_shard)", {"dp_shard": 2}),
    ("plan tp=2 (SP, loss-parallel)", {"tp": 2}),
]
for _m in (2, 4, 8):
    LAYOUTS_2 += [
        (f"pp=2 {s} m={_m}", {"pp": 2, "pp_schedule": s, "microbatches": _m})
        for s in ("gpipe", "1f1b", "interleaved_1f1b", "zero_bubble")
    ]
LAYOUTS_4 = [
    ("plan tp2 x pp2 1f1b m=4", {"tp": 2, "pp": 2, "microbatches": 4}),
    ("plan dp_shard2 x tp2", {"dp_shard": 2, "tp": 2}),
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/out/parallel.json")
    args = parser.parse_args(argv)
    from shardkit.memory.parallel_activations import rank_activation_bytes
    from shardkit.memory.parallel_terms import parallel_estimate
    from shardkit.memory.spec import DecoderSpec
    from shardkit.parallel import ParallelPlan, bubble_formula
    from shardkit.testing import spawn

    spec = DecoderSpec(
        vocab=CONFIG["vocab_size"],
        hidden=CONFIG["hidden_size"],
        layers=CONFIG["num_layers"],
        heads=CONFIG["num_heads"],
        kv_heads=CONFIG["num_kv_heads"],
        intermediate=CONFIG["intermediate_size"],
    )
    rows = []
    for world, layouts in ((2, LAYOUTS_2), (4, LAYOUTS_4)):
        results = spawn(_rank, world, args=(layouts, args.steps), timeout=1200)
        for name, kw in layouts:
            per_rank = [r[name] for r in results]
            times = [statistics.median(r["times"]) for r in per_rank]
            row = {
                "layout": name,
                "world": world,
                "step_s": max(times),
                "spread_s": max(max(r["times"]) - min(r["times"]) for r in per_rank),
                "state_bytes_max_rank": max(r["state_bytes"] for r in per_rank),
            }
            if kw is not None:
                plan = ParallelPlan(**kw)
                est = parallel_estimate(spec, plan, batch=BATCH, seq_len=SEQ)
                row["state_bytes_estimated"] = (
                    est["params"] + est["grads"] + est["optimizer_state"]
                )
                if plan.dp == 1:  # activation peak per pipeline rank: measured, estimated
                    row["activations_by_pp_rank"] = {
                        r["pp_rank"]: [r["saved_bytes"], rank_activation_bytes(
                            spec, plan, r["pp_rank"], batch=BATCH, seq_len=SEQ)]
                        for r in per_rank
                    }
                    row["activations_max_rank"] = max(r["saved_bytes"] for r in per_rank)
                    row["activations_estimated"] = est["activations"]
                if plan.pp > 1:
                    row["bubble_measured"] = statistics.mean(
                        r["bubble"] for r in per_rank
                    )
                    row["bubble_formula"] = bubble_formula(
                        plan.pp, plan.microbatches, plan.virtual_stages
                    )
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "machine": machine_info(),
        "config": CONFIG,
        "batch_per_replica": BATCH,
        "seq": SEQ,
        "note": "CPU gloo: a correctness harness; times compare layouts within this run only",
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    from shardkit import atomic

    atomic.write_json(args.out, report, indent=1)
    return report


if __name__ == "__main__":
    main()
