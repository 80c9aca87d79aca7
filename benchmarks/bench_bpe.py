"""BPE benchmark: training time and peak RSS, encoding throughput, with the anchors side by side.

Training (each run in a fresh subprocess, trainers interleaved round by
round): shardkit from the file (memory-mapped) and from the same documents
the anchors get, rustbpe, HF ``tokenizers`` (byte-level BPE, GPT-4 split)
and sentencepiece (BPE, English only). Encoding (one process, interleaved):
shardkit vs tiktoken and HF on the same 32k vocabulary, single-threaded on
short documents and batched on 2 threads. Prepare the corpora first::

    python -m benchmarks.prepare_bpe_corpora
    python -m benchmarks.bench_bpe [--repeats 2] [--threads 2]

Prints a table and writes benchmarks/out/bench_bpe.json (machine and versions
included). Times are medians over the repeats; compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

GPT4 = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
TRAINERS_EN = ["shardkit_file", "shardkit_docs", "rustbpe", "hf_tokenizers", "sentencepiece"]
TRAINERS_ZH = ["shardkit_file", "shardkit_docs", "rustbpe", "hf_tokenizers"]


def documents(path: str) -> list[str]:
    """The corpus as documents: the prepare script separates them with blank lines."""
    text = Path(path).read_bytes().decode("utf-8", "replace")
    return [d for d in text.split("\n\n") if d]


def rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def digest(tokens: list[bytes]) -> str:
    return hashlib.sha256(b"\0".join(tokens)).hexdigest()[:16]


# ---- training worker (one trainer, one run, in its own process) ----------------


def train_worker(trainer: str, corpus: str, vocab: int, threads: int) -> dict:
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    docs = None if trainer == "shardkit_file" else documents(corpus)
    before = rss_now_mb()
    tokens = None
    t0 = time.perf_counter()
    if trainer.startswith("shardkit"):
        from shardkit.tokenizer import BPETokenizer

        before = rss_now_mb()  # after importing shardkit (and torch with it)
        t0 = time.perf_counter()
        if docs is None:
            tokens = BPETokenizer.train(Path(corpus), vocab, threads=threads).tokens
        else:
            tokens = BPETokenizer.train_from_iterator(docs, vocab, threads=threads).tokens
    elif trainer == "rustbpe":
        import rustbpe

        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(iter(docs), vocab, pattern=GPT4)
        tokens = [bytes(b) for b, _ in tok.get_mergeable_ranks()]
    elif trainer == "hf_tokenizers":
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(byte_fallback=False, unk_token=None, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(pattern=Regex(GPT4), behavior="isolated", invert=False),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        tok.decoder = decoders.ByteLevel()
        trainer_ = trainers.BpeTrainer(vocab_size=vocab, show_progress=False, min_frequency=0,
                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(docs, trainer_)
    elif trainer == "sentencepiece":
        import io

        import sentencepiece as spm

        model = io.BytesIO()
        lines = (line for d in docs for line in d.split("\n") if line)
        spm.SentencePieceTrainer.train(sentence_iterator=lines, model_writer=model, model_type="bpe",
                                       vocab_size=vocab, num_threads=threads, input_sentence_size=0,
                                       max_sentence_length=1 << 16, character_coverage=0.9995,
                                       byte_fallback=True, minloglevel=2)
    else:
        raise ValueError(f"unknown trainer {trainer}")
    seconds = time.perf_counter() - t0
    return {"trainer": trainer, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before,
            "tokens_sha": digest(tokens) if tokens is not None else None}


def run_training(corpus: str, trainers: list[str], vocab: int, threads: int, repeats: int) -> dict:
    runs: dict[str, list[dict]] = {t: [] for t in trainers}
    for r in range(repeats):
        order = trainers[r % len(trainers):] + trainers[: r % len(trainers)]  # rotate: interleaved
        for trainer in order:
            cmd = [sys.executable, "-m", "benchmarks.bench_bpe", "--worker", trainer, "--corpus", corpus,
                   "--vocab", str(vocab), "--threads", str(threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"  {trainer}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[trainer].append(result)
            print(f"  round {r + 1} {trainer:<14} {result['seconds']:7.2f} s  peak {result['peak_rss_mb']:7.0f} MB",
                  file=sys.stderr)
    summary = {}
    for trainer, results in runs.items():
        if not results:
            continue
        summary[trainer] = {
            "seconds_median": statistics.median(x["seconds"] for x in results),
            "seconds_all": [round(x["seconds"], 3) for x in results],
            "peak_rss_mb": max(x["peak_rss_mb"] for x in results),
            "rss_before_mb": min(x["rss_before_mb"] for x in results),
            "tokens_sha": results[0]["tokens_sha"],
        }
    return summary


# ---- encoding (one process, interleaved) ---------------------------------------


def mb_per_s(fn, nbytes: int, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(nbytes / 1e6 / (time.perf_counter() - t0))
    return out


def run_encoding(corpus: str, vocab: int, threads: int, repeats: int, encode_mb: int) -> dict:
    import tempfile

    from shardkit.tokenizer import BPETokenizer

    tok = BPETokenizer.train(Path(corpus), vocab, threads=threads)
    enc = tok.to_tiktoken()
    with tempfile.TemporaryDirectory() as d:
        tok.save_hf(d)
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    docs, size = [], 0
    for doc in documents(corpus)[::7]:  # a spread of short documents
        docs.append(doc)
        size += len(doc.encode())
        if size >= encode_mb * 1e6:
            break
    text = "\n\n".join(docs)
    chunks = [text[i : i + 65536] for i in range(0, len(text), 65536)]
    assert [tok.encode(d) for d in docs[:200]] == [enc.encode(d) for d in docs[:200]], "ids differ from tiktoken"
    cases = {
        "single-threaded, short docs": {
            "shardkit": lambda: [tok.encode(d) for d in docs],
            "tiktoken": lambda: [enc.encode(d) for d in docs],
            "hf_tokenizers": lambda: [hf.encode(d, add_special_tokens=False) for d in docs],
        },
        f"batched {threads} threads, short docs": {
            "shardkit": lambda: tok.encode_batch(docs, num_threads=threads),
            "tiktoken": lambda: enc.encode_batch(docs, num_threads=threads),
            "hf_tokenizers": lambda: hf.encode_batch(docs, add_special_tokens=False),
        },
        f"batched {threads} threads, 64 KB chunks": {
            "shardkit": lambda: tok.encode_batch(chunks, num_threads=threads),
            "tiktoken": lambda: enc.encode_batch(chunks, num_threads=threads),
            "hf_tokenizers": lambda: hf.encode_batch(chunks, add_special_tokens=False),
        },
    }
    summary = {}
    for case, fns in cases.items():
        speeds: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():  # interleaved
                speeds[name] += mb_per_s(fn, size, 1)
        summary[case] = {name: statistics.median(v) for name, v in speeds.items()}
        print(f"  {case}: " + ", ".join(f"{k} {v:.1f} MB/s" for k, v in summary[case].items()), file=sys.stderr)
    summary["encode_bytes"] = size
    return summary


# ---- report -------------------------------------------------------------------


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ["shardkit", "torch", "rustbpe", "tiktoken", "tokenizers", "sentencepiece", "regex"]:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()}


def print_training(name: str, summary: dict) -> None:
    anchors = [t for t in summary if not t.startswith("shardkit")]
    fastest = min((summary[t]["seconds_median"] for t in anchors), default=None)
    print(f"\ntraining {name}")
    print(f"{'trainer':<16} {'time s':>8} {'vs fastest anchor':>18} {'peak RSS MB':>12} {'RSS before MB':>14}")
    for trainer, s in summary.items():
        ratio = f"{fastest / s['seconds_median']:.2f}x" if fastest else "-"
        print(f"{trainer:<16} {s['seconds_median']:8.2f} {ratio:>18} {s['peak_rss_mb']:12.0f} {s['rss_before_mb']:14.0f}")
    if "shardkit_docs" in summary and "rustbpe" in summary:
        same = summary["shardkit_docs"]["tokens_sha"] == summary["rustbpe"]["tokens_sha"]
        print(f"merges identical to rustbpe (same documents): {same}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="benchmarks/out/corpora", help="folder with en_100mb.txt, zh_20mb.txt")
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--encode-mb", type=int, default=10, help="MB of short documents to encode")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated trainers (default: all)")
    parser.add_argument("--out", default="benchmarks/out/bench_bpe.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(train_worker(args.worker, args.corpus, args.vocab, args.threads)))
        return 0

    corpora = Path(args.corpora)
    en, zh = corpora / "en_100mb.txt", corpora / "zh_20mb.txt"
    if not en.exists() or not zh.exists():
        print(f"missing corpora in {corpora}: run python -m benchmarks.prepare_bpe_corpora", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    result = {"machine": machine(), "versions": versions(), "vocab": args.vocab, "threads": args.threads,
              "repeats": args.repeats, "training": {}, "encoding": None}
    if not args.skip_train:
        for name, path, trainers in [("en_100mb", en, TRAINERS_EN), ("zh_20mb", zh, TRAINERS_ZH)]:
            trainers = [t for t in trainers if only is None or t in only]
            print(f"training on {path}", file=sys.stderr)
            result["training"][name] = run_training(str(path), trainers, args.vocab, args.threads, args.repeats)
    if not args.skip_encode:
        print("encoding", file=sys.stderr)
        result["encoding"] = run_encoding(str(en), args.vocab, args.threads, args.repeats, args.encode_mb)
    result["machine"]["load_avg_end"] = os.getloadavg()
    for name, summary in result["training"].items():
        print_training(name, summary)
    if result["encoding"]:
        print("\nencoding MB/s (same vocabulary)")
        for case, speeds in result["encoding"].items():
            if isinstance(speeds, dict):
                ratio = speeds["shardkit"] / speeds["tiktoken"]
                print(f"{case:<36} " + "  ".join(f"{k} {v:6.1f}" for k, v in speeds.items())
                      + f"  shardkit/tiktoken {ratio:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
