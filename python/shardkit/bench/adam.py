"""Fused AdamW step time against torch and DeepSpeed, with the memory-bandwidth bound.

    shardkit bench adam [--sizes 25M 100M] [--repeats 15] [--threads 2]
    python -m benchmarks.bench_adam   (the same)

Cases, measured interleaved in one run on a GPT-shaped parameter list:
- fp32: torch.optim.AdamW foreach, fused=True, DeepSpeedCPUAdam (if
  installed), shardkit FusedAdamW;
- mixed bf16 (bf16 params and grads, fp32 master and moments): torch fused
  fp32 on the master followed by a copy to bf16 (how mixed precision is done
  with torch today), DeepSpeedCPUAdam (if installed), shardkit FusedAdamW.

The bound: the step's bytes moved divided by this machine's bandwidth,
measured with the same access pattern (4 fp32 reads, 3 fp32 writes per
element). Both layouts move 28 bytes per parameter:
fp32 reads p, g, m, v (16 B) and writes p, m, v (12 B); mixed reads
g (2), master, m, v (12) and writes master, m, v (12) and p (2).
"""

from __future__ import annotations

import argparse
import sys

import torch

from shardkit.bench._common import machine_info, median, time_interleaved, write_json

BYTES_PER_PARAM = 28


def gpt_shapes(target_params: int) -> list[tuple[int, ...]]:
    """Embedding + transformer blocks (qkv, proj, mlp up/down, norms) of about target_params."""
    d = 512 if target_params <= 40e6 else 1024
    block = [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d), (d,), (d,)]
    per_block = sum(torch.Size(s).numel() for s in block)
    vocab = 8192
    layers = max(1, round((target_params - vocab * d) / per_block))
    return [(vocab, d)] + block * layers + [(d,)]


def parse_size(text: str) -> int:
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}
    return int(float(text[:-1]) * scale[text[-1].upper()]) if text[-1].upper() in scale else int(text)


def make_params(shapes, dtype):
    gen = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(dtype))
        p.grad = (torch.randn(s, generator=gen) * 1e-3).to(dtype)
        params.append(p)
    return params


def deepspeed_adam():
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        probe = torch.nn.Parameter(torch.zeros(8))
        probe.grad = torch.zeros(8)
        DeepSpeedCPUAdam([probe], adamw_mode=True).step()  # JIT-builds its op on first use
        return DeepSpeedCPUAdam
    except Exception as exc:  # not installed, or its op does not build here
        print(f"# DeepSpeedCPUAdam unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        return None


def measure_bandwidth(numel: int, repeats: int) -> float:
    """Bytes per second of the Adam access pattern over fp32 buffers of numel elements."""
    from shardkit import _native

    bufs = [torch.zeros(numel) for _ in range(4)]
    threads = torch.get_num_threads()

    def probe():
        _native.C.bandwidth_probe(*(b.data_ptr() for b in bufs), numel, threads)

    seconds = median(time_interleaved({"probe": probe}, repeats)["probe"])
    return BYTES_PER_PARAM * numel / seconds


def bench_size(target: int, repeats: int, ds_cls) -> list[dict]:
    from shardkit.optim import FusedAdamW

    shapes = gpt_shapes(target)
    numel = sum(torch.Size(s).numel() for s in shapes)
    kw = dict(lr=1e-4, weight_decay=0.01)

    # fp32
    p_foreach, p_fused, p_ours = (make_params(shapes, torch.float32) for _ in range(3))
    cases = {
        "torch AdamW foreach": torch.optim.AdamW(p_foreach, foreach=True, **kw).step,
        "torch AdamW fused": torch.optim.AdamW(p_fused, fused=True, **kw).step,
        "shardkit FusedAdamW": FusedAdamW(p_ours, **kw).step,
    }
    if ds_cls is not None:
        cases["DeepSpeedCPUAdam"] = ds_cls(make_params(shapes, torch.float32), adamw_mode=True, **kw).step
    fp32 = time_interleaved(cases, repeats)
    del p_foreach, p_fused, p_ours, cases

    # mixed bf16: the torch way is fp32 fused on a master copy, then copy to bf16
    low_torch, low_ours = make_params(shapes, torch.bfloat16), make_params(shapes, torch.bfloat16)
    masters = [torch.nn.Parameter(p.detach().float()) for p in low_torch]
    for m, p in zip(masters, low_torch):
        m.grad = p.grad.float()  # the upcast pass is not timed: we favour the anchor
    torch_master_opt = torch.optim.AdamW(masters, fused=True, **kw)

    @torch.no_grad()
    def torch_fused_plus_copy():
        torch_master_opt.step()
        torch._foreach_copy_(low_torch, masters)

    mixed_cases = {
        "torch fused fp32 + bf16 copy": torch_fused_plus_copy,
        "shardkit FusedAdamW bf16": FusedAdamW(low_ours, **kw).step,
    }
    if ds_cls is not None:
        ds_params = make_params(shapes, torch.bfloat16)
        mixed_cases["DeepSpeedCPUAdam bf16"] = ds_cls(ds_params, adamw_mode=True, **kw).step
    mixed = time_interleaved(mixed_cases, repeats)
    bandwidth = measure_bandwidth(numel, repeats)
    bound = BYTES_PER_PARAM * numel / bandwidth

    rows = []
    for precision, times, anchor in [("fp32", fp32, "torch AdamW fused"),
                                     ("bf16 mixed", mixed, "torch fused fp32 + bf16 copy")]:
        anchor_s = median(times[anchor])
        for name, samples in times.items():
            seconds = median(samples)
            rows.append({
                "params": numel, "precision": precision, "case": name, "ms": seconds * 1e3,
                "gb_per_s": BYTES_PER_PARAM * numel / seconds / 1e9, "speedup_vs_anchor": anchor_s / seconds,
                "anchor": anchor, "pct_of_bound": 100 * bound / seconds, "bound_ms": bound * 1e3,
                "bandwidth_gb_per_s": bandwidth / 1e9,
            })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'params':>8} {'precision':<11} {'case':<30} {'ms/step':>8} {'GB/s':>6} {'x anchor':>8} {'% bound':>7}")
    for r in rows:
        print(f"{r['params'] / 1e6:7.1f}M {r['precision']:<11} {r['case']:<30} {r['ms']:8.1f} "
              f"{r['gb_per_s']:6.1f} {r['speedup_vs_anchor']:8.2f} {r['pct_of_bound']:7.0f}")
    seen = set()
    for r in rows:
        if r["params"] not in seen:
            seen.add(r["params"])
            print(f"# {r['params'] / 1e6:.1f}M: measured bandwidth {r['bandwidth_gb_per_s']:.1f} GB/s "
                  f"(4 reads + 3 writes fp32), bound {r['bound_ms']:.1f} ms/step at {BYTES_PER_PARAM} B/param")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardkit bench adam", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["25M", "100M"], help="parameter counts, e.g. 25M 100M")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per case")
    parser.add_argument("--threads", type=int, default=2, help="torch (and shardkit) threads")
    parser.add_argument("--json", default="benchmarks/out/bench_adam.json", help="where to write the results")
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        ds_cls = deepspeed_adam()
        rows = []
        for size in args.sizes:
            rows += bench_size(parse_size(size), args.repeats, ds_cls)
    finally:
        torch.set_num_threads(previous_threads)
    print_table(rows)
    machine = {**machine_info(), "torch_threads": args.threads}
    path = write_json(args.json, {"machine": machine, "results": rows})
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
