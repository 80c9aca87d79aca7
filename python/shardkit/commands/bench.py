"""``shardkit bench NAME [args...]``: run a packaged benchmark (shardkit.bench.NAME)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def _available() -> list[str]:
    from shardkit import bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark against its anchors: " + ", ".join(_available()))
    parser.add_argument("name", choices=_available(), help="which benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark (see NAME --help)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    return int(importlib.import_module(f"shardkit.bench.{args.name}").main(args.args) or 0)
