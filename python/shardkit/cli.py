"""The ``shardkit`` command line.

Every module in ``shardkit.commands`` adds one subcommand through
``register(subparsers)``; the parser it adds sets ``func`` to the handler,
which takes the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from shardkit import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardkit", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{module.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
