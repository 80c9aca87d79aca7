"""``python -m benchmarks.bench_tokenizer``: the BPE benchmark (see benchmarks/bench_bpe.py)."""

import sys

from benchmarks.bench_bpe import main

if __name__ == "__main__":
    sys.exit(main())
