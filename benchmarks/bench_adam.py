"""python -m benchmarks.bench_adam: see shardkit.bench.adam (also `shardkit bench adam`)."""

import sys

from shardkit.bench.adam import main

if __name__ == "__main__":
    sys.exit(main())
