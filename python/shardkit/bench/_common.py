"""Shared benchmark plumbing: machine description, interleaved timing, JSON output."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from shardkit import atomic


def machine_info() -> dict:
    """What the numbers were measured on: CPU, cores, threads, versions."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import shardkit

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "shardkit": shardkit.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    if shardkit.HAS_NATIVE and hasattr(shardkit._native.C, "get_cpu_isa"):
        info["shardkit_cpu_isa"] = shardkit._native.C.get_cpu_isa()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def time_interleaved(cases: dict[str, Callable[[], None]], repeats: int, warmup: int = 2,
                     sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each case, measured round-robin so that drift and
    noise from other processes hit every case alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            if sync:
                sync()
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as JSON with ``shardkit.atomic`` (the project's one atomic writer)."""
    return atomic.write_json(path, payload, indent=2)
