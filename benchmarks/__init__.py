"""Benchmarks: ``python -m benchmarks.bench_<area>``; each prints a table and writes JSON to benchmarks/out/."""
