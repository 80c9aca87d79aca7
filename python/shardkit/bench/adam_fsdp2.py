"""Fused AdamW step time on torch FSDP2 shards against torch's fused AdamW on the same shards.

    torchrun --nproc-per-node 2 -m benchmarks.bench_adam_fsdp2 [--size 100M] [--repeats 15]

Every rank holds the FSDP2 (``fully_shard``) shards of a GPT-shaped parameter
list of ``--size`` parameters and times its own optimizer step (a step has no
communication), interleaved case by case:
- fp32: ``torch.optim.AdamW(fused=True)`` and shardkit ``FusedAdamW`` on the
  DTensor parameters;
- mixed bf16: torch fused fp32 AdamW on fp32 master shards followed by a copy
  into the bf16 shards (mixed precision with torch today), and shardkit
  ``FusedAdamW`` on the bf16 shards (fp32 masters in its state);
- the same four cases on plain tensors of the local shard shapes, so the
  DTensor ratios sit beside the plain-tensor ones measured in the same run.

Launch it as users launch training: torchrun at its defaults (one OpenMP
thread per rank). Rank 0 prints the table (median and spread over ranks and
repeats) and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.distributed as dist

from shardkit.bench._common import machine_info, time_interleaved, write_json
from shardkit.bench.adam import KW, gpt_shapes, parse_size

ANCHORS = {"fp32": "torch AdamW fused", "bf16 mixed": "torch fused fp32 + bf16 copy"}


def fsdp2_params(shapes, dtype) -> list[torch.nn.Parameter]:
    """FSDP2 shards of ``shapes`` with random gradients (DTensors, Shard(0) over the world)."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    gen = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.params = torch.nn.ParameterList(
        [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(dtype)) for s in shapes])
    fully_shard(module)
    params = list(module.parameters())
    for p in params:
        local = (torch.randn(p._local_tensor.shape, generator=gen) * 1e-3).to(dtype)
        p.grad = DTensor.from_local(local, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
    return params


def plain_like(params) -> list[torch.nn.Parameter]:
    """Plain tensors of the local shard shapes, with gradients."""
    out = []
    for p in params:
        q = torch.nn.Parameter(p._local_tensor.detach().clone())
        q.grad = p.grad._local_tensor.clone()
        out.append(q)
    return out


def torch_mixed_step(low):
    """fp32 fused AdamW on master copies of ``low`` (same layout), then a copy into ``low``."""
    from shardkit.optim._dtensor import fp32_copy, is_dtensor, local

    masters = [torch.nn.Parameter(fp32_copy(p) if is_dtensor(p) else p.detach().float()) for p in low]
    for m, p in zip(masters, low):
        m.grad = p.grad.float()  # the upcast pass is not timed: we favour the anchor
    opt = torch.optim.AdamW(masters, fused=True, **KW)
    # DTensor has no sharding rule for _foreach_copy_; the copy is local, so it runs on the shards.
    low_shards, master_shards = [local(p) for p in low], [local(m) for m in masters]

    @torch.no_grad()
    def step():
        opt.step()
        torch._foreach_copy_(low_shards, master_shards)

    return step


def cases_for(layout: str, shapes) -> dict[str, dict]:
    """The step of every case, by precision; each case gets its own identical parameters."""
    from shardkit.optim import FusedAdamW

    def make(dtype):
        params = fsdp2_params(shapes, dtype)
        return params if layout == "FSDP2 DTensor" else plain_like(params)

    return {
        "fp32": {
            "torch AdamW fused": torch.optim.AdamW(make(torch.float32), fused=True, **KW).step,
            "shardkit FusedAdamW": FusedAdamW(make(torch.float32), **KW).step,
        },
        "bf16 mixed": {
            "torch fused fp32 + bf16 copy": torch_mixed_step(make(torch.bfloat16)),
            "shardkit FusedAdamW": FusedAdamW(make(torch.bfloat16), **KW).step,
        },
    }


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, and the 10th and 90th percentiles."""
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return statistics.median(values), pick(0.1), pick(0.9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_adam_fsdp2", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100M", help="total parameters over all ranks, e.g. 25M, 100M")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per case")
    parser.add_argument("--json", default="benchmarks/out/bench_adam_fsdp2.json", help="where rank 0 writes results")
    args = parser.parse_args(argv)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shapes = gpt_shapes(parse_size(args.size))
    numel = sum(torch.Size(s).numel() for s in shapes)
    rows = []
    for layout in ("FSDP2 DTensor", "plain"):
        for precision, cases in cases_for(layout, shapes).items():
            times = time_interleaved(cases, args.repeats)
            gathered: list = [None] * world
            dist.all_gather_object(gathered, times)
            for name in cases:
                # Every rank's every repeat: a step is as slow as its slowest rank.
                samples = [t for per_rank in gathered for t in per_rank[name]]
                med, lo, hi = spread(samples)
                anchor = statistics.median([t for per_rank in gathered for t in per_rank[ANCHORS[precision]]])
                rows.append({"layout": layout, "precision": precision, "case": name, "ms": med * 1e3,
                             "ms_p10": lo * 1e3, "ms_p90": hi * 1e3, "speedup_vs_anchor": anchor / med,
                             "anchor": ANCHORS[precision]})
    if rank == 0:
        print(f"# {numel / 1e6:.1f}M parameters sharded over {world} ranks, {torch.get_num_threads()} torch "
              f"thread(s) per rank; ms per step: median [p10, p90] over ranks x {args.repeats} repeats")
        print(f"{'layout':<14} {'precision':<11} {'case':<30} {'ms/step':>8} {'p10':>7} {'p90':>7} {'x anchor':>8}")
        for r in rows:
            print(f"{r['layout']:<14} {r['precision']:<11} {r['case']:<30} {r['ms']:8.1f} {r['ms_p10']:7.1f} "
                  f"{r['ms_p90']:7.1f} {r['speedup_vs_anchor']:8.2f}")
        machine = {**machine_info(), "world_size": world}
        print(f"# wrote {write_json(args.json, {'machine': machine, 'params': numel, 'results': rows})}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
