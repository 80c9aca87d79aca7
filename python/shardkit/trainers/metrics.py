"""Logged metrics as (sum, count) per micro-batch, reduced over the ranks when they are logged.

TRL appends, for each micro-batch, the global value of a metric: per-example
values gathered from every process and averaged (``rewards/*``, ``logps/*``),
token-weighted ones as the summed numerators over the summed token counts
(``entropy``, ``logits/*``, ``mean_token_accuracy``); it skips (or logs 0 for)
a micro-batch whose global count is 0, and logs the mean over the micro-batches
since the last log. Keeping each micro-batch's local (sum, count) pairs gives
exactly that with one all-reduce per log, and makes N-rank logs equal the
single-process run on the same global batches.

Every rank must record the same names in the same micro-batches (a count of
0 where it has nothing), since the pairs are reduced position by position.

Totals and counts may be device tensors: they stay on the device (as float64)
until ``pop``, which copies all of them to the host at once, so recording a
metric never waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]


class MetricBuffer:
    """The metrics of the micro-batches since the last log."""

    def __init__(self) -> None:
        self.batches: list[dict[str, tuple]] = []
        self.current: dict[str, tuple] = {}
        self.if_empty: dict[str, float] = {}

    def add(self, name: str, total, count=1.0, if_empty: float | None = None) -> None:
        """Add ``total`` over ``count`` items (numbers or 0-d tensors) to ``name`` in the current micro-batch.

        A micro-batch whose global count is 0 logs ``if_empty``, or is left
        out of the mean when it is None.
        """
        s, c = self.current.get(name, (0.0, 0.0))
        self.current[name] = (s + _float64(total), c + _float64(count))
        if if_empty is not None:
            self.if_empty[name] = if_empty

    def end_micro_batch(self) -> None:
        self.batches.append(self.current)
        self.current = {}

    def pop(self, reduce: Reduce, derive: Callable[[dict], dict] | None = None, prefix: str = "") -> dict[str, float]:
        """Mean over the micro-batches of each metric's global value; empties the buffer.

        ``reduce`` sums a float64 tensor over the ranks in place (identity
        when alone); ``derive(values)`` may add metrics computed from one
        micro-batch's global values (e.g. a margin between two of them).
        """
        if self.current:
            self.end_micro_batch()
        batches, self.batches = self.batches, []
        first_seen = list(dict.fromkeys(k for b in batches for k in b))
        names = sorted(first_seen)
        if not batches or not names:
            return {}
        # (micro-batches, names, 2): one all-reduce for everything since the last log.
        flat = [v for b in batches for k in names for v in b.get(k, (0.0, 0.0))]
        pairs = host_float64(flat).reshape(len(batches), len(names), 2)
        reduce(pairs)
        per_batch = []
        for row in pairs.tolist():
            values = {}
            for name, (total, count) in zip(names, row):
                if count > 0:
                    values[name] = total / count
                elif name in self.if_empty:
                    values[name] = self.if_empty[name]
            if derive is not None:
                values.update(derive(values))
            per_batch.append(values)
        order = first_seen + [k for v in per_batch for k in v if k not in first_seen]
        out = {}
        for name in dict.fromkeys(order):
            seen = [v[name] for v in per_batch if name in v]
            if seen:
                out[prefix + name] = sum(seen) / len(seen)
        return out


def _float64(value):
    """A float, or a detached float64 tensor on the value's own device (no host sync)."""
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(()).to(torch.float64)
    return float(value)


def host_float64(values: list) -> torch.Tensor:
    """``values`` (floats and 0-d tensors on any devices) as one float64 host tensor: one copy per device."""
    out = torch.tensor([0.0 if isinstance(v, torch.Tensor) else float(v) for v in values], dtype=torch.float64)
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        out[idx] = torch.stack([values[i].reshape(()).to(torch.float64) for i in idx]).cpu()
    return out
