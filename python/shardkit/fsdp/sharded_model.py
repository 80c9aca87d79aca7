"""``shard()``: turn a model into ZeRO-style data parallelism over ``shardkit.comm``.

The schedule, per unit (see ``flat_param.FlatGroup`` for the buffers):

* forward pre-hook: gather the unit's full parameters and point the modules
  at them, then start gathering the next unit's in the background (the order
  is the one the previous iteration ran in; backward prefetches the other way);
* forward post-hook: FULL_SHARD frees them again (not the root, whose
  backward comes first); a hook on each output tensor gathers them again
  just before gradients flow into the unit;
* when a unit's gradient buffer is complete (a post-accumulate-grad hook on
  the flat leaf) its reduction starts asynchronously and the full
  parameters are freed; a callback at the end of backward waits for the
  reductions and frees what is left (frozen groups).

HYBRID runs the FULL_SHARD schedule inside each host (``hybrid.py``); once a
unit's reduce-scatter is done (checked when the next unit's starts, and at
the end of backward) its gradient shard is all-reduced across hosts.

With one rank the same hooks run; gathers become copies and reductions vanish.

Devices: the flat buffers live on the parameters' device, CPU or CUDA. The
collectives go through a ``transport`` (``transport.py``): ``shardkit.comm``
over shared memory for CPU parameters, ``NcclGroup`` for CUDA ones, or
``torch.distributed`` on a process group (gloo or NCCL). On CUDA the
prefetched all-gathers and the gradient reductions run on side streams
(``streams.py``), so they overlap the compute as torch FSDP's do; on CPU the
same code runs with the stream operations as no-ops.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_map

from shardkit import comm
from shardkit.fsdp import transport as _transport
from shardkit.fsdp.flat_param import FlatGroup
from shardkit.fsdp.hybrid import hybrid_groups
from shardkit.fsdp.meta_init import check_init_args, is_meta_model, materialize_unit, parameter_registrations
from shardkit.fsdp.streams import StreamSet
from shardkit.fsdp.strategies import strategy_name
from shardkit.fsdp.units import assign_parameters, select_units

_RESHARD_AFTER_FORWARD = ("FULL_SHARD", "HYBRID")
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass(frozen=True, kw_only=True)
class MixedPrecision:
    """Dtypes of a mixed-precision policy; None keeps the parameters' own dtype."""

    param_dtype: torch.dtype | None = None  # dtype of gathered parameters, so of the compute
    reduce_dtype: torch.dtype | None = None  # dtype gradients are averaged in (default param_dtype)
    cast_forward_inputs: bool = True  # cast floating-point inputs of the root to param_dtype

    def __post_init__(self) -> None:
        for name in ("param_dtype", "reduce_dtype"):
            value = getattr(self, name)
            if value is not None and value not in _FLOAT_DTYPES:
                raise TypeError(f"MixedPrecision.{name}: expected a floating-point torch.dtype or None, got {value!r}")


class _Unit:
    def __init__(self, module: nn.Module, path: str, groups: list[FlatGroup]) -> None:
        self.module, self.path, self.groups = module, path, groups
        self.is_root = path == ""

    def unshard(self) -> None:
        for g in self.groups:
            g.unshard()
            g.install_views()

    def reshard(self) -> None:
        for g in self.groups:
            g.reshard()

    def prefetch(self) -> None:
        for g in self.groups:
            g.prefetch()


