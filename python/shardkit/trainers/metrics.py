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
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]


class MetricBuffer:
    """The metrics of the micro-batches since the last log."""

    def __init__(self) -> None:
        self.batches: list[dict[str, tuple[float, float]]] = []
        self.current: dict[str, tuple[float, float]] = {}
        self.if_empty: dict[str, float] = {}

    def add(self, name: str, total: float, count: float = 1.0, if_empty: float | None = None) -> None:
        """Add ``total`` over ``count`` items to ``name`` in the current micro-batch.

        A micro-batch whose global count is 0 logs ``if_empty``, or is left
        out of the mean when it is None.
        """
        s, c = self.current.get(name, (0.0, 0.0))
        self.current[name] = (s + float(total), c + float(count))
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
        pairs = torch.tensor([[b.get(k, (0.0, 0.0)) for k in names] for b in batches], dtype=torch.float64)
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
