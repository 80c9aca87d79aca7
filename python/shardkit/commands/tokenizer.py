"""``shardkit tokenizer train|encode|stats``: train, apply and measure a BPE tokenizer."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("tokenizer", help="train, apply and measure a byte-level BPE tokenizer")
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION")

    train = sub.add_parser("train", help="train on text files and save tokenizer.json files to a folder")
    train.add_argument("--input", nargs="+", metavar="FILE",
                       help="text files (default: the bundled corpus, English and Chinese)")
    train.add_argument("--vocab-size", type=int, required=True, help="256 bytes + merges + special tokens")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for shardkit.json and HF tokenizer.json")
    train.add_argument("--pattern", default="gpt4", help="gpt4, gpt2, o200k or a custom regex")
    train.add_argument("--special", nargs="*", default=None, metavar="TOKEN",
                       help="special tokens (default: <|endoftext|> <|im_start|> <|im_end|>)")
    train.add_argument("--min-frequency", type=int, default=1, help="never merge a pair seen fewer times")
    train.add_argument("--threads", type=int, default=None, help="threads for splitting and counting")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)

    encode = sub.add_parser("encode", help="encode text (a file or stdin) and print the ids as JSON")
    encode.add_argument("--tokenizer", required=True, metavar="PATH", help="shardkit.json, or a folder holding it")
    encode.add_argument("--input", metavar="FILE", help="text file (default: stdin)")
    encode.add_argument("--allow-special", action="store_true", help="encode special tokens in the text as such")
    encode.add_argument("--trust-pattern", action="store_true",
                        help="accept a custom (non built-in) split pattern from the tokenizer file")
    encode.set_defaults(func=_encode)

    stats = sub.add_parser("stats", help="compression (bytes per token) on text files")
    stats.add_argument("--tokenizer", required=True, metavar="PATH", help="shardkit.json, or a folder holding it")
    stats.add_argument("--input", nargs="+", metavar="FILE", help="text files (default: the bundled corpus)")
    stats.add_argument("--trust-pattern", action="store_true",
                       help="accept a custom (non built-in) split pattern from the tokenizer file")
    stats.set_defaults(func=_stats)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _load(path: str, trust_pattern: bool):
    from shardkit.tokenizer import BPETokenizer

    p = Path(path)
    return BPETokenizer.load(p / "shardkit.json" if p.is_dir() else p, trust_pattern=trust_pattern)


def _train(args) -> int:
    from shardkit import corpus
    from shardkit.tokenizer import CHAT_SPECIAL_TOKENS, BPETokenizer

    special = list(CHAT_SPECIAL_TOKENS) if args.special is None else args.special
    options = dict(pattern=args.pattern, special_tokens=special, min_frequency=args.min_frequency,
                   threads=args.threads, progress=not args.no_progress)
    if args.input:
        tok = BPETokenizer.train(args.input, args.vocab_size, **options)
    else:
        texts = [corpus.open_text(name).read() for name in corpus.names()]
        tok = BPETokenizer.train_from_iterator(texts, args.vocab_size, **options)
    out = Path(args.out)
    tok.save(out / "shardkit.json")
    tok.save_hf(out)
    print(f"saved {tok!r} to {out}/shardkit.json and {out}/tokenizer.json", file=sys.stderr)
    return 0


def _encode(args) -> int:
    tok = _load(args.tokenizer, args.trust_pattern)
    text = Path(args.input).read_text(encoding="utf-8") if args.input else sys.stdin.read()
    ids = tok.encode(text, allowed_special="all" if args.allow_special else (), disallowed_special=())
    print(json.dumps(ids))
    return 0


def _stats(args) -> int:
    from shardkit import corpus

    tok = _load(args.tokenizer, args.trust_pattern)
    if args.input:
        sources = {p: Path(p).read_bytes() for p in args.input}
    else:
        sources = {name: corpus.read_bytes(name) for name in corpus.names()}
    print(f"{'input':<40} {'bytes':>12} {'tokens':>10} {'bytes/token':>12}")
    total_bytes = total_tokens = 0
    for name, data in sources.items():
        n = len(tok.encode_bytes(data))
        total_bytes += len(data)
        total_tokens += n
        print(f"{str(name)[-40:]:<40} {len(data):>12,} {n:>10,} {len(data) / max(n, 1):>12.3f}")
    print(f"{'total':<40} {total_bytes:>12,} {total_tokens:>10,} {total_bytes / max(total_tokens, 1):>12.3f}")
    return 0
