"""``shardkit speedrun``: tokenizer, pretraining, SFT, DPO and evaluation on the bundled corpus, with a report."""

from __future__ import annotations

import time


def register(subparsers) -> None:
    from shardkit.speedrun.config import PRESETS

    parser = subparsers.add_parser("speedrun", help="train a small LLM end to end on the bundled corpus, with a report",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                        help="tiny (default, minutes on 2 cores), small (longer, better), micro (a smoke test), "
                             "gpu (sized for minutes on one H100; not run on a GPU yet)")
    parser.add_argument("--config", help="TOML file overriding any stage's settings, e.g. [pretrain] max_steps = 800")
    parser.add_argument("--nproc", type=int, default=None,
                        help="ranks of the training stages (default: the GPU count on cuda, else the core count)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto (default: cuda when CUDA is available), cpu, or cuda (one rank per GPU)")
    parser.add_argument("--out", default=None, help="run directory (default: ./speedrun-<preset>)")
    parser.add_argument("--restart", action="store_true", help="delete the run directory's stages and start over")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from shardkit.speedrun import lifetime, run

    started = time.perf_counter()
    # SIGTERM stops the ranks and leaves the run resumable, as Ctrl-C does.
    with lifetime.signals_exit():
        report = run(args.out or f"speedrun-{args.preset}", preset=args.preset, config=args.config,
                     nproc=args.nproc, restart=args.restart, device=args.device)
    print(f"speedrun finished in {(time.perf_counter() - started) / 60:.1f} min: report at {report}")
    return 0