class ShardState:
    """What ``shard()`` attaches to the model (``model._shardkit_fsdp``)."""

    def __init__(self, units: list[_Unit], strategy: str, group, mixed_precision: MixedPrecision, shard_group,
                 *, transport=None, shard_transport=None, streams: StreamSet | None = None,
                 device: torch.device | None = None) -> None:
        self.units, self.strategy, self.group, self.mixed_precision = units, strategy, group, mixed_precision
        # The ranks the flat buffers are sharded over (HYBRID: this host's; NO_SHARD: all, holding replicas).
        self.shard_group = shard_group
        # The collectives over all ranks and over the shard ranks (``transport.Transport``; None: one rank).
        self.transport, self.shard_transport = transport, shard_transport
        self.device = device if device is not None else torch.device("cpu")
        self.streams = streams if streams is not None else StreamSet(self.device)
        self.sync = True  # False inside no_sync(): gradients accumulate unreduced
        self.in_backward = False
        self.last_reduced: FlatGroup | None = None  # the group whose gradient reduction started last
        # Units in the order their forwards ran: this iteration's, and the last
        # complete one's, which says whose all-gather to prefetch next.
        self.order: list[_Unit] = []
        self.last_order: list[_Unit] = []
        self.groups = [g for u in units for g in u.groups]

    @property
    def world_size(self) -> int:
        return self.transport.world_size if self.transport is not None else 1

    @property
    def rank(self) -> int:
        return self.transport.rank if self.transport is not None else 0

    @property
    def shard_rank(self) -> int:
        """This rank's index among the ranks the buffers are sharded over (its host's, under HYBRID)."""
        return self.shard_transport.rank if self.shard_transport is not None else 0

    @property
    def shard_world_size(self) -> int:
        return self.shard_transport.world_size if self.shard_transport is not None else 1

    @property
    def replica_index(self) -> int:
        """Which copy of the shards this rank holds: its host under HYBRID, 0 otherwise."""
        if self.strategy != "HYBRID" or self.group is None:
            return 0
        return self.group.host_index

    # ---- hooks -----------------------------------------------------------------

    def pre_forward(self, unit: _Unit, args, kwargs):
        if unit.is_root and not self.in_backward:
            # A new iteration: the shards may have been stepped since the last gather.
            for g in self.groups:
                g.stale = not g.alias
            self.order = []
            policy = self.mixed_precision
            if policy.param_dtype is not None and policy.cast_forward_inputs:
                cast = lambda t: t.to(policy.param_dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
                args, kwargs = tree_map(cast, args), tree_map(cast, kwargs)
        unit.unshard()
        if not self.in_backward:
            self.order.append(unit)
            self._prefetch_after(unit, +1)
        return args, kwargs

    def post_forward(self, unit: _Unit, args, kwargs, output):
        if unit.is_root and not self.in_backward and not torch.is_grad_enabled():
            # No backward follows a forward without autograd (e.g. a frozen reference model
            # under no_grad): free every unit now, root included, and remember the order
            # for the next forward's prefetch, as the end of a backward would.
            if self.strategy != "NO_SHARD":
                for u in self.units:
                    u.reshard()
            self.last_order = self.order
            return output
        if self.strategy in _RESHARD_AFTER_FORWARD and not unit.is_root and not self.in_backward:
            unit.reshard()
        if torch.is_grad_enabled():
            for t in _tensors(output):
                if t.requires_grad:
                    t.register_hook(lambda grad, unit=unit: self.pre_backward(unit, grad))
        return output

    def pre_backward(self, unit: _Unit, grad):
        self._enter_backward()
        unit.unshard()
        self._prefetch_after(unit, -1)
        return grad

    def _prefetch_after(self, unit: _Unit, direction: int) -> None:
        """Start gathering the unit that ran after (forward) or before (backward) ``unit`` last iteration.

        Every rank ran the same forwards, so every rank prefetches the same units in the same order.
        """
        order = self.last_order
        if self.strategy == "NO_SHARD" or unit not in order:
            return
        i = order.index(unit) + direction
        if 0 <= i < len(order) and order[i] is not unit:
            order[i].prefetch()

    def post_accumulate(self, group: FlatGroup) -> None:
        self._enter_backward()
        if self.sync:
            if self.last_reduced is not None:
                self.last_reduced.settle_in_host()
            group.reduce_grad()
            self.last_reduced = group
        if self.strategy != "NO_SHARD":
            group.reshard()

    def _enter_backward(self) -> None:
        if not self.in_backward:
            self.in_backward = True
            torch.autograd.Variable._execution_engine.queue_callback(self._end_backward)

    def _end_backward(self) -> None:
        for g in self.groups:  # HYBRID: every group's cross-host all-reduce in flight before waiting for any
            g.settle_in_host()
        for g in self.groups:
            g.finish_grad()
            g.reshard()
        self.in_backward = False
        self.last_reduced = None
        self.last_order = self.order


def _tensors(value):
    """The tensors inside a module output (tensors, sequences, dicts, dataclasses)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name))


def _check_model(model: nn.Module) -> torch.device | None:
    """The one device of ``model``'s parameters (None when it has none); ValueError naming the parameters
    that sit elsewhere, or on a device shardkit.fsdp does not shard (CPU, CUDA and meta are accepted)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if is_sharded(model):
        raise ValueError("model: already sharded by shardkit.fsdp.shard()")
    first: tuple[str, torch.device] | None = None
    for name, p in model.named_parameters():
        if first is None:
            first = (name, p.device)
        elif p.device != first[1]:
            raise ValueError(f"model: parameters must all be on one device; {name!r} is on {p.device} but "
                             f"{first[0]!r} is on {first[1]} (move the model with model.to(device) first)")
    if first is None:
        return None
    name, device = first
    if device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"model: shardkit.fsdp shards CPU or CUDA parameters, or builds them from the meta device; "
                         f"{name!r} is on {device}")
    return device


