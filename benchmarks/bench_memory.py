"""Memory estimate vs measurement, and what activation checkpointing costs in step time.

    python -m benchmarks.bench_memory [--quick] [--repeats N] [--out benchmarks/out/bench_memory.json]

For a few Llama-style model sizes (shardkit's reference decoder) it runs real
CPU training steps and reports:
  * model-state bytes (params, grads, fp32 masters, AdamW state) measured after
    a step vs ``shardkit.memory.estimate``, fp32 and bf16 mixed precision;
  * saved-activation bytes (saved-tensor hooks, unique storages) vs the
    estimate, without checkpointing, every block, and every 2nd block;
  * step time (forward + backward + AdamW) with checkpointing over the step
    time without, for shardkit.checkpointing and, as the anchor, torch's own
    ``checkpoint_wrapper`` (what FSDP users apply), interleaved round-robin in
    one run so that noise from a shared machine hits all variants alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone

import shardkit
import torch
from shardkit import checkpointing
from shardkit.memory import DecoderSpec, SavedActivationCounter, estimate, format_bytes, model_state_bytes
from shardkit.memory.reference_model import DecoderBlock, ReferenceDecoder
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)

SIZES = {
    "6M": (DecoderSpec(vocab=4096, hidden=256, layers=4, heads=4, kv_heads=2, intermediate=688), 4, 256),
    "27M": (DecoderSpec(vocab=8192, hidden=512, layers=6, heads=8, kv_heads=4, intermediate=1376), 4, 256),
    "60M": (DecoderSpec(vocab=16384, hidden=640, layers=10, heads=10, kv_heads=5, intermediate=1728), 2, 512),
}


def make_inputs(spec: DecoderSpec, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randint(0, spec.vocab, (batch, seq), generator=gen) for _ in range(2))


def measure_model_states(spec: DecoderSpec, batch: int, seq: int, precision: str) -> dict:
    torch.manual_seed(0)
    model = ReferenceDecoder(spec, max_seq_len=seq)
    ids, labels = make_inputs(spec, batch, seq)
    masters: list[torch.Tensor] = []
    if precision == "bf16":
        model.to(torch.bfloat16)
        masters = [p.detach().float() for p in model.parameters()]
    opt = torch.optim.AdamW(masters or model.parameters(), lr=1e-4)
    model(ids, labels).backward()
    if masters:
        for master, param in zip(masters, model.parameters()):
            master.grad = param.grad.float()
        opt.step()
        for master, param in zip(masters, model.parameters()):
            param.data.copy_(master)
            master.grad = None
    else:
        opt.step()
    measured = sum(model_state_bytes(model, opt, masters).values())
    estimated = estimate(spec, precision=precision, optimizer="adamw").model_state_bytes
    return {"measured": measured, "estimated": estimated, "ratio": estimated / measured}


def measure_activations(spec: DecoderSpec, batch: int, seq: int, precision: str, policy) -> dict:
    torch.manual_seed(0)
    model = ReferenceDecoder(spec, max_seq_len=seq)
    if precision == "bf16":
        model.to(torch.bfloat16)
    checkpointing.apply(model, policy)
    with SavedActivationCounter(exclude=model) as saved:
        loss = model(*make_inputs(spec, batch, seq))
    measured = saved.bytes
    del loss
    estimated = estimate(spec, precision=precision, batch=batch, seq_len=seq, checkpointing=policy)["activations"]
    return {"measured": measured, "estimated": estimated, "ratio": estimated / measured}


def measure_hf_activations(spec: DecoderSpec, batch: int, seq: int, policy) -> dict | None:
    """The same comparison on Hugging Face ``LlamaForCausalLM`` (sdpa attention), if installed."""
    try:
        import transformers
    except ImportError:
        return None
    config = transformers.LlamaConfig(
        vocab_size=spec.vocab,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=seq,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = checkpointing.apply(transformers.LlamaForCausalLM(config), policy)
    ids, _ = make_inputs(spec, batch, seq)
    with SavedActivationCounter(exclude=model) as saved:
        loss = model(input_ids=ids, labels=ids).loss
    measured = saved.bytes
    del loss
    estimated = estimate(model, precision="fp32", batch=batch, seq_len=seq, checkpointing=policy)["activations"]
    return {"measured": measured, "estimated": estimated, "ratio": estimated / measured}


def timing_variants(spec: DecoderSpec, seq: int) -> dict:
    torch.manual_seed(0)
    base = ReferenceDecoder(spec, max_seq_len=seq)
    torch_every = copy.deepcopy(base)
    apply_activation_checkpointing(
        torch_every,
        checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: isinstance(m, DecoderBlock),
    )
    return {
        "none": base,
        "shardkit every_block": checkpointing.apply(copy.deepcopy(base), "every_block"),
        "torch checkpoint_wrapper every_block": torch_every,
        "shardkit every_2": checkpointing.apply(copy.deepcopy(base), "every_2"),
    }


def time_steps(spec: DecoderSpec, batch: int, seq: int, repeats: int) -> dict:
    """Median wall and CPU seconds per step; ratios use CPU time, which a 1-thread
    process accrues only while it runs, so being descheduled on a shared machine
    does not count against it."""
    variants = timing_variants(spec, seq)
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True) for name, model in variants.items()}
    ids, labels = make_inputs(spec, batch, seq)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(repeats + 1):  # round-robin; the first round warms up and is dropped
        for name, model in variants.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            model(ids, labels).backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if rep:
                wall[name].append(time.perf_counter() - start_wall)
                cpu[name].append(time.process_time() - start_cpu)
    base_cpu, base_wall = statistics.median(cpu["none"]), statistics.median(wall["none"])
    return {
        name: {
            "median_cpu_s": statistics.median(cpu[name]),
            "median_wall_s": statistics.median(wall[name]),
            "ratio_vs_none": statistics.median(cpu[name]) / base_cpu,
            "wall_ratio_vs_none": statistics.median(wall[name]) / base_wall,
            "cpu_runs": cpu[name],
            "wall_runs": wall[name],
        }
        for name in variants
    }


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "shardkit": shardkit.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": "shared 2-core machine: compare ratios, not absolute times",
    }


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the smallest size, 2 timing repeats")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (interleaved)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--timed-sizes", default="6M,27M", help="sizes whose step time is measured")
    parser.add_argument("--out", default="benchmarks/out/bench_memory.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = dict(list(SIZES.items())[:1]) if args.quick else SIZES
    repeats = 2 if args.quick else args.repeats
    results = {"machine": machine(), "cases": {}}
    print(f"{'model':>5} {'what':<40} {'measured':>11} {'estimated':>11} {'est/meas':>8}")
    for label, (spec, batch, seq) in sizes.items():
        case: dict = {"spec": spec.to_dict(), "params": spec.params, "batch": batch, "seq_len": seq}
        rows = {}
        for precision in ("fp32", "bf16"):
            rows[f"model states, AdamW {precision}"] = measure_model_states(spec, batch, seq, precision)
            for policy in ("none", "every_block", "every_2"):
                rows[f"activations {precision}, ckpt {policy}"] = measure_activations(
                    spec, batch, seq, precision, policy
                )
        for policy in ("none", "every_block"):
            hf = measure_hf_activations(spec, batch, seq, policy)
            if hf is not None:
                rows[f"HF Llama activations fp32, ckpt {policy}"] = hf
        for what, row in rows.items():
            print(
                f"{label:>5} {what:<40} {format_bytes(row['measured']):>11} {format_bytes(row['estimated']):>11} {row['ratio']:>8.4f}"
            )
        case["memory"] = rows
        if label not in args.timed_sizes.split(","):
            results["cases"][label] = case
            continue
        case["step_time"] = time_steps(spec, batch, seq, repeats)
        for name, row in case["step_time"].items():
            print(
                f"{label:>5} step {name:<36} cpu {row['median_cpu_s'] * 1e3:>7.0f} ms x{row['ratio_vs_none']:.2f}"
                f" | wall {row['median_wall_s'] * 1e3:>7.0f} ms x{row['wall_ratio_vs_none']:.2f} vs none"
            )
        results["cases"][label] = case
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
