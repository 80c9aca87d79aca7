"""Model averaging ("model soups", as in the Llama 3 and Qwen 2.5 recipes): a weighted mean of checkpoints.

``average_checkpoints(["a", "b", "c"], weights=[2, 1, 1], out="soup")`` or
``shardkit average --models a b c --weights 2 1 1 --out soup``. Each model
is one of:

- a ``.safetensors`` file (``save_model``, ``save_full_state_dict``, HF);
- a directory holding ``model.safetensors`` (a trainer checkpoint, an HF save),
  or ``model.safetensors.index.json`` with its shard files (HF sharded);
- a shardkit sharded checkpoint (``layout.json`` + ``shard-*.safetensors``,
  written by ``shardkit.fsdp.save_sharded_checkpoint`` with any number of ranks).

Weights: one per model, finite and >= 0, not all 0. With ``normalize=True``
(the default) they are divided by their sum, so ``[2, 1, 1]`` means
``[0.5, 0.25, 0.25]``; with ``normalize=False`` they are used as given (the
result is then a weighted *sum*, e.g. to rescale). No weights = the plain mean.

Every model must have the same tensor names and shapes (a mismatch raises
``ValueError`` naming the tensor). Floating tensors are accumulated in
float64 and written in their own dtype (bf16 stays bf16); other tensors
(integer buffers) must be equal in all models and are copied. Tensors are
read one at a time (lazily, by safetensors), so memory is about one output
model plus one tensor per input. The output is one safetensors file written
by ``shardkit.atomic``; tied names are stored once (metadata
``shardkit.tied``, as ``save_full_state_dict``) and the sources and weights go
in the metadata ``shardkit.average``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import torch

from shardkit import atomic


class _Checkpoint:
    """Lazy ``{name: tensor}`` view of one model file or directory; ``tied`` maps alias names to stored ones."""

    def __init__(self, path: str | os.PathLike, where: str) -> None:
        from safetensors import safe_open

        self.path, self.where = os.fspath(path), where
        self.tied: dict[str, str] = {}
        self._files: dict[str, object] = {}  # name -> safe_open handle
        self._sharded: dict | None = None
        path = self.path
        if os.path.isdir(path):
            atomic.recover_dir(path)
            if os.path.isfile(os.path.join(path, "layout.json")):
                self._open_sharded(path)
                return
            index = os.path.join(path, "model.safetensors.index.json")
            if os.path.isfile(index):
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
                handles = {}
                for name, file in weight_map.items():
                    if file not in handles:
                        handles[file] = safe_open(os.path.join(path, file), framework="pt")
                    self._files[name] = handles[file]
                return
            single = os.path.join(path, "model.safetensors")
            if not os.path.isfile(single):
                raise FileNotFoundError(
                    f"{where}: {path!r} holds no model.safetensors, model.safetensors.index.json or layout.json"
                )
            path = single
        elif not os.path.isfile(path):
            raise FileNotFoundError(f"{where}: {path!r} does not exist")
        handle = safe_open(path, framework="pt")
        self.tied = json.loads((handle.metadata() or {}).get("shardkit.tied", "{}"))
        for name in handle.keys():  # noqa: SIM118  (a safe_open handle is not iterable)
            self._files[name] = handle

    def _open_sharded(self, path: str) -> None:
        from safetensors import safe_open

        with open(os.path.join(path, "layout.json")) as f:
            layout = json.load(f)
        world = int(layout["world_size"])
        files = [os.path.join(path, f"shard-{r:05d}-of-{world:05d}.safetensors") for r in range(world)]
        missing = [os.path.basename(p) for p in files if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{self.where}: {path!r} misses {missing} of a {world}-rank sharded checkpoint")
        self._sharded = {
            "layout": layout,
            "handles": [safe_open(p, framework="pt") for p in files],
            "where": {},
            "cache": (None, None),
        }
        for k, group in enumerate(layout["groups"]):
            offset = 0
            for names, shape in zip(group["names"], group["shapes"]):
                numel = math.prod(shape)
                self._sharded["where"][names[0]] = (k, offset, numel, tuple(shape))
                for alias in names[1:]:
                    self.tied[alias] = names[0]
                offset += numel

    def keys(self) -> list[str]:
        return list(self._sharded["where"]) if self._sharded is not None else list(self._files)

    def get(self, name: str) -> torch.Tensor:
        if self._sharded is None:
            return self._files[name].get_tensor(name)
        k, offset, numel, shape = self._sharded["where"][name]
        cached_k, flat = self._sharded["cache"]
        if cached_k != k:  # one flat group in memory at a time
            info = self._sharded["layout"]["groups"][k]
            handles = self._sharded["handles"] if info["sharded"] else self._sharded["handles"][:1]
            flat = torch.cat([h.get_tensor(f"flat.{k}") for h in handles])[: info["numel"]]
            self._sharded["cache"] = (k, flat)
        return flat[offset : offset + numel].view(shape).clone()


def check_weights(weights: Sequence[float] | None, n: int, normalize: bool = True) -> list[float]:
    """The weights to use for ``n`` models (see the module docstring); raises ``ValueError`` naming ``weights``."""
    if n < 1:
        raise ValueError("models: need at least one model to average")
    if weights is None:
        return [1.0 / n] * n
    weights = list(weights)
    if len(weights) != n:
        raise ValueError(f"weights: expected {n} weights (one per model), got {len(weights)}")
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"weights[{i}]: expected a finite number >= 0, got {w!r}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights: all weights are 0")
    return [float(w) / total for w in weights] if normalize else [float(w) for w in weights]


def _average_one(name: str, tensors: list[torch.Tensor], weights: list[float], labels: list[str]) -> torch.Tensor:
    first = tensors[0]
    for t, label in zip(tensors[1:], labels[1:]):
        if t.shape != first.shape:
            raise ValueError(f"tensor {name!r}: shape {tuple(t.shape)} in {label}, {tuple(first.shape)} in {labels[0]}")
        if t.dtype != first.dtype:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} in {label}, {first.dtype} in {labels[0]}")
    if not first.is_floating_point():
        for t, label in zip(tensors[1:], labels[1:]):
            if not torch.equal(t, first):
                raise ValueError(
                    f"tensor {name!r}: a {first.dtype} tensor cannot be averaged and differs "
                    f"between {labels[0]} and {label}"
                )
        return first.clone()
    acc = torch.zeros(first.shape, dtype=torch.float64)
    for t, w in zip(tensors, weights):
        acc.add_(t.to(torch.float64), alpha=w)
    return acc.to(first.dtype)


def average_state_dicts(
    states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None, normalize: bool = True
) -> dict[str, torch.Tensor]:
    """The weighted average of in-memory state dicts (same names, shapes and dtypes), each tensor in its dtype."""
    w = check_weights(weights, len(states), normalize)
    labels = [f"models[{i}]" for i in range(len(states))]
    _check_names([list(s) for s in states], labels)
    return {name: _average_one(name, [s[name].detach().cpu() for s in states], w, labels) for name in states[0]}


def _check_names(names: list[list[str]], labels: list[str]) -> None:
    first = set(names[0])
    for other, label in zip(names[1:], labels[1:]):
        missing, extra = sorted(first - set(other)), sorted(set(other) - first)
        if missing:
            raise ValueError(
                f"tensor {missing[0]!r} is in {labels[0]} but not in {label} ({len(missing)} missing in all)"
            )
        if extra:
            raise ValueError(f"tensor {extra[0]!r} is in {label} but not in {labels[0]} ({len(extra)} extra in all)")


def average_checkpoints(
    models: Sequence[str | os.PathLike],
    weights: Sequence[float] | None = None,
    out: str | os.PathLike | None = None,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """Average the checkpoints ``models`` (see the module docstring); write to ``out`` when given.

    ``out`` ending in ``.safetensors`` is the file; any other path is a
    directory that gets ``model.safetensors``. Returns the averaged tensors.
    """
    if isinstance(models, (str, os.PathLike)):
        raise TypeError("models: expected a list of paths, got a single path")
    w = check_weights(weights, len(models), normalize)
    labels = [f"models[{i}] ({os.fspath(p)!r})" for i, p in enumerate(models)]
    sources = [_Checkpoint(p, label) for p, label in zip(models, labels)]
    names = [s.keys() for s in sources]
    _check_names(names, labels)
    tied = dict(sources[0].tied)
    result = {name: _average_one(name, [s.get(name) for s in sources], w, labels) for name in names[0]}
    if out is not None:
        from safetensors.torch import save_file

        out = os.fspath(out)
        path = out if out.endswith(".safetensors") else os.path.join(out, "model.safetensors")
        metadata = {
            "format": "pt",
            "shardkit.tied": json.dumps(tied),
            "shardkit.average": json.dumps(
                {"models": [os.fspath(p) for p in models], "weights": w, "normalize": normalize}
            ),
        }
        atomic.write_atomic(
            path, lambda tmp: save_file({k: v.contiguous() for k, v in result.items()}, tmp, metadata=metadata)
        )
    return result


__all__ = ["average_checkpoints", "average_state_dicts", "check_weights"]
