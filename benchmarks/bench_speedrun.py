"""Wall time of ``shardkit speedrun`` from scratch, per stage, against the 15-minute target of the tiny preset.

Runs the CLI exactly as the README does (in a fresh run directory), then reads
the run's ``state.json`` for each stage's time, tokens/s and the figures the
report holds, and prints them with the total against the target.

    python -m benchmarks.bench_speedrun [--preset tiny] [--nproc 2] [--out benchmarks/out/speedrun.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shardkit.bench._common import machine_info, write_json

TARGET_MINUTES = {"tiny": 15.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--nproc", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/out/speedrun.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-speedrun-") as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "shardkit.cli", "speedrun", "--preset", args.preset, "--out", str(run_dir)]
        if args.nproc:
            command += ["--nproc", str(args.nproc)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        total = time.perf_counter() - start
        state = json.loads((run_dir / "state.json").read_text())
        report = (run_dir / "report.md").read_text()

    stages = state["stages"]
    rows = []
    for name, stage in stages.items():
        training = stage.get("training", {})
        evaluation = stage.get("eval", {})
        rows.append({"stage": name, "wall_seconds": stage["wall_seconds"],
                     "tokens_per_second": training.get("tokens_per_second"),
                     "exact_match": evaluation.get("exact_match"), "perplexity": evaluation.get("perplexity")})
    dpo = stages["dpo"]["training"]
    target = TARGET_MINUTES.get(args.preset)
    print(f"{'stage':<10} {'wall s':>8} {'tokens/s':>10} {'exact match':>12} {'perplexity':>12}")
    for r in rows:
        tps = f"{r['tokens_per_second']:,.0f}" if r["tokens_per_second"] else "-"
        em = f"{r['exact_match']:.1%}" if r["exact_match"] is not None else "-"
        ppl = f"{r['perplexity']:.1f}" if r["perplexity"] is not None else "-"
        print(f"{r['stage']:<10} {r['wall_seconds']:>8.1f} {tps:>10} {em:>12} {ppl:>12}")
    print(f"DPO reward accuracy on held-out pairs: {dpo['eval']['eval_rewards/accuracies']:.1%}")
    verdict = f" (target < {target:.0f} min: {'met' if total / 60 < target else 'MISSED'})" if target else ""
    print(f"total {total / 60:.2f} min with {state['nproc']} ranks{verdict}")
    payload = {"machine": machine_info(), "preset": args.preset, "nproc": state["nproc"], "total_seconds": total,
               "target_minutes": target, "stages": rows,
               "dpo_eval_reward_accuracy": dpo["eval"]["eval_rewards/accuracies"], "report": report}
    print(f"wrote {write_json(args.out, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
