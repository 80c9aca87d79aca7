"""Per-rank memory estimate: model states, activations and communication buffers.

Model states follow the ZeRO paper's accounting. With mixed-precision AdamW a
parameter costs 2 (bf16 weight) + 2 (bf16 grad) + 4 (fp32 master) + 4 + 4
(fp32 moments) = 16 bytes; SGD with momentum 12; fp32 AdamW also 16 (the
weights are their own master) but its activations take 4 bytes, not 2.
Sharding divides what each strategy shards by the shard degree:
NO_SHARD (DDP) nothing, SHARD_GRAD_OP (ZeRO-2) grads, masters and moments,
FULL_SHARD (ZeRO-3) everything, HYBRID like FULL_SHARD within a host.

Where ``shardkit.fsdp`` differs from that accounting, the estimate follows
``shardkit.fsdp`` (it is checked against real sharded steps in
``tests/fsdp/test_fsdp_memory.py``): under SHARD_GRAD_OP the optimizer steps
flat fp32 shards apart from the gathered full parameters, so fp32 training
also holds "master" shards; gathered parameters and full gradients awaiting
their reduce-scatter are the communication buffers, following the schedule
of ``shardkit.fsdp.sharded_model`` (see ``_comm_item``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shardkit.memory.checkpoint_policy import MemoryBudget, parse_policy, policy_label, static_selection
from shardkit.fsdp.strategies import strategy_name
from shardkit.memory import activations, rl
from shardkit.memory.report import format_bytes, format_table
from shardkit.memory.spec import DecoderSpec

PRECISIONS = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZERS = ("adamw", "sgd")
MASTER_BYTES = 4  # fp32 master weights and optimizer state


@dataclass(frozen=True)
class MemoryItem:
    """One line of the breakdown."""

    name: str  # params, grads, master_weights, optimizer_state, activations, comm_buffers
    bytes: int  # bytes per rank
    explanation: str  # one line: what is held and why this size
    parts: dict[str, int] = field(default_factory=dict)  # sub-totals, e.g. comm_buffers' gathered / unreduced


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-rank memory breakdown; ``str()`` is the CLI table, ``to_dict()`` feeds reports and plots."""

    items: tuple[MemoryItem, ...]
    params: int  # parameters in the model (all ranks together)
    trainable_params: int  # of which have gradients and optimizer state
    inputs: dict[str, Any] = field(default_factory=dict)  # the arguments the estimate was made for

    def __getitem__(self, name: str) -> int:
        for item in self.items:
            if item.name == name:
                return item.bytes
        raise KeyError(f"{name!r}: expected one of {[item.name for item in self.items]}")

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    @property
    def model_state_bytes(self) -> int:
        """Params, grads, master weights and optimizer state: what sharding divides."""
        return sum(self[name] for name in ("params", "grads", "master_weights", "optimizer_state"))

    @property
    def model_state_bytes_per_param(self) -> float:
        """Model-state bytes per rank divided by the model's parameter count."""
        return self.model_state_bytes / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": dict(self.inputs),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "items": [{"name": i.name, "bytes": i.bytes, "explanation": i.explanation, "parts": dict(i.parts)}
                      for i in self.items],
            "model_state_bytes": self.model_state_bytes,
            "model_state_bytes_per_param": self.model_state_bytes_per_param,
            "total_bytes": self.total_bytes,
        }

    def table(self) -> str:
        return format_table(self)

    def __str__(self) -> str:
        return self.table()


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class _ModelFacts:
    params: int
    trainable: int
    unit_params: int | None  # parameters of the largest block unit, None if unknown
    spec: DecoderSpec | None
    root_params: int | None = None  # parameters of the root unit (outside the blocks), None if unknown
    blocks: int = 0  # number of block units


def _facts(model: Any, unit_params: int | None) -> _ModelFacts:
    if isinstance(model, DecoderSpec):
        unit = unit_params or model.block_params
        return _ModelFacts(model.params, model.params, unit, model, model.root_params, model.layers)
    if isinstance(model, nn.Module):
        return _module_facts(model, unit_params)
    if isinstance(model, (int, float)) and not isinstance(model, bool) and model >= 1 and float(model).is_integer():
        return _ModelFacts(int(model), int(model), unit_params, None)
    raise TypeError(f"model: expected a parameter count, a DecoderSpec or an nn.Module, got {model!r}")


