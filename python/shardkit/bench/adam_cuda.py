"""Fused AdamW on a GPU against torch.optim.AdamW(fused=True), with the bandwidth bound.

    shardkit bench adam_cuda [--sizes 100M 1G] [--repeats 20]

fp32 and mixed bf16 (torch: fused fp32 on masters + a copy to bf16). The
bound is 28 bytes per parameter over the device bandwidth measured with a
large device-to-device copy (read + write) in the same run.
"""

from __future__ import annotations

import argparse
import sys

import torch

from shardkit.bench._common import machine_info, median, time_interleaved, write_json
from shardkit.bench.adam import BYTES_PER_PARAM, gpt_shapes, parse_size


def make_params(shapes, dtype):
    params = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(s, device="cuda") * 0.02).to(dtype))
        p.grad = (torch.randn(s, device="cuda") * 1e-3).to(dtype)
        params.append(p)
    return params


def copy_bandwidth(numel: int, repeats: int) -> float:
    src = torch.empty(numel, device="cuda")
    dst = torch.empty_like(src)
    seconds = median(time_interleaved({"copy": lambda: dst.copy_(src)}, repeats, sync=torch.cuda.synchronize)["copy"])
    return 8 * numel / seconds


def bench_size(target: int, repeats: int) -> list[dict]:
    from shardkit.optim import FusedAdamW

    shapes = gpt_shapes(target) if target <= 200e6 else gpt_shapes(100e6) * max(1, round(target / 100e6))
    numel = sum(torch.Size(s).numel() for s in shapes)
    kw = dict(lr=1e-4, weight_decay=0.01)
    rows = []
    for precision in ("fp32", "bf16 mixed"):
        if precision == "fp32":
            theirs = torch.optim.AdamW(make_params(shapes, torch.float32), fused=True, **kw).step
            anchor = "torch AdamW fused"
            ours = FusedAdamW(make_params(shapes, torch.float32), **kw).step
        else:
            low = make_params(shapes, torch.bfloat16)
            masters = [torch.nn.Parameter(p.detach().float()) for p in low]
            for m, p in zip(masters, low):
                m.grad = p.grad.float()
            opt = torch.optim.AdamW(masters, fused=True, **kw)

            @torch.no_grad()
            def theirs():
                opt.step()
                torch._foreach_copy_(low, masters)

            anchor = "torch fused fp32 + bf16 copy"
            ours = FusedAdamW(make_params(shapes, torch.bfloat16), **kw).step
        times = time_interleaved({anchor: theirs, "shardkit FusedAdamW": ours}, repeats, sync=torch.cuda.synchronize)
        bound = BYTES_PER_PARAM * numel / copy_bandwidth(min(numel, 1 << 28), repeats)
        for name, samples in times.items():
            seconds = median(samples)
            rows.append({"params": numel, "precision": precision, "case": name, "ms": seconds * 1e3,
                         "speedup_vs_anchor": median(times[anchor]) / seconds, "pct_of_bound": 100 * bound / seconds})
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardkit bench adam_cuda", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["100M", "1G"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default="benchmarks/out/bench_adam_cuda.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("adam_cuda: needs a CUDA device", file=sys.stderr)
        return 2
    rows = [row for size in args.sizes for row in bench_size(parse_size(size), args.repeats)]
    for r in rows:
        print(f"{r['params'] / 1e6:8.1f}M {r['precision']:<11} {r['case']:<30} {r['ms']:8.2f} ms "
              f"x{r['speedup_vs_anchor']:.2f} {r['pct_of_bound']:.0f}% of bound")
    print(f"# wrote {write_json(args.json, {'machine': machine_info(), 'results': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
