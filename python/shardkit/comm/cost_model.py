"""The alpha-beta cost model behind ``algo="auto"``, and its calibration cache.

Time of one all-reduce of ``n`` bytes over ``p`` ranks, as NCCL's tuner
models it (latency + bytes / bandwidth, per algorithm), with ``alpha`` the
per-message latency in seconds and ``beta`` seconds per byte:

* ring: ``2 (p-1) alpha + 2 (p-1)/p n beta`` (reduce-scatter then all-gather;
  each rank sends ``2 (p-1)/p n`` bytes in ``2 (p-1)`` steps);
* double binary tree: ``2 ceil(log2 p) alpha + 2 n beta`` (up then down each
  tree, whose depth is about log2 p; each tree carries n/2, every rank sends
  and receives both halves once, so 2 n bytes pass each link).

The constants differ per algorithm (the tree's chunks move through more
hands per byte), so each has its own pair. ``calibrate()`` measures them on
this machine and caches them per (host, local world size) in
``$SHARDKIT_CACHE_DIR/comm_model.json`` (default ``~/.cache/shardkit``).

A calibrated model also keeps the times it measured, and ``choose`` follows
them: at a size, ``algo="auto"`` takes the algorithm that was measured faster
at the nearest calibrated size. Two straight lines fitted through two sizes
can cross in the wrong place, and the measurement is what was asked for.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

from shardkit import atomic

# Uncalibrated defaults for the shared-memory transport: a few microseconds
# per message, one core's copy bandwidth (about 6 GB/s).
_DEFAULT_ALPHA = 3e-6
_DEFAULT_BETA = 1.0 / 6e9


@dataclass(frozen=True, kw_only=True)
class AlgoCost:
    """Constants of one algorithm."""

    alpha: float = field(default=_DEFAULT_ALPHA, metadata={"help": "latency per message step, seconds"})
    beta: float = field(default=_DEFAULT_BETA, metadata={"help": "seconds per byte on one link"})


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """Per-algorithm constants; ``source`` says where they came from."""

    ring: AlgoCost = field(default_factory=AlgoCost, metadata={"help": "ring all-reduce constants"})
    tree: AlgoCost = field(default_factory=AlgoCost, metadata={"help": "double-binary-tree constants"})
    source: str = field(default="defaults", metadata={"help": "'defaults', 'calibrated' or 'user'"})
    measured: tuple[tuple[int, float, float], ...] = field(
        default=(), metadata={"help": "calibration's (bytes, ring seconds, tree seconds), by size"})

    def ring_time(self, world: int, nbytes: float) -> float:
        """Predicted seconds of a ring all-reduce."""
        if world <= 1:
            return 0.0
        return 2 * (world - 1) * self.ring.alpha + 2 * (world - 1) / world * nbytes * self.ring.beta

    def tree_time(self, world: int, nbytes: float) -> float:
        """Predicted seconds of a double-binary-tree all-reduce."""
        if world <= 1:
            return 0.0
        return 2 * math.ceil(math.log2(world)) * self.tree.alpha + 2 * nbytes * self.tree.beta

    def choose(self, world: int, nbytes: float) -> str:
        """``"ring"`` or ``"tree"``: the one measured faster at the calibrated size nearest to
        ``nbytes`` (on a log scale), else the one predicted faster; ring on ties."""
        if self.measured:
            size = max(float(nbytes), 1.0)
            _, ring, tree = min(self.measured, key=lambda row: abs(math.log2(row[0] / size)))
            return "tree" if tree < ring else "ring"
        return "tree" if self.tree_time(world, nbytes) < self.ring_time(world, nbytes) else "ring"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> CostModel:
        measured = tuple((int(n), float(r), float(t)) for n, r, t in data.get("measured", ()))
        return CostModel(
            ring=AlgoCost(**data["ring"]), tree=AlgoCost(**data["tree"]), source=str(data.get("source", "user")),
            measured=measured,
        )


def cache_path() -> str:
    """Where calibrated constants are kept."""
    root = os.environ.get("SHARDKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "shardkit")
    return os.path.join(root, "comm_model.json")


def cache_key(host: str, local_world: int) -> str:
    return f"{host}/{local_world}"


def load_cached(key: str) -> CostModel | None:
    """The cached model for ``key``, or None (missing or unreadable cache)."""
    try:
        with open(cache_path(), encoding="utf-8") as f:
            entry = json.load(f).get(key)
        return None if entry is None else CostModel.from_dict(entry)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_cached(key: str, model: CostModel) -> None:
    """Add ``model`` under ``key``, atomically (temp file + rename)."""
    path = cache_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[key] = model.to_dict()
    atomic.write_json(path, data, indent=1, sort_keys=True)


def fit(world: int, small: int, large: int, times: dict[str, tuple[float, float]],
        measured: tuple[tuple[int, float, float], ...] = ()) -> CostModel:
    """Solve each algorithm's (alpha, beta) from its times at two sizes.

    ``times[algo] = (seconds at `small` bytes, seconds at `large` bytes)``;
    ``measured`` (every calibrated size's times) is kept for ``choose``.
    """
    out = {}
    for algo, (t_small, t_large) in times.items():
        if algo == "ring":
            steps, volume = 2 * (world - 1), 2 * (world - 1) / world
        else:
            steps, volume = 2 * math.ceil(math.log2(world)), 2.0
        beta = max((t_large - t_small) / (volume * (large - small)), 1e-13)
        alpha = max((t_small - volume * small * beta) / steps, 1e-8)
        out[algo] = AlgoCost(alpha=alpha, beta=beta)
    return CostModel(ring=out["ring"], tree=out["tree"], source="calibrated", measured=tuple(measured))
