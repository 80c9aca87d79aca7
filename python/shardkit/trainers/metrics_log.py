"""Where logged metrics go: the console (a tqdm bar), ``metrics.jsonl``, TensorBoard."""

from __future__ import annotations

import json
import os

from tqdm.auto import tqdm


class MetricsLog:
    """Writes each logged dict to every sink the config asks for.

    ``enabled=False`` (every rank but 0 when several train) writes nothing.
    """

    def __init__(self, args, total_steps: int, initial: int = 0, enabled: bool = True) -> None:
        self.bar = tqdm(total=total_steps, initial=initial, disable=args.disable_tqdm or not enabled, desc="train")
        self.jsonl = None
        self.tensorboard = None
        if not enabled:
            return
        if "jsonl" in args.report_to:
            os.makedirs(args.output_dir, exist_ok=True)
            self.jsonl = open(os.path.join(args.output_dir, "metrics.jsonl"), "a", encoding="utf-8")
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
