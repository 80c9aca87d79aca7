"""Knowledge experiments that rerun published claims with shardkit's model, tokenizer and trainers.

``shardkit experiments NAME --preset micro|default|gpu --out DIR``, or::

    from shardkit.experiments import run_experiment
    results = run_experiment("reversal", preset="micro", out="runs/reversal")

- ``reversal``: the reversal curse (arXiv:2309.12288), see :mod:`.reversal`;
- ``biographies``: Physics of Language Models 3.1 (arXiv:2309.14316), see :mod:`.biographies`;
- ``scaling``: L(N) of Kaplan et al. (arXiv:2001.08361), see :mod:`.scaling`.

Each writes ``results.json``, ``report.md`` (measured figures beside the
paper's) and PNG figures into its directory, and skips the parts that a
previous run in the same directory finished.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

EXPERIMENTS = ("reversal", "biographies", "scaling")
PRESET_NAMES = ("micro", "default", "gpu")


def presets(name: str) -> dict:
    """The presets of experiment ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"name: expected one of {EXPERIMENTS}, got {name!r}")
    return importlib.import_module(f"shardkit.experiments.{name}").PRESETS


def run_experiment(
    name: str,
    *,
    preset: str = "default",
    out: str | Path | None = None,
    device: str = "cpu",
    seed: int | None = None,
    restart: bool = False,
) -> dict:
    """Run (or resume) one experiment; returns its ``results.json`` contents."""
    from shardkit.experiments.runner import RunDir

    table = presets(name)
    if preset not in table:
        raise ValueError(f"preset: expected one of {sorted(table)}, got {preset!r}")
    settings = copy.deepcopy(table[preset])
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed: expected an int, got {seed!r}")
        settings["seed"] = seed
    settings["preset"] = preset
    run_dir = RunDir(
        out or f"experiments-{name}-{preset}",
        experiment=name,
        preset=preset,
        config=settings,
        restart=restart,
    )
    module = importlib.import_module(f"shardkit.experiments.{name}")
    # The device is not part of the stored settings: a run started on one device may be finished on another.
    return module.run(run_dir, {**settings, "device": str(device)})


__all__ = ["EXPERIMENTS", "PRESET_NAMES", "presets", "run_experiment"]
