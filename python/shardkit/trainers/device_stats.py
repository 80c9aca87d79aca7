"""Per-rank throughput and peak memory of a training run, beside the memory estimator's figure.

At the end of ``train()`` each rank prints one line and keeps the figures in
``trainer.device_stats``::

    rank 0 cuda:0: 48,211 tokens/s, peak 3.41 GiB (torch.cuda.max_memory_allocated), estimator 3.52 GiB

On CUDA the peak is ``torch.cuda.max_memory_allocated`` since the run
started, the quantity ``shardkit.memory.estimate`` predicts (tensors torch
allocated). The CPU has no such counter: there the line gives the process's
peak resident set (``ru_maxrss``), which also counts the Python interpreter,
torch's libraries and the dataset, so it is not comparable with the estimator.
"""

from __future__ import annotations

import time

import torch

from shardkit.trainers.device import peak_host_rss_bytes, peak_memory_bytes


def estimated_bytes(model: torch.nn.Module, args, world_size: int) -> int | None:
    """What ``shardkit.memory.estimate`` predicts one rank holds for this run (None if it cannot tell)."""
    from shardkit.memory import estimate

    try:
        result = estimate(model, optimizer="sgd" if args.optim == "sgd" else "adamw",
                          precision="bf16" if args.bf16 else "fp32", sgd_momentum=False,
                          strategy="FULL_SHARD" if world_size > 1 else "NO_SHARD", world_size=world_size,
                          batch=args.per_device_train_batch_size, seq_len=args.max_length or 1024)
    except (TypeError, ValueError, AttributeError, KeyError):  # a model whose shape the estimator does not know
        return None
    return result.total_bytes


class Throughput:
    """Tokens this rank trained on since it was made; resets the device's peak-memory counter.

    The seconds are wall time up to ``summary``, after waiting for the device:
    the step loop itself never waits, so timing single steps on CUDA would
    only time their launch. Evaluation and checkpoints inside the run count too.
    """

    def __init__(self, device: torch.device, estimate: int | None = None) -> None:
        self.device, self.estimate = device, estimate
        self.tokens = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.started = time.perf_counter()

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def summary(self, rank: int) -> dict:
        """This rank's figures (a sync on CUDA: it waits for the last step to finish)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.started
        peak = peak_memory_bytes(self.device)
        kind = "torch.cuda.max_memory_allocated"
        if peak is None:
            peak, kind = peak_host_rss_bytes(), "host peak RSS, not comparable with the estimator"
        return {"rank": rank, "device": str(self.device), "tokens": self.tokens, "seconds": self.seconds,
                "tokens_per_second": self.tokens / self.seconds if self.seconds > 0 else 0.0,
                "peak_memory_bytes": peak, "peak_memory_kind": kind, "estimated_bytes": self.estimate}


def format_device_stats(stats: dict) -> str:
    """One line: rank, device, tokens/s, peak memory and what it measures, the estimator's figure."""
    def size(n):
        if n is None:
            return "n/a"
        return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

    return (f"rank {stats['rank']} {stats['device']}: {stats['tokens_per_second']:,.0f} tokens/s, "
            f"peak {size(stats['peak_memory_bytes'])} ({stats['peak_memory_kind']}), "
            f"estimator {size(stats['estimated_bytes'])}")
