"""Where logged metrics go: the console (a tqdm bar), ``metrics.jsonl``, TensorBoard.

``metrics.jsonl`` is the run's ``log_history``, one line per entry: it is
first rewritten (atomically) to the history the run starts from, so a run
resumed from an earlier checkpoint drops the entries logged after it instead
of appending them a second time, and then each new entry is appended.
"""

from __future__ import annotations

import json
import os

from tqdm.auto import tqdm

from shardkit import atomic


class MetricsLog:
    """Writes each logged dict to every sink the config asks for.

    ``enabled=False`` (every rank but 0 when several train) writes nothing.
    ``history``: the entries logged before (a resumed run's restored ``log_history``).
    """

    def __init__(self, args, total_steps: int, initial: int = 0, enabled: bool = True,
                 history: list[dict] = ()) -> None:
        self.bar = tqdm(total=total_steps, initial=initial, disable=args.disable_tqdm or not enabled, desc="train")
        self.jsonl = None
        self.tensorboard = None
        if not enabled:
            return
        if "jsonl" in args.report_to:
            path = os.path.join(args.output_dir, "metrics.jsonl")
            atomic.write_text(path, "".join(json.dumps(entry) + "\n" for entry in history))
            # Appends, not a rewrite per entry: a crash loses at most the line being written.
            self.jsonl = open(path, "a", encoding="utf-8")
        if "tensorboard" in args.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(f"report_to=['tensorboard'] needs the tensorboard package: {exc}") from None
            self.tensorboard = SummaryWriter(os.path.join(args.output_dir, "runs"))

    def write(self, entry: dict) -> None:
        if not self.bar.disable:
            self.bar.write(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(entry) + "\n")
            self.jsonl.flush()
        if self.tensorboard is not None:
            for key, value in entry.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, entry["step"])

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
