"""``shardkit speedrun``: the whole life of a small language model on one machine, no network.

1. train a byte-level BPE tokenizer on the bundled English texts;
2. pretrain a GPT on them, FULL_SHARD over ``nproc`` local ranks (torchrun),
   bf16 weights with the fused AdamW's fp32 master weights;
3. SFT it on held-out-checked arithmetic in chat format ("738-469=?" -> "269"),
   mixed with replayed pretraining text so the prose is not forgotten;
4. DPO it on pairs that prefer the right answer to the SFT model's own wrong one;
5. GRPO it on training problems, rewarded for the exact answer and its format;
6. evaluate after every stage (held-out perplexity, arithmetic exact match,
   DPO reward accuracy, samples) and write ``report.md`` with PNG plots.

::

    from shardkit.speedrun import run
    report = run("speedrun-out", preset="tiny")   # or: shardkit speedrun

Rerunning with the same settings continues from the last finished stage.
See :mod:`shardkit.speedrun.config` for the presets and the TOML overrides.
"""

from __future__ import annotations

from pathlib import Path

from shardkit.speedrun.config import PRESETS, load_toml, resolve
from shardkit.speedrun.launch import default_nproc
from shardkit.speedrun.pipeline import STAGES, Speedrun


def run(out: str | Path = "speedrun-out", *, preset: str = "tiny", config: str | Path | dict | None = None,
        nproc: int | None = None, restart: bool = False, device: str = "auto") -> Path:
    """Run (or resume) a speedrun in ``out``; returns the path of ``report.md``.

    ``config`` is a TOML path or a ``{section: {key: value}}`` dict overriding
    the preset; ``device`` is ``auto`` (CUDA when present), ``cpu`` or ``cuda``
    (see ``speedrun.device``); ``nproc`` defaults to the GPU count on CUDA,
    else to the number of usable cores.
    """
    from shardkit.speedrun import device as devices

    where, gpus = devices.this_machine(device)
    nproc = nproc or devices.default_nproc(where, cuda_count=gpus, cores=default_nproc())
    devices.check_nproc(where, nproc, gpus)
    overrides = load_toml(config) if isinstance(config, (str, Path)) else (config or {})
    settings = resolve(preset, overrides)
    speedrun = Speedrun(out, settings, preset=preset, nproc=nproc, restart=restart, device=where)
    return speedrun.run()


__all__ = ["run", "resolve", "PRESETS", "STAGES", "Speedrun"]
