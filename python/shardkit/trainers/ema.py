"""An exponential moving average (EMA) of the trained weights: ``TrainingConfig.ema_decay``.

With ``ema_decay=d`` every trainer keeps, after each optimizer step, an fp32
shadow of each trainable parameter, with ``torch.optim.swa_utils``'
semantics: the first update copies the weights, later ones do
``ema = d * ema + (1 - d) * w``. Then:

- ``evaluate()`` runs on the EMA weights (swapped in, and back afterwards);
- every checkpoint carries ``ema.safetensors``, so a resumed run continues
  the same average;
- at the end of ``train()`` the model with the EMA weights is written to
  ``output_dir/model_ema.safetensors`` (same names as ``model.safetensors``;
  load it with ``safetensors.torch.load_model``). The trained weights stay in
  ``trainer.model`` and in the checkpoints.

One process only for now: a model sharded over several ranks raises.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from shardkit import atomic
from shardkit.trainers import data_parallel

FILE = "ema.safetensors"


class EMA:
    """The shadow weights of ``model``'s trainable parameters (fp32) and the number of updates."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if data_parallel.is_sharded(model):
            raise NotImplementedError("ema_decay: a model sharded over several ranks is not supported yet")
        self.model, self.decay = model, float(decay)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.num_updates = 0

    @classmethod
    def for_trainer(cls, trainer) -> EMA | None:
        """The trainer's EMA when ``args.ema_decay`` is set, else None."""
        decay = getattr(trainer.args, "ema_decay", None)
        return None if decay is None else cls(trainer.model, decay)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights in (call after each optimizer step)."""
        current = [p.detach().float() for p in self.params]
        if self.num_updates == 0:
            torch._foreach_copy_(self.shadow, current)
        else:
            torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)
        self.num_updates += 1

    @contextlib.contextmanager
    def applied(self):
        """The EMA weights in the model for the duration of the block (the trained ones restored after)."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"ema.{n}": s for n, s in zip(self.names, self.shadow)}
        out["num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor], where: str = "ema") -> None:
        expected = {f"ema.{n}" for n in self.names} | {"num_updates"}
        if set(tensors) != expected:
            raise ValueError(
                f"{where}: the EMA state does not fit the model: missing "
                f"{sorted(expected - set(tensors))[:5]}, unexpected {sorted(set(tensors) - expected)[:5]}"
            )
        with torch.no_grad():
            for n, s in zip(self.names, self.shadow):
                s.copy_(tensors[f"ema.{n}"])
        self.num_updates = int(tensors["num_updates"])

    def save(self, directory: str) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}
        atomic.write_atomic(os.path.join(directory, FILE), lambda path: save_file(tensors, path))

    def load(self, directory: str) -> None:
        from safetensors.torch import load_file

        path = os.path.join(directory, FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"resume_from_checkpoint={directory!r}: ema_decay is set but the checkpoint "
                f"has no {FILE} (it was saved without EMA)"
            )
        self.load_state_dict(load_file(path), where=path)

    def save_model(self, path: str) -> None:
        """The model with the EMA weights, as ``safetensors.torch.save_model`` writes it (atomically)."""
        from safetensors.torch import save_model

        with self.applied():
            atomic.write_atomic(path, lambda tmp: save_model(self.model, tmp))


def applied(trainer):
    """``trainer.ema.applied()`` when the trainer keeps an EMA, else a no-op context."""
    ema = getattr(trainer, "ema", None)
    return contextlib.nullcontext() if ema is None else ema.applied()