def _module_facts(module: nn.Module, unit_params: int | None) -> _ModelFacts:
    # Unique parameters, so tied weights count once; numel works on the meta device.
    unique = {id(p): p for p in module.parameters()}
    params = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    spec = getattr(module, "spec", None)
    if not isinstance(spec, DecoderSpec):
        config = getattr(module, "config", None)
        spec = DecoderSpec.from_hf_config(config) if hasattr(config, "num_hidden_layers") else None
    stack = next((m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m)), None)
    if stack is None:
        return _ModelFacts(params, trainable, unit_params, spec)
    blocks = [sum(p.numel() for p in block.parameters()) for block in stack]
    return _ModelFacts(params, trainable, unit_params or max(blocks), spec, params - sum(blocks), len(blocks))


def estimate(
    model: Any,
    *,
    optimizer: str = "adamw",
    precision: str = "bf16",
    strategy: Any = "NO_SHARD",
    world_size: int = 1,
    host_size: int | None = None,
    batch: int = 1,
    seq_len: int = 2048,
    checkpointing: Any = "none",
    sgd_momentum: bool = True,
    unit_params: int | None = None,
    recipe: str = "pretrain",
    reference: bool = True,
) -> MemoryEstimate:
    """Estimate the memory one rank holds during a training step.

    ``model`` is a parameter count, a :class:`DecoderSpec`, or an ``nn.Module``
    (meta-device modules work: only shapes are read). Activations are estimated
    when the shape is known (a spec, a module with a ``spec`` attribute or a
    Llama-style Hugging Face ``config``); ``batch`` is the per-rank micro-batch.
    ``precision`` is ``fp32`` or mixed ``bf16``/``fp16`` (half-precision
    weights, grads and activations, fp32 masters and optimizer state).
    ``checkpointing`` is ``"none"``, ``"every_block"``, an int k (every k-th
    block), a policy from :mod:`shardkit.checkpointing`, or a
    ``CheckpointPlan`` (what a MemoryBudget chose). ``unit_params`` is
    the largest block unit (default: read from the spec or module; for a bare
    parameter count, the whole model is taken as one unit unless given).
    ``recipe`` (``pretrain``, ``sft``, ``dpo``, ``rm``, ``grpo``, ``ppo``)
    says which models the step holds (see :mod:`shardkit.memory.rl`): PPO
    trains a policy and a value model and holds a frozen reference and reward
    model; ``reference=False`` drops the reference (DPO with precomputed
    log-probs, GRPO with ``beta=0``, PPO with a LoRA-style adapter). ``params``
    of the result stays the policy's count; ``trainable_params`` covers every
    trained model; frozen models appear as ``frozen_models``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {sorted(PRECISIONS)}, got {precision!r}")
    canonical = strategy_name(strategy)
    world_size, batch, seq_len = (
        _positive_int(n, v) for n, v in (("world_size", world_size), ("batch", batch), ("seq_len", seq_len))
    )
    if unit_params is not None:
        _positive_int("unit_params", unit_params)
    if canonical == "HYBRID":
        if host_size is None or _positive_int("host_size", host_size) > world_size or world_size % host_size:
            raise ValueError(f"host_size: HYBRID needs a divisor of world_size={world_size}, got {host_size!r}")
    policy = _checkpoint_selection(checkpointing)
    facts = _facts(model, unit_params)
    plan = rl.recipe_plan(recipe, facts.params, facts.spec, reference)
    # A scalar-head model stands in for the policy (rm) or joins it (ppo's value model); both fully trained.
    weights = plan.trained_params
    trainable = facts.trainable + plan.trained_params - facts.params
    models = "" if recipe == "pretrain" else f" of {' + '.join(role for role, _ in plan.trained)}"

    shard = {"NO_SHARD": 1, "SHARD_GRAD_OP": world_size, "FULL_SHARD": world_size, "HYBRID": host_size}[canonical]
    param_shard = shard if canonical in ("FULL_SHARD", "HYBRID") else 1
    state_shard = shard  # grads, masters and moments
    weight_bytes = PRECISIONS[precision]
    mixed = precision != "fp32"
    state_per_param = 8 if optimizer == "adamw" else 4 * bool(sgd_momentum)
    # SHARD_GRAD_OP steps flat shards apart from the gathered parameters: fp32 ones are masters too.
    has_master = mixed or (canonical == "SHARD_GRAD_OP" and shard > 1)
    where = f"/ {shard} ranks ({canonical})" if shard > 1 else f"on every rank ({canonical})"
    pad = " + padding of at most shard-1 elements per unit" if shard > 1 else ""

    def per_rank(count: int, nbytes: int, degree: int) -> int:
        return math.ceil(count * nbytes / degree)

    items = [
        MemoryItem(
            "params",
            per_rank(weights, weight_bytes, param_shard),
            f"{precision} weights{models}, {weight_bytes} B x {weights:,} params "
            + (f"/ {param_shard} ranks{pad}" if param_shard > 1 else "on every rank")
            + ("; gathered per unit for compute (see comm_buffers)" if param_shard > 1 else ""),
        ),
        MemoryItem(
            "grads",
            per_rank(trainable, weight_bytes, state_shard),
            f"{precision} gradients, {weight_bytes} B x {trainable:,} trainable params {where}",
        ),
        MemoryItem(
            "master_weights",
            per_rank(trainable, MASTER_BYTES, state_shard) if has_master else 0,
            f"fp32 copy the optimizer updates, 4 B x trainable params {where}"
            + ("" if mixed else ", apart from the gathered fp32 params")
            if has_master
            else "none: fp32 weights are their own master copy",
        ),
        MemoryItem(
            "optimizer_state",
            per_rank(trainable, state_per_param, state_shard),
            (
                f"AdamW exp_avg + exp_avg_sq, 4 + 4 B fp32 {where}"
                if optimizer == "adamw"
                else (f"SGD momentum buffer, 4 B fp32 {where}" if sgd_momentum else "none: SGD without momentum")
            ),
        ),
        _activation_item(facts.spec, policy, batch, seq_len, weight_bytes, precision, plan),
        _comm_item(canonical, facts, world_size, shard, weight_bytes),
    ]
    if plan.frozen:
        frozen = " + ".join(f"{role} ({n:,})" for role, n in plan.frozen)
        items.append(MemoryItem(
            "frozen_models",
            per_rank(plan.frozen_params, weight_bytes, param_shard),
            f"{precision} weights of {frozen}, no grads or optimizer state"
            + (f", / {param_shard} ranks like the policy" if param_shard > 1 else ", on every rank"),
            {role: per_rank(n, weight_bytes, param_shard) for role, n in plan.frozen},
        ))
    inputs = {
        "optimizer": optimizer,
        "precision": precision,
        "strategy": canonical,
        "world_size": world_size,
        "host_size": host_size,
        "batch": batch,
        "seq_len": seq_len,
        "checkpointing": policy.label,
        "sgd_momentum": sgd_momentum,
        "unit_params": facts.unit_params,
        "spec": facts.spec.to_dict() if facts.spec else None,
        "recipe": recipe,
        "reference": reference,
        "models": {"trained": dict(plan.trained), "frozen": dict(plan.frozen)},
    }
    return MemoryEstimate(tuple(items), facts.params, trainable, inputs)


@dataclass(frozen=True)
class _Selection:
    label: str  # none, every_block, every_<k>, plan_<n>_of_<blocks>
    count: Callable[[int], int]  # number of blocks -> how many are checkpointed


def _checkpoint_selection(checkpointing: Any) -> _Selection:
    """A static policy, or a CheckpointPlan (e.g. what a MemoryBudget chose)."""
    if hasattr(checkpointing, "checkpointed") and hasattr(checkpointing, "block_names"):
        chosen, total = len(checkpointing.checkpointed), len(checkpointing.block_names)
        return _Selection(f"plan_{chosen}_of_{total}", lambda _blocks: chosen)
    policy = parse_policy(checkpointing)
    if isinstance(policy, MemoryBudget):
        raise ValueError(
            "checkpointing: MemoryBudget needs a probe forward; pass shardkit.checkpointing.plan(...)'s result"
        )
    return _Selection(policy_label(policy), lambda blocks: len(static_selection(policy, blocks)))


def _activation_item(spec, policy, batch: int, seq_len: int, act_bytes: int, precision: str,
                     plan: rl.RecipePlan) -> MemoryItem:
    if spec is None:
        return MemoryItem("activations", 0, "not estimated: the model's shape is unknown (pass a DecoderSpec)")
    tokens = batch * seq_len
    ckpt = policy.count(spec.layers)
    how = f"{ckpt} of {spec.layers} blocks checkpointed (keep only their input)" if ckpt else "no checkpointing"
    if plan.recipe in ("pretrain", "sft"):
        parts = activations.activation_bytes(spec, tokens, act_bytes, ckpt)
        return MemoryItem(
            "activations",
            sum(parts.values()),
            f"saved for backward, {precision} ({act_bytes} B) at {batch}x{seq_len} tokens, {how}; "
            f"head with fp32 log-softmax {format_bytes(parts['head'])}",
        )
    parts = rl.activation_parts(plan, spec, tokens, act_bytes, ckpt)
    rows = f"{plan.rows_factor}x{batch}" if plan.rows_factor > 1 else f"{batch}"
    return MemoryItem(
        "activations",
        sum(parts.values()),
        f"saved for backward by {' + '.join(role for role, _ in plan.trained)}, {precision} at {rows}x{seq_len} "
        f"tokens, {how}; heads {format_bytes(parts['head'])}",
        parts,
    )


def _comm_item(strategy: str, facts: _ModelFacts, world_size: int, shard: int, nbytes: int) -> MemoryItem:
    """Gathered parameters and full gradients awaiting reduction, at the worst moment of a step.

    The schedule of ``shardkit.fsdp``, with R the root unit, U the largest
    block unit and nbytes the compute (and reduce) dtype's size:

    * the root stays gathered from its forward to the end of backward;
      FULL_SHARD/HYBRID gather a block for its forward and again for its
      backward, with the next one prefetched: R + 2U gathered (SHARD_GRAD_OP
      keeps every unit gathered, which is its ``params`` line);
    * when a unit's full gradient appears, the previous unit's is still being
      reduce-scattered (it is released when this one's reduction starts):
      2U unreduced during the blocks, then R + U when the root's arrives last.

    NO_SHARD, and HYBRID with one rank per host, all-reduce each gradient in
    place and keep it as ``.grad``: no extra buffer.
    """
    if world_size == 1 or shard == 1:
        how = "one rank: nothing to communicate" if world_size == 1 else (
            "gradients all-reduced in place, one unit at a time, and kept as .grad: no extra buffer")
        return MemoryItem("comm_buffers", 0, how, {"gathered": 0, "unreduced": 0})
    if facts.root_params is not None:
        root, block, blocks, note = facts.root_params, facts.unit_params or 0, facts.blocks, ""
    elif facts.unit_params is not None:  # a bare count with a unit size: a root like a block, many blocks
        root, block, blocks, note = facts.unit_params, facts.unit_params, 2, " (root taken as large as a block)"
    else:
        root, block, blocks = facts.params, 0, 0
        note = " (unit size unknown: the whole model as one unit; pass unit_params)"
    prefetched = block if blocks > 1 else 0
    phases = [  # (gathered, unreduced) elements at the moment a block's, then the root's, gradient appears
        (root + block + prefetched, block + (block if blocks > 1 else 0)) if blocks else (0, 0),
        (root, root + block),
    ]
    if strategy == "SHARD_GRAD_OP":
        phases = [(0, unreduced) for _, unreduced in phases]
    gathered, unreduced = max(phases, key=sum)
    text = (f"full grads awaiting reduce-scatter (up to 2 units, largest {max(root, block):,} params){note}"
            if strategy == "SHARD_GRAD_OP" else
            f"root ({root:,} params) + running and prefetched block ({block:,}) gathered, "
            f"and up to 2 units' full grads awaiting reduce-scatter{note}")
    if strategy == "HYBRID":
        text += "; the cross-host all-reduce runs in place on the grad shard"
    return MemoryItem("comm_buffers", (gathered + unreduced) * nbytes, text,
                      {"gathered": gathered * nbytes, "unreduced": unreduced * nbytes})
