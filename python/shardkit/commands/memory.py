"""``shardkit memory``: per-rank memory of a training step, with a one-line reason per part."""

from __future__ import annotations

import argparse
import json

_SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_count(text: str) -> int:
    """``'7B'``, ``'135M'``, ``'7e9'`` or ``'1234'`` -> an int parameter count."""
    raw = text.strip().upper().replace("_", "").replace(",", "")
    scale = _SUFFIXES.get(raw[-1:], 1.0)
    number = raw[:-1] if raw[-1:] in _SUFFIXES else raw
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 7B, 135M or 7e9, got {text!r}") from None
    if value < 1 or not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a positive whole count, got {text!r}")
    return int(value)


def register(subparsers) -> None:
    from shardkit.memory import OPTIMIZERS, PRECISIONS, PRESETS

    parser = subparsers.add_parser(
        "memory",
        help="estimate per-rank memory: params, grads, master weights, moments, activations, comm buffers",
        description="Estimate the memory one rank holds in a training step. Give --params, --preset, or the decoder shape.",
    )
    model = parser.add_argument_group("model (one of: --params, --preset, --config, or the shape flags)")
    model.add_argument("--params", type=parse_count, help="parameter count, e.g. 7B, 135M, 7e9 (no activations then)")
    model.add_argument("--preset", choices=sorted(PRESETS), help="a published Llama-style shape")
    model.add_argument("--config", metavar="JSON", help="a Hugging Face config.json of a Llama-style model")
    for flag, help_text in (
        ("--vocab", "vocabulary size"),
        ("--hidden", "model width"),
        ("--layers", "number of blocks"),
        ("--heads", "attention heads"),
        ("--kv-heads", "key/value heads (default: --heads)"),
        ("--intermediate", "SwiGLU inner width"),
    ):
        model.add_argument(flag, type=int, help=help_text)
    model.add_argument("--tie-embeddings", action="store_true", help="LM head shares the embedding")
    run = parser.add_argument_group("training setup")
    run.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    run.add_argument("--no-momentum", action="store_true", help="SGD without a momentum buffer")
    run.add_argument(
        "--precision", choices=sorted(PRECISIONS), default="bf16", help="fp32, or mixed bf16/fp16 (default bf16)"
    )
    run.add_argument(
        "--strategy", default="NO_SHARD", help="NO_SHARD|DDP, SHARD_GRAD_OP|ZERO2, FULL_SHARD|ZERO3, HYBRID"
    )
    run.add_argument("--world-size", type=int, default=1)
    run.add_argument("--host-size", type=int, help="ranks per host, for HYBRID")
    run.add_argument("--batch", type=int, default=1, help="per-rank micro-batch")
    run.add_argument("--seq-len", type=int, default=2048)
    run.add_argument("--checkpointing", default="none", help="none, every_block, or k (every k-th block)")
    run.add_argument("--unit-params", type=parse_count, help="parameters of the largest sharding unit")
    run.add_argument("--recipe", choices=("pretrain", "sft", "dpo", "rm", "grpo", "ppo"), default="pretrain",
                     help="which models the step holds: ppo = policy + value trained, reference + reward frozen")
    run.add_argument("--no-reference", action="store_true",
                     help="no frozen reference (DPO with precomputed log-probs, GRPO with beta=0)")
    out = parser.add_argument_group("output")
    out.add_argument("--compare", action="store_true", help="one table per strategy, to see what each saves")
    out.add_argument("--json", action="store_true", help="print to_dict() as JSON instead of tables")
    out.add_argument("--plot", metavar="PNG", help="write a stacked-bar chart of the breakdown")
    parser.set_defaults(func=_run, _parser=parser)


def _model(args):
    from shardkit.memory import PRESETS, DecoderSpec
    from shardkit.memory.spec import load_hf_config

    shape = [args.vocab, args.hidden, args.layers, args.heads, args.intermediate]
    given = [
        args.params is not None,
        args.preset is not None,
        args.config is not None,
        any(v is not None for v in shape),
    ]
    if sum(given) != 1:
        args._parser.error("give exactly one of --params, --preset, --config, or the shape flags")
    if args.params is not None:
        return args.params
    if args.preset is not None:
        return PRESETS[args.preset]
    if args.config is not None:
        try:
            return load_hf_config(args.config)
        except (TypeError, ValueError) as exc:
            args._parser.error(str(exc))
    if any(v is None for v in shape):
        args._parser.error("the shape needs --vocab, --hidden, --layers, --heads and --intermediate")
    try:
        return DecoderSpec(
            vocab=args.vocab,
            hidden=args.hidden,
            layers=args.layers,
            heads=args.heads,
            kv_heads=args.kv_heads or args.heads,
            intermediate=args.intermediate,
            tie_embeddings=args.tie_embeddings,
        )
    except (TypeError, ValueError) as exc:
        args._parser.error(str(exc))


def _run(args) -> int:
    from shardkit.memory import STRATEGIES, estimate, plot

    model = _model(args)
    checkpointing = int(args.checkpointing) if args.checkpointing.isdigit() else args.checkpointing
    common = dict(
        optimizer=args.optimizer,
        precision=args.precision,
        world_size=args.world_size,
        host_size=args.host_size,
        batch=args.batch,
        seq_len=args.seq_len,
        checkpointing=checkpointing,
        sgd_momentum=not args.no_momentum,
        unit_params=args.unit_params,
        recipe=args.recipe,
        reference=not args.no_reference,
    )
    strategies = [args.strategy]
    if args.compare:
        strategies = [s for s in STRATEGIES if s != "HYBRID" or args.host_size]
    try:
        estimates = {s: estimate(model, strategy=s, **common) for s in strategies}
    except (TypeError, ValueError) as exc:
        args._parser.error(str(exc))
    if args.json:
        payload = {s: e.to_dict() for s, e in estimates.items()}
        print(json.dumps(payload if args.compare else payload[args.strategy], indent=2))
    else:
        print("\n\n".join(e.table() for e in estimates.values()))
    if args.plot:
        plot({e.inputs["strategy"]: e for e in estimates.values()}, args.plot)
        if not args.json:
            print(f"\nwrote {args.plot}")
    return 0
