"""A run directory and its finished parts: what makes ``shardkit experiments`` resumable.

``state.json`` holds the experiment, its resolved settings and the result of
every finished part (a training run, an evaluation). Running again with the
same ``--out`` skips those parts; a part interrupted half way is run again
from its start (parts are minutes at most). Other settings in the same
directory are refused rather than mixed.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shardkit import atomic


class RunDir:
    """One experiment's directory.

    Args:
        out: the directory (created).
        experiment: the experiment's name.
        preset: the preset's name.
        config: the resolved settings; must match what ``out`` already holds.
        restart: delete what ``out`` holds first.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        experiment: str,
        preset: str,
        config: dict,
        restart: bool = False,
    ) -> None:
        self.path = Path(out).resolve()
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        state_file = self.path / "state.json"
        # Settings compare as JSON would store them (tuples become lists).
        config = json.loads(json.dumps(config))
        if state_file.exists():
            with open(state_file, encoding="utf-8") as f:
                self.state = json.load(f)
            if (
                self.state.get("experiment") != experiment
                or self.state.get("config") != config
            ):
                raise ValueError(
                    f"--out {self.path} holds a {self.state.get('experiment')!r} run with other settings "
                    f"(preset {self.state.get('preset')!r}); pass --restart to start over or another --out"
                )
        else:
            self.state = {
                "experiment": experiment,
                "preset": preset,
                "config": config,
                "parts": {},
            }
            self._save()

    def _save(self) -> None:
        atomic.write_json(self.path / "state.json", self.state, indent=1)

    def done(self, name: str) -> bool:
        return name in self.state["parts"]

    def part(self, name: str, fn: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """The result of part ``name``: stored, or ``fn(part_dir)`` run now and stored."""
        if self.done(name):
            print(f"experiments: {name}: already done, skipped")
            return self.state["parts"][name]
        print(f"experiments: {name}")
        directory = self.path / name
        if directory.exists():
            shutil.rmtree(directory)  # what an interrupted attempt left
        directory.mkdir(parents=True)
        started = time.perf_counter()
        result = fn(directory)
        result["seconds"] = round(time.perf_counter() - started, 2)
        self.state["parts"][name] = result
        self._save()
        return result

    def write_results(self, results: dict[str, Any]) -> Path:
        return atomic.write_json(self.path / "results.json", results, indent=1)

    def write_report(self, text: str) -> Path:
        return atomic.write_text(self.path / "report.md", text)
