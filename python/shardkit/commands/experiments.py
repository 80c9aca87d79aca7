"""``shardkit experiments NAME``: rerun a knowledge result (reversal curse, bioS knowledge extraction, L(N) scaling)."""

from __future__ import annotations

import time


def register(subparsers) -> None:
    from shardkit.experiments import EXPERIMENTS, PRESET_NAMES

    parser = subparsers.add_parser(
        "experiments",
        help="rerun the reversal curse, Physics of LMs 3.1 biographies or a scaling law",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("name", choices=EXPERIMENTS)
    parser.add_argument(
        "--preset",
        default="default",
        choices=PRESET_NAMES,
        help="micro (seconds, used by the tests), default (minutes on 2 CPU cores), gpu (one GPU)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="run directory (default: ./experiments-NAME-PRESET); "
        "rerunning with the same directory skips the finished parts",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the data and the models (default: the preset's)",
    )
    parser.add_argument(
        "--restart", action="store_true", help="delete the run directory first"
    )
    parser.set_defaults(func=_run)


def _run(args) -> int:
    import torch

    from shardkit.experiments import run_experiment

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.device(device)  # a bad --device fails here, before any work
    started = time.perf_counter()
    out = args.out or f"experiments-{args.name}-{args.preset}"
    results = run_experiment(
        args.name,
        preset=args.preset,
        out=out,
        device=device,
        seed=args.seed,
        restart=args.restart,
    )
    print(
        f"experiments {args.name}: finished in {(time.perf_counter() - started) / 60:.1f} min; "
        f"results.json, report.md and {len(results.get('figures', {}))} figures in {out}"
    )
    for name, meaning in results.get("figures", {}).items():
        print(f"  {name}: {meaning}")
    return 0
