"""``shardkit average``: the weighted mean of several checkpoints (model soup), written as one safetensors file."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "average",
        help="average checkpoints (safetensors files/dirs, trainer or sharded checkpoints) into one",
        description="Weighted average of models with the same tensor names and shapes; each tensor keeps its dtype. "
        "Weights are divided by their sum unless --no-normalize.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="PATH",
        help="safetensors files, directories with model.safetensors, or sharded checkpoints",
    )
    parser.add_argument(
        "--weights", nargs="+", type=float, metavar="W", help="one weight >= 0 per model (default: equal)"
    )
    parser.add_argument("--no-normalize", action="store_true", help="use the weights as given (a weighted sum)")
    parser.add_argument("--out", required=True, help="output .safetensors file, or a directory for model.safetensors")
    parser.set_defaults(func=run)


def run(args) -> int:
    from shardkit.averaging import average_checkpoints, check_weights

    weights = check_weights(args.weights, len(args.models), not args.no_normalize)
    tensors = average_checkpoints(args.models, args.weights, args.out, normalize=not args.no_normalize)
    numel = sum(t.numel() for t in tensors.values())
    print(
        f"averaged {len(args.models)} models ({len(tensors)} tensors, {numel:,} values) with weights "
        f"{[round(w, 6) for w in weights]} -> {args.out}"
    )
    return 0
