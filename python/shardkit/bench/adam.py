"""Fused AdamW step time against torch and DeepSpeed, with the memory-bandwidth bound.

    shardkit bench adam [--sizes 25M 100M] [--repeats 15] [--threads 2]
    python -m benchmarks.bench_adam   (the same)

Cases, measured interleaved in one run on a GPT-shaped parameter list:
- fp32: torch.optim.AdamW foreach and fused=True, shardkit FusedAdamW;
- mixed bf16 (bf16 params and grads, fp32 master and moments): torch fused
  fp32 on the master followed by a copy to bf16 (how mixed precision is done
  with torch today), shardkit FusedAdamW.

DeepSpeedCPUAdam (when deepspeed is installed and its op builds) runs in a
child process, interleaved with shardkit there: its JIT-built op brings a
second OpenMP runtime whose spinning threads slow torch's own kernels several
times over, which would make the torch anchors look worse than they are. Its
row is placed on the main run's scale through shardkit's time in both runs.

The bound: the step's bytes moved divided by this machine's bandwidth,
measured with the same access pattern (4 fp32 reads, 3 fp32 writes per
element). Both layouts move 28 bytes per parameter:
fp32 reads p, g, m, v (16 B) and writes p, m, v (12 B); mixed reads
g (2), master, m, v (12) and writes master, m, v (12) and p (2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import torch

from shardkit.bench._common import machine_info, median, time_interleaved, write_json

BYTES_PER_PARAM = 28
KW = dict(lr=1e-4, weight_decay=0.01)


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


def measure_bandwidth(numel: int, repeats: int) -> float:
    """Bytes per second of the Adam access pattern over fp32 buffers of numel elements."""
    from shardkit import _native

    bufs = [torch.zeros(numel) for _ in range(4)]
    threads = torch.get_num_threads()

    def probe():
        _native.C.bandwidth_probe(*(b.data_ptr() for b in bufs), numel, threads)

    seconds = median(time_interleaved({"probe": probe}, repeats)["probe"])
    return BYTES_PER_PARAM * numel / seconds


def torch_mixed_step(shapes):
    """How mixed precision is done with torch today: fused fp32 AdamW on masters, then a bf16 copy."""
    low = make_params(shapes, torch.bfloat16)
    masters = [torch.nn.Parameter(p.detach().float()) for p in low]
    for m, p in zip(masters, low):
        m.grad = p.grad.float()  # the upcast pass is not timed: we favour the anchor
    opt = torch.optim.AdamW(masters, fused=True, **KW)

    @torch.no_grad()
    def step():
        opt.step()
        torch._foreach_copy_(low, masters)

    return step


def bench_size(target: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds per step of every in-process case, by precision."""
    from shardkit.optim import FusedAdamW

    shapes = gpt_shapes(target)
    fp32 = time_interleaved({
        "torch AdamW foreach": torch.optim.AdamW(make_params(shapes, torch.float32), foreach=True, **KW).step,
        "torch AdamW fused": torch.optim.AdamW(make_params(shapes, torch.float32), fused=True, **KW).step,
        "shardkit FusedAdamW": FusedAdamW(make_params(shapes, torch.float32), **KW).step,
    }, repeats)
    mixed = time_interleaved({
        "torch fused fp32 + bf16 copy": torch_mixed_step(shapes),
        "shardkit FusedAdamW": FusedAdamW(make_params(shapes, torch.bfloat16), **KW).step,
    }, repeats)
    return {"fp32": {k: median(v) for k, v in fp32.items()}, "bf16 mixed": {k: median(v) for k, v in mixed.items()}}


def deepspeed_worker(target: int, repeats: int, threads: int, out: str) -> int:
    """Child process: DeepSpeedCPUAdam and shardkit, interleaved; writes medians to `out`."""
    torch.set_num_threads(threads)
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        from shardkit.optim import FusedAdamW

        shapes = gpt_shapes(target)
        result = {}
        for precision, dtype in (("fp32", torch.float32), ("bf16 mixed", torch.bfloat16)):
            times = time_interleaved({
                "DeepSpeedCPUAdam": DeepSpeedCPUAdam(make_params(shapes, dtype), adamw_mode=True, **KW).step,
                "shardkit FusedAdamW": FusedAdamW(make_params(shapes, dtype), **KW).step,
            }, repeats)
            result[precision] = {k: median(v) for k, v in times.items()}
    except Exception as exc:  # not installed, or its JIT op does not build here
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
    write_json(out, result)
    return 0


def deepspeed_times(target: int, repeats: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/ds.json"
        cmd = [sys.executable, "-m", "shardkit.bench.adam", "--deepspeed-worker", str(target), "--repeats",
               str(repeats), "--threads", str(threads), "--json", out]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "child failed"}
        with open(out) as f:
            return json.load(f)


def rows_for(numel: int, times: dict, ds: dict, bandwidth: float) -> list[dict]:
    bound = BYTES_PER_PARAM * numel / bandwidth
    rows = []
    for precision, anchor in (("fp32", "torch AdamW fused"), ("bf16 mixed", "torch fused fp32 + bf16 copy")):
        cases = dict(times[precision])
        if precision in ds:
            # DeepSpeed's time on this run's scale: its ratio to shardkit in the child run.
            scale = cases["shardkit FusedAdamW"] / ds[precision]["shardkit FusedAdamW"]
            cases["DeepSpeedCPUAdam (child process)"] = ds[precision]["DeepSpeedCPUAdam"] * scale
        for name, seconds in cases.items():
            rows.append({
                "params": numel, "precision": precision, "case": name, "ms": seconds * 1e3,
                "gb_per_s": BYTES_PER_PARAM * numel / seconds / 1e9, "speedup_vs_anchor": cases[anchor] / seconds,
                "anchor": anchor, "pct_of_bound": 100 * bound / seconds, "bound_ms": bound * 1e3,
                "bandwidth_gb_per_s": bandwidth / 1e9,
            })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'params':>8} {'precision':<11} {'case':<34} {'ms/step':>8} {'GB/s':>6} {'x anchor':>8} {'% bound':>7}")
    for r in rows:
        print(f"{r['params'] / 1e6:7.1f}M {r['precision']:<11} {r['case']:<34} {r['ms']:8.1f} "
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
    parser.add_argument("--no-deepspeed", action="store_true", help="skip the DeepSpeedCPUAdam child process")
    parser.add_argument("--json", default="benchmarks/out/bench_adam.json", help="where to write the results")
    parser.add_argument("--deepspeed-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.deepspeed_worker:
        return deepspeed_worker(args.deepspeed_worker, args.repeats, args.threads, args.json)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows, notes = [], []
    try:
        for size in args.sizes:
            target = parse_size(size)
            numel = sum(torch.Size(s).numel() for s in gpt_shapes(target))
            times = bench_size(target, args.repeats)
            ds = {} if args.no_deepspeed else deepspeed_times(target, args.repeats, args.threads)
            if "error" in ds:
                notes.append(f"DeepSpeedCPUAdam unavailable: {ds['error']}")
            rows += rows_for(numel, times, ds, measure_bandwidth(numel, args.repeats))
    finally:
        torch.set_num_threads(previous_threads)
    print_table(rows)
    for note in dict.fromkeys(notes):
        print(f"# {note}")
    machine = {**machine_info(), "torch_threads": args.threads}
    path = write_json(args.json, {"machine": machine, "results": rows, "notes": notes})
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
