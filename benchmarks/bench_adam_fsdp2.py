"""torchrun --nproc-per-node 2 -m benchmarks.bench_adam_fsdp2: see shardkit.bench.adam_fsdp2."""

import sys

from shardkit.bench.adam_fsdp2 import main

if __name__ == "__main__":
    sys.exit(main())
