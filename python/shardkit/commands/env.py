"""``shardkit env``: what this installation can do (as ``python -m shardkit.env``)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("env", help="print which native parts are enabled, and why not")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from shardkit.env import main

    main()
    return 0
