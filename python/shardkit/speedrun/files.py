"""The run directory's files: written atomically, read without pickle.

::

    RUN/
      state.json               settings and the result of every finished stage
      tokenizer/tokenizer.json
      pretrain/ sft/ dpo/ grpo/ train.jsonl (+ eval.jsonl), model.safetensors,
                               result.json, metrics.jsonl, checkpoint-*/
      report.md, *.png
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shardkit import atomic

# The project's one atomic writer (temp file in the same folder, fsync, rename, fsync the folder).
from shardkit.atomic import write_atomic


def write_json(path: str | os.PathLike, value: Any) -> None:
    atomic.write_json(path, value, indent=1)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def tokenizer_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "tokenizer" / "tokenizer.json"


def stage_dir(run_dir: str | os.PathLike, stage: str) -> Path:
    return Path(run_dir) / stage