def _buffer_device(param_device: torch.device | None, device) -> torch.device:
    """Where the flat buffers live: ``device`` for a meta model (default CPU), else the parameters' device."""
    if device is not None:
        try:
            device = torch.device(device)
        except (TypeError, RuntimeError) as exc:
            raise TypeError(f"device: expected a torch.device or a string such as 'cuda', got {device!r}") from exc
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device: expected a CPU or CUDA device, got {device}")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if param_device is None or param_device.type == "meta":
        return device if device is not None else torch.device("cpu")
    if device is not None and device != param_device:
        raise ValueError(f"device: the parameters are on {param_device}, got device={device}; device= only places "
                         "a meta-device model (move other models with model.to(device) before shard())")
    return param_device


def shard(model: nn.Module, *, units=None, strategy: str = "FULL_SHARD",
          mixed_precision: MixedPrecision | None = None, group=None,
          param_init_fn: Callable[[nn.Module], None] | None = None, seed: int = 0,
          transport: str = "auto", algo: str = "auto", device=None) -> nn.Module:
    """Shard ``model`` in place over the ranks of ``group`` and return it.

    Args:
        model: an ``nn.Module`` on CPU or on one CUDA device (each rank its
            own), or one built under ``torch.device("meta")`` (see below).
            Apply activation checkpointing before sharding.
        units: how to cut it into units (besides the root): a list of module
            classes (e.g. the transformer block), a callable ``module -> bool``,
            or an int size threshold in parameters. None: one unit, the root.
        strategy: ``"FULL_SHARD"`` (ZeRO-3: parameters, gradients and optimizer
            state sharded; parameters freed after each unit's forward),
            ``"SHARD_GRAD_OP"`` (ZeRO-2: parameters kept from forward to
            backward), ``"NO_SHARD"`` (DDP: gradients all-reduced) or
            ``"HYBRID"`` (HSDP: FULL_SHARD over the ranks of each host, the
            hosts holding replicas whose gradient shards are all-reduced across
            hosts; needs the same number of ranks on every host, see
            ``shardkit.comm.Group.topology`` and ``SHARDKIT_HOST_ID``). The
            aliases ``"ZERO3"``, ``"ZERO2"``, ``"DDP"`` and ``"HYBRID_SHARD"``
            name the same strategies.
        mixed_precision: compute and reduction dtypes (``MixedPrecision``);
            the shards keep the parameters' dtype, so fp32 parameters are the
            fp32 masters.
        group: a ``shardkit.comm.Group``; for the device transports also a
            ``torch.distributed`` process group or (nccl) a
            ``shardkit.comm.nccl.NcclGroup``. Default: the default group
            (``shm``: ``comm.init()`` joined if torch.distributed is
            initialised); with neither, a single process.
        param_init_fn: meta-device models only: ``fn(module)`` initialising
            the parameters and buffers ``module`` itself holds (for
            ``shardkit.models.GPT``: ``model.init_weights``). Default: each
            such module's ``reset_parameters()``.
        seed: meta-device models only: unit i is initialised under the RNG
            seed ``meta_init.unit_seed(seed, i)``, identically on every rank.
        transport: how the flat buffers move between ranks: ``"auto"``
            (``"shm"`` for CPU parameters, ``"nccl"`` for CUDA ones), ``"shm"``
            (``shardkit.comm``, CPU), ``"nccl"`` (``shardkit.comm.nccl.NcclGroup``,
            CUDA; it falls back to torch's NCCL group where libnccl cannot be
            loaded) or ``"process_group"`` (``torch.distributed`` on the
            group's process group with the parameters' device: NCCL on CUDA,
            gloo on CPU, where it runs the device code path). HYBRID needs ``"shm"``.
        algo: ``"auto"``, ``"ring"`` or ``"tree"``: NCCL's algorithm for the
            all-reduces of the ``"nccl"`` transport (NO_SHARD gradients,
            gradient norms); its all-gathers and reduce-scatters are rings.
        device: meta-device models only: where the shards are materialised
            (default CPU; ``"cuda"`` is the current CUDA device). Other models
            stay on their parameters' device.

    Afterwards ``model.parameters()`` are the local flat shards (one per unit,
    trainable and frozen parameters apart), so ``FusedAdamW(model.parameters())``
    steps them in one fused call. The module attributes (``linear.weight``)
    are views of the gathered parameters while a unit runs. Collective: every
    rank must call it on the same model, and then run the same forwards and backwards.

    A model on the meta device is materialised on CPU one unit at a time:
    each unit's parameters are created, initialised (``param_init_fn`` or
    ``reset_parameters``, under the unit's seed), flattened and cut to this
    rank's shard (moved to ``device``) before the next unit is created, so no
    rank ever holds the whole model; its buffers follow to ``device`` at the
    end. ``fsdp.initialize_units(cpu_model, units=..., seed=...)``
    gives the same values on an unsharded CPU model. A meta parameter that
    nothing initialises raises ValueError naming it.
    """
    param_device = _check_model(model)
    buffer_device = _buffer_device(param_device, device)
    strategy = strategy_name(strategy)
    kind = _transport.resolve(transport, buffer_device.type)
    if strategy == "HYBRID" and kind != "shm":
        raise ValueError(f"strategy: HYBRID runs on the 'shm' transport (shardkit.comm host groups); got transport "
                         f"{kind!r} for {buffer_device.type} parameters: use FULL_SHARD")
    if mixed_precision is None:
        mixed_precision = MixedPrecision()
    if not isinstance(mixed_precision, MixedPrecision):
        raise TypeError(f"mixed_precision: expected a shardkit.fsdp.MixedPrecision, got {type(mixed_precision).__name__}")
    check_init_args(param_init_fn, seed)
    if kind == "shm" and group is not None and not isinstance(group, comm.Group):
        raise TypeError(f"group: expected a shardkit.comm.Group, got {type(group).__name__}")
    if algo not in ("auto", "ring", "tree"):
        raise ValueError(f"algo: expected 'auto', 'ring' or 'tree', got {algo!r}")
    world, group = _transport.make(kind, group, buffer_device.type, algo=algo)
    if strategy == "HYBRID":
        shard_group, replicas = hybrid_groups(group)
        shard_world = _transport.HostTransport(shard_group) if shard_group is not None else None
    else:
        shard_group, replicas, shard_world = group, None, world
    streams = StreamSet(buffer_device)

    unit_paths = select_units(model, units)
    owned = assign_parameters(model, unit_paths)
    meta = is_meta_model(model)
    registrations = parameter_registrations(owned) if meta else {}
    modules = dict(model.named_modules())
    built: list[_Unit] = []
    for index, path in enumerate(unit_paths):
        if meta:
            owned[path] = materialize_unit(model, path, index, unit_paths, owned, registrations,
                                           seed=seed, param_init_fn=param_init_fn)
        groups = []
        for trainable in (True, False):
            entries = [e for e in owned[path] if e[0].requires_grad == trainable]
            if entries:
                groups.append(FlatGroup(entries, transport=shard_world, sharded=strategy != "NO_SHARD",
                                        param_dtype=mixed_precision.param_dtype,
                                        reduce_dtype=mixed_precision.reduce_dtype, replicas=replicas,
                                        device=buffer_device, streams=streams))
        entries = None  # no reference to the unit's original parameters may outlive this iteration
        unit = _Unit(modules[path], path, groups)
        # The unit's parameters now live in its flat buffer: free the originals
        # before the next unit is materialised (meta models).
        for i, g in enumerate(unit.groups):
            for uses in g.uses:
                for module, attr, _ in uses:
                    module._parameters.pop(attr, None)
            unit.module.register_parameter(f"_flat_param_{i}", g.shard)
            g.install_views()
            g.reshard()
        owned[path] = []
        built.append(unit)
    if meta and buffer_device.type != "cpu":  # materialised on CPU; the shards went to the device, so do the buffers
        for module in model.modules():
            for name, buf in module._buffers.items():
                if buf is not None and buf.device != buffer_device:
                    module._buffers[name] = buf.to(buffer_device)

    state = ShardState(built, strategy, group, mixed_precision, shard_group, transport=world,
                       shard_transport=shard_world, streams=streams, device=buffer_device)
    for unit in built:
        for g in unit.groups:
            if g.trainable:
                g.full.register_post_accumulate_grad_hook(lambda _t, g=g: state.post_accumulate(g))
        unit.module.register_forward_pre_hook(lambda m, a, k, u=unit: state.pre_forward(u, a, k), with_kwargs=True)
        unit.module.register_forward_hook(lambda m, a, k, o, u=unit: state.post_forward(u, a, k, o), with_kwargs=True)
    model.__dict__["_shardkit_fsdp"] = state
    return model


def is_sharded(model) -> bool:
    """True when ``model`` was returned by ``shard()`` (one process sharding alone included).

    What the trainers ask instead of probing private attributes.
    """
    return isinstance(getattr(model, "_shardkit_fsdp", None), ShardState)


def get_state(model: nn.Module) -> ShardState:
    """The sharding state of a model returned by ``shard()``; TypeError otherwise."""
    state = getattr(model, "_shardkit_fsdp", None)
    if not isinstance(state, ShardState):
        raise TypeError(f"model: expected a model returned by shardkit.fsdp.shard(), got an unsharded {type(model).__name__}")
    return state


@contextlib.contextmanager
def no_sync(model: nn.Module):
    """Inside, backward accumulates full unreduced gradients locally (gradient accumulation);
    the first backward after it reduces everything accumulated."""
    state = get_state(model)
    previous, state.sync = state.sync, False
    try:
        yield
    finally:
        state.sync = previous
