"""Meta-device initialisation: build a model on ``torch.device("meta")``, materialise it one unit at a time.

``shard()`` calls ``materialize_unit`` for each unit in turn, then flattens
the unit and keeps this rank's shard before the next unit exists, so a rank
never holds more than one unit's full parameters (plus the flat copy made
while flattening it) besides its shards.

Every rank must produce the same values without communicating. Each unit is
therefore initialised under its own seed, ``unit_seed(seed, unit index)``,
inside ``torch.random.fork_rng`` (the caller's RNG stream is untouched), by
calling on every module that directly holds one of the unit's parameters or
buffers either ``param_init_fn(module)`` or, without one, ``module.reset_parameters()``.
Parameters of that module that belong to another unit (a tied weight, or a
unit already flattened) are swapped for meta placeholders meanwhile, so the
call writes this unit's parameters only and draws the same random numbers
whether the other units exist yet or not. ``initialize_units`` runs the same
procedure on a model built on CPU, which gives a single-process reference
with exactly the values a meta-built sharded model starts from.

Fresh floating-point tensors are filled with NaN first: a parameter or
buffer still holding a NaN after the init was not written by it, and is
reported by name instead of training on garbage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from shardkit.fsdp.units import assign_parameters, enclosing_unit, select_units

_SEED_STRIDE = 1_000_003  # a prime: distinct (seed, unit) pairs give distinct seeds for any realistic unit count


def unit_seed(seed: int, index: int) -> int:
    """The RNG seed unit ``index`` (0 = the root) is initialised under."""
    return (seed * _SEED_STRIDE + index) % 2**63


def is_meta_model(model: nn.Module) -> bool:
    """True when the parameters live on the meta device; ValueError when only some tensors do."""
    params = [p for p in model.parameters()]
    meta_params = any(p.is_meta for p in params)
    meta_buffers = [n for n, b in model.named_buffers() if b.is_meta]
    if meta_buffers and params and not meta_params:
        raise ValueError(f"model: buffers {meta_buffers[:5]} are on the meta device but the parameters are not; "
                         "build the whole model under torch.device('meta') or on CPU")
    return meta_params or bool(meta_buffers)


def check_init_args(param_init_fn, seed) -> None:
    if param_init_fn is not None and not callable(param_init_fn):
        raise TypeError(f"param_init_fn: expected a callable module -> None, got {type(param_init_fn).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {seed!r}")


def parameter_registrations(owned) -> dict[tuple[int, str], tuple[str, torch.Size, torch.dtype, bool]]:
    """``{(id(module), attr): (owning unit, shape, dtype, requires_grad)}`` for every parameter registration."""
    out = {}
    for path, entries in owned.items():
        for p, uses in entries:
            for module, attr, _ in uses:
                out[(id(module), attr)] = (path, p.shape, p.dtype, p.requires_grad)
    return out


def _fresh(like: torch.Tensor) -> torch.Tensor:
    """An uninitialised CPU tensor shaped like ``like``; NaN where the dtype has one."""
    if like.is_floating_point() or like.is_complex():
        return torch.full(like.shape, float("nan"), dtype=like.dtype)
    return torch.empty(like.shape, dtype=like.dtype)


@contextlib.contextmanager
def _others_as_placeholders(modules, path: str, registrations):
    """Inside, every parameter of ``modules`` owned by a unit other than ``path`` is a meta tensor."""
    stashed = []
    for module in modules:
        for (owner, attr), (unit, shape, dtype, requires_grad) in registrations.items():
            if owner != id(module) or unit == path:
                continue
            stashed.append((module, attr, module._parameters.get(attr), module.__dict__.pop(attr, None)))
            module._parameters[attr] = nn.Parameter(torch.empty(shape, dtype=dtype, device="meta"),
                                                    requires_grad=requires_grad)
    try:
        yield
    finally:
        for module, attr, param, view in stashed:
            if param is None:
                module._parameters.pop(attr, None)
            else:
                module._parameters[attr] = param
            if view is not None:
                module.__dict__[attr] = view


def _init_modules(model: nn.Module, path: str, unit_paths: list[str], entries) -> list[tuple[str, nn.Module]]:
    """Modules that directly hold a parameter of this unit, or a buffer in this unit's part of the tree."""
    mine = {id(p) for p, _ in entries}
    out = []
    for name, module in model.named_modules():
        holds_param = any(p is not None and id(p) in mine for p in module._parameters.values())
        holds_buffer = bool(module._buffers) and enclosing_unit(name, unit_paths) == path
        if holds_param or holds_buffer:
            out.append((name, module))
    return out


