"""Benchmarks that ship with the package, so ``shardkit bench NAME`` works
after ``pip install``. Each module ``shardkit.bench.NAME`` has a
``main(argv)``; ``benchmarks/bench_NAME.py`` in the repository runs the same.
Every benchmark measures its anchors in the same run, interleaved, and prints
ratios: absolute times on a shared machine are noise.
"""
