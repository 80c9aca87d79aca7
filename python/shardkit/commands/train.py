"""``shardkit train {pretrain,sft,dpo,kto} --config cfg.toml [--key value ...] --nproc N``.

With ``--nproc 1`` the run happens in this process; with more, the command
re-launches itself through ``torch.distributed.run`` (torchrun), so the same
rendezvous flags multi-node users know apply. See ``shardkit.trainers.run``
for the config file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from shardkit.trainers.run import TRAINERS


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train with a shardkit trainer from a TOML/YAML config",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("trainer", choices=TRAINERS)
    parser.add_argument("--config", help="TOML or YAML file with [model], [tokenizer], [data], [trainer]")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this node (via torch.distributed.run)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="--section.key value pairs; the section defaults to trainer")
    parser.set_defaults(func=_run)


def parse_overrides(tokens: list[str]) -> dict[str, str]:
    """``["--learning_rate", "1e-3", "--data.train=x.jsonl"]`` -> ``{"learning_rate": "1e-3", "data.train": "x.jsonl"}``."""
    out, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ValueError(f"override {token!r}: expected --key value or --key=value")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ValueError(f"override --{key} has no value")
            value = tokens[i + 1]
            i += 2
        out[key] = value
    return out


def _run(args) -> int:
    overrides = parse_overrides(args.overrides)
    # argparse's REMAINDER also swallows --config/--nproc given after the trainer name.
    args.config = overrides.pop("config", args.config)
    args.nproc = int(overrides.pop("nproc", args.nproc))
    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1:
        import importlib.util

        if importlib.util.find_spec("shardkit.fsdp") is None:
            raise NotImplementedError(f"--nproc {args.nproc}: multi-process training needs shardkit.fsdp.shard(), "
                                      "which is not available yet; use --nproc 1")
        from torch.distributed import run as torchrun

        # Each child runs in-process (--nproc defaults to 1); passing "--nproc" would
        # be read by torchrun's parser as an ambiguous prefix of --nproc-per-node.
        argv = [f"--nproc-per-node={args.nproc}", "-m", "shardkit.cli", "train", args.trainer]
        if args.config:
            argv += ["--config", args.config]
        argv += [f"--{k}={v}" for k, v in overrides.items()]
        torchrun.main(argv)
        return 0
    from shardkit.trainers.run import run

    last = run(args.trainer, args.config, overrides)
    if int(os.environ.get("RANK", "0")) == 0:  # every rank has the same (global) log entry
        print(json.dumps(last), file=sys.stdout)
    return 0