def _initialise(model, path, index, unit_paths, entries, registrations, *, seed, param_init_fn, materialized) -> None:
    modules = _init_modules(model, path, unit_paths, entries)
    placeholders = _others_as_placeholders([m for _, m in modules], path, registrations)
    with placeholders, torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(unit_seed(seed, index))
        for name, module in modules:
            if param_init_fn is not None:
                param_init_fn(module)
            elif callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
            elif materialized:
                # The first parameter of this unit it holds (the others are placeholders), or else a buffer.
                held = [n for n, _ in module.named_parameters(recurse=False) if registrations[(id(module), n)][0] == path]
                held += [n for n, _ in module.named_buffers(recurse=False)]
                first = f"{name}.{held[0]}" if name else held[0]
                raise ValueError(f"model: {first!r} is on the meta device and would stay uninitialised: "
                                 f"{type(module).__name__} has no reset_parameters(); pass shard(..., param_init_fn=fn) "
                                 "with fn(module) initialising it")
    if materialized:
        _check_written(modules, entries, path, unit_paths)


def _check_written(modules, entries, path, unit_paths) -> None:
    for p, uses in entries:
        if p.is_floating_point() and torch.isnan(p).any():
            raise ValueError(f"model: parameter {uses[0][2]!r} was materialised from the meta device but "
                             "not written by reset_parameters() / param_init_fn; initialise it there")
    for name, module in modules:
        if enclosing_unit(name, unit_paths) != path:
            continue
        for bname, b in module.named_buffers(recurse=False):
            if b.is_floating_point() and torch.isnan(b).any():
                full = f"{name}.{bname}" if name else bname
                raise ValueError(f"model: buffer {full!r} was materialised from the meta device but "
                                 "not written by reset_parameters() / param_init_fn; initialise it there")


def materialize_unit(model: nn.Module, path: str, index: int, unit_paths: list[str], owned, registrations, *,
                     seed: int, param_init_fn: Callable[[nn.Module], None] | None):
    """Replace unit ``path``'s meta parameters (and its modules' meta buffers) by initialised CPU tensors.

    Returns the unit's ``[(param, uses), ...]`` entries with the new parameters
    (every place a tied parameter is registered points at the same new tensor).
    """
    entries = []
    for p, uses in owned[path]:
        fresh = nn.Parameter(_fresh(p), requires_grad=p.requires_grad)
        for module, attr, _ in uses:
            module._parameters[attr] = fresh
        entries.append((fresh, uses))
    for name, module in model.named_modules():
        if enclosing_unit(name, unit_paths) == path:
            for bname, b in module._buffers.items():
                if b is not None and b.is_meta:
                    module._buffers[bname] = _fresh(b)
    _initialise(model, path, index, unit_paths, entries, registrations,
                seed=seed, param_init_fn=param_init_fn, materialized=True)
    return entries


def initialize_units(model: nn.Module, *, units=None, seed: int = 0,
                     param_init_fn: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """Re-initialise a CPU model in place exactly as ``shard()`` initialises a meta-device one.

    With the same ``units``, ``seed`` and ``param_init_fn``, the result holds
    the values a model built under ``torch.device("meta")`` and passed to
    ``shard(..., seed=seed, param_init_fn=param_init_fn)`` starts from, which
    makes it the unsharded reference of such a run. Returns ``model``.
    """
    check_init_args(param_init_fn, seed)
    if is_meta_model(model):
        raise ValueError("model: initialize_units re-initialises a CPU model; pass a meta-device model to shard()")
    unit_paths = select_units(model, units)
    owned = assign_parameters(model, unit_paths)
    registrations = parameter_registrations(owned)
    for index, path in enumerate(unit_paths):
        _initialise(model, path, index, unit_paths, owned[path], registrations,
                    seed=seed, param_init_fn=param_init_fn, materialized=False)
    return model
