"""``shardkit comm``: the collectives' cost model and maintenance.

``shardkit comm model --ranks 1024 --bytes 1G`` prints the predicted ring and
double-binary-tree all-reduce times, and the assumptions behind them.
``shardkit comm cleanup`` removes shared-memory segments left by crashed jobs.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


def parse_bytes(text: str) -> int:
    """'4096', '64K', '1G', '1.5MiB' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"--bytes: expected a size such as 4096, 64K, 16M or 1G, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds / 1e-9:.1f} ns"


def register(subparsers) -> None:
    parser = subparsers.add_parser("comm", help="collectives: cost model, stale shared memory")
    sub = parser.add_subparsers(dest="comm_command", metavar="ACTION")
    model = sub.add_parser("model", help="predict ring vs tree all-reduce time for a cluster size")
    model.add_argument("--ranks", type=int, required=True, help="number of ranks p (>= 2)")
    model.add_argument("--bytes", type=str, default="1G", help="message size, e.g. 4096, 64K, 16M, 1G")
    model.add_argument("--alpha-us", type=float, default=None, help="latency per step, microseconds (both algorithms)")
    model.add_argument("--bandwidth-gbps", type=float, default=None, help="link bandwidth, GB/s (both algorithms)")
    model.add_argument("--defaults", action="store_true", help="ignore this machine's calibration cache")
    model.set_defaults(func=_run_model)
    cleanup = sub.add_parser("cleanup", help="remove shared-memory segments of crashed jobs")
    cleanup.set_defaults(func=_run_cleanup)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _model_for(args):
    from shardkit.comm import cost_model
    from shardkit.comm.group import default_host_id

    model, where = cost_model.CostModel(), "built-in defaults for the shared-memory transport"
    if not args.defaults:
        # Any cached calibration of this host (the largest local world measured).
        host = default_host_id()
        for world in range(128, 1, -1):
            cached = cost_model.load_cached(cost_model.cache_key(host, world))
            if cached is not None:
                model, where = cached, f"calibrated on this host with {world} ranks ({cost_model.cache_path()})"
                break
    if args.alpha_us is not None or args.bandwidth_gbps is not None:
        ring, tree = model.ring, model.tree
        alpha = None if args.alpha_us is None else args.alpha_us * 1e-6
        beta = None if args.bandwidth_gbps is None else 1.0 / (args.bandwidth_gbps * 1e9)
        ring = cost_model.AlgoCost(alpha=alpha or ring.alpha, beta=beta or ring.beta)
        tree = cost_model.AlgoCost(alpha=alpha or tree.alpha, beta=beta or tree.beta)
        model = cost_model.CostModel(ring=ring, tree=tree, source="user")
        where = "given on the command line" + ("" if alpha and beta else f" (the rest: {where})")
    return model, where


def _run_model(args) -> int:
    if args.ranks < 2:
        raise SystemExit("--ranks: expected at least 2")
    nbytes = parse_bytes(args.bytes)
    model, where = _model_for(args)
    p = args.ranks
    ring, tree = model.ring_time(p, nbytes), model.tree_time(p, nbytes)
    print(f"all_reduce of {nbytes} bytes over {p} ranks")
    print(f"  ring: {_fmt_time(ring):>12}   = 2(p-1)a + 2(p-1)/p n b")
    print(f"  tree: {_fmt_time(tree):>12}   = 2 ceil(log2 p) a + 2 n b")
    print(f"  auto picks: {model.choose(p, nbytes)}")
    print("assumptions:")
    print(f"  constants {where}:")
    print(f"    ring a = {model.ring.alpha * 1e6:.3f} us, b = 1/({1 / model.ring.beta / 1e9:.2f} GB/s)")
    print(f"    tree a = {model.tree.alpha * 1e6:.3f} us, b = 1/({1 / model.tree.beta / 1e9:.2f} GB/s)")
    print("  one rank per node on a uniform network; no congestion, no protocol switch, reduction cost folded into b;")
    print("  both algorithms fully pipelined (message much larger than the chunk size).")
    return 0


def _run_cleanup(args) -> int:
    from shardkit import comm

    print(f"removed {comm.cleanup_stale_segments()} stale shared-memory segment(s)")
    return 0
