"""Count the bytes a training step really holds, to check the estimate.

Model states: unique storages of parameters, their ``.grad`` and the
optimizer's state tensors. Activations: unique storages that autograd saves
for backward, seen through ``torch.autograd.graph.saved_tensors_hooks``.
Storages are keyed by their C++ storage object, so views of one buffer count
once and meta-device tensors (which all have data pointer 0) still count.
A DTensor counts as its local shard (what this rank holds); a pending
functional-collective result as the buffer it wraps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor whose storage this rank really holds: a DTensor's local shard, an
    ``AsyncCollectiveTensor``'s buffer (its wrapper's storage is a placeholder that dies early)."""
    local = getattr(tensor, "_local_tensor", None)  # DTensor
    tensor = tensor if local is None else local
    elem = getattr(tensor, "elem", None)  # torch.distributed._functional_collectives.AsyncCollectiveTensor
    return elem if isinstance(elem, torch.Tensor) else tensor


def _storage_key(tensor: torch.Tensor) -> int:
    return _local(tensor).untyped_storage()._cdata


def unique_storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a view costs its whole storage)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            seen[_storage_key(tensor)] = _local(tensor).untyped_storage().nbytes()
    return sum(seen.values())


def optimizer_state_tensors(optimizer: torch.optim.Optimizer, *, masters: bool = False) -> list[torch.Tensor]:
    """The tensors in ``optimizer.state``: its fp32 master weights (``master_param``, kept by the
    fused optimizers for bf16/fp16 parameters) when ``masters``, else everything else (moments,
    momentum buffers, step counters)."""
    return [value for state in optimizer.state.values() for key, value in state.items()
            if isinstance(value, torch.Tensor) and (key == "master_param") == masters]


def model_state_bytes(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None, master_weights: Iterable[torch.Tensor] = ()
) -> dict[str, int]:
    """Measured bytes of params, grads, master weights and optimizer state.

    Master weights are the fp32 copies a mixed-precision loop keeps outside the
    model, ``master_weights`` (their own ``.grad`` is not counted: it is
    transient in such loops), plus those a fused optimizer keeps in its state.
    """
    params = list({id(p): p for p in model.parameters()}.values())
    masters = list(master_weights)
    if optimizer is not None:
        masters += optimizer_state_tensors(optimizer, masters=True)
    return {
        "params": unique_storage_bytes(params),
        "grads": unique_storage_bytes(p.grad for p in params if p.grad is not None),
        "master_weights": unique_storage_bytes(masters),
        "optimizer_state": unique_storage_bytes(optimizer_state_tensors(optimizer)) if optimizer else 0,
    }


class SavedActivationCounter:
    """Context manager counting the distinct storages autograd saves for backward.

    Parameters and buffers of ``exclude`` are not activations and are skipped.
    Only storages still alive when read are counted, so a graph dropped inside
    the context does not inflate the total. DTensors count as their local
    shards. ``track_peak=True`` also keeps ``peak_bytes``, the most saved
    bytes alive at once: live bytes only grow when something is saved, so
    summing them at every save finds the exact peak (a pipeline rank's
    in-flight micro-batches), at a cost linear in the live saves per save. Inside a region that installs its
    own hooks (a checkpointed block), only what that region keeps through the
    outer hooks is seen, which for non-reentrant checkpointing is its inputs:
    exactly the memory it holds.

        with SavedActivationCounter(exclude=model) as saved:
            loss = model(x)
        saved.bytes
    """

    def __init__(self, exclude: nn.Module | Iterable[torch.Tensor] | None = None, *, track_peak: bool = False):
        if isinstance(exclude, nn.Module):
            tensors: Iterable[Any] = [*exclude.parameters(), *exclude.buffers()]
        else:
            tensors = exclude or ()
        self._excluded = {_storage_key(t) for t in tensors}
        self._seen: dict[int, tuple[StorageWeakRef, int, str]] = {}
        self._tag = ""
        self._track_peak = track_peak
        self.peak_bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda saved: saved)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in self._excluded:
            known = self._seen.get(key)
            if known is None or known[0].expired():  # a freed storage's key can be reused
                storage = _local(tensor).untyped_storage()
                self._seen[key] = (StorageWeakRef(storage), storage.nbytes(), self._tag)
            if self._track_peak:
                self._seen = {k: v for k, v in self._seen.items() if not v[0].expired()}
                self.peak_bytes = max(self.peak_bytes, sum(v[1] for v in self._seen.values()))
        # Returning ``tensor`` itself would make a saved output own its own
        # grad_fn: a reference cycle through C++ that is never freed. A detached
        # alias shares the storage; autograd restores the graph links on unpack.
        return tensor.detach()

    def set_tag(self, tag: str) -> None:
        """Attribute storages first saved from now on to ``tag`` (e.g. a block name)."""
        self._tag = tag

    def __enter__(self) -> SavedActivationCounter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)

    def _live(self) -> list[tuple[int, str]]:
        return [(nbytes, tag) for ref, nbytes, tag in self._seen.values() if not ref.expired()]

    @property
    def bytes(self) -> int:
        """Bytes of the saved storages that are still alive."""
        return sum(nbytes for nbytes, _ in self._live())

    def bytes_by_tag(self) -> dict[str, int]:
        """Alive saved bytes grouped by the tag that was set when each was first saved."""
        totals: dict[str, int] = {}
        for nbytes, tag in self._live():
            totals[tag] = totals.get(tag, 0) + nbytes
        return totals
