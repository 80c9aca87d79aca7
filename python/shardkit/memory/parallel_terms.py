"""Per-rank memory under a ``ParallelPlan``: the TP, SP and PP terms.

Model states: each weight's local shape after tensor parallelism (q/k/v and
gate/up split by output rows, o/down by input columns, embedding and head by
vocabulary; norms replicated), then the ``dp_shard`` axis shards dim 0 of
that local shard (torch ``fully_shard``: ceil(rows / dp_shard) rows on the
fullest rank). So parameters, gradients and optimizer state fall as about
1 / (tp * pp * dp_shard), except the replicated norm weights. The busiest
pipeline rank is reported (the stage with most parameters).

Activations: ``shardkit.memory.parallel_activations`` (TP / SP terms of the
GPT, and each pipeline rank's peak over its schedule's order of forwards and
backwards), exact in fp32 against the saved tensors measured per rank. The
model-state terms are checked exactly against the local elements every gloo
layout in ``tests/parallel`` holds.
"""

from __future__ import annotations

import math

from shardkit.memory import parallel_activations
from shardkit.memory.spec import DecoderSpec

_OPTIMIZER_STATE_BYTES = {
    "adamw": 8,
    "sgd": 0,
    "sgd_momentum": 4,
}  # fp32 moments per parameter


def _sharded_numel(rows: int, cols: int, dp_shard: int) -> int:
    return math.ceil(rows / dp_shard) * cols


def stage_param_numel(spec: DecoderSpec, plan, stage: int) -> int:
    """Parameters on the fullest rank of pipeline stage ``stage`` (of ``plan.num_stages``), after TP and dp_shard."""
    t, d = plan.tp, plan.dp_shard
    h, kv, inter, v = spec.hidden, spec.kv_hidden, spec.intermediate, spec.vocab
    block = (
        _sharded_numel(h // t, h, d)
        + 2 * _sharded_numel(kv // t, h, d)  # q, k, v: rows split
        + _sharded_numel(h, h // t, d)  # o: columns split
        + 2 * _sharded_numel(inter // t, h, d)
        + _sharded_numel(h, inter // t, d)  # gate, up; down
        + 2 * _sharded_numel(h, 1, d)
    )  # two replicated norm weights
    # shardkit.parallel.pipeline.layer_split's split (memory sits below parallel: no import).
    n, stages = spec.layers, plan.num_stages
    layers = (stage + 1) * n // stages - stage * n // stages
    total = layers * block
    if stage == 0:
        total += _sharded_numel(v // t, h, d)  # embedding
    if stage == plan.num_stages - 1:
        total += _sharded_numel(h, 1, d) + _sharded_numel(
            v // t, h, d
        )  # final norm, head
    return total


def rank_param_numel(spec: DecoderSpec, plan, pp_rank: int) -> int:
    """Parameters of pipeline rank ``pp_rank`` (its ``virtual_stages`` stages together)."""
    # Loop order, as shardkit.parallel.pipeline.stage_ids: rank r holds stages r, r + pp, ...
    return sum(
        stage_param_numel(spec, plan, pp_rank + k * plan.pp)
        for k in range(plan.virtual_stages)
    )


def in_flight_microbatches(plan) -> float:
    """The textbook count of micro-batches in flight on pipeline rank 0: GPipe m, 1F1B min(m, p), interleaved
    min(m, p + (p - 1) / v) (Megatron-LM). A summary only: ``parallel_activations.rank_activation_bytes`` replays
    each rank's exact order (zero bubble's deferred weight backwards and the last stage's head included)."""
    m, p, v = plan.microbatches, plan.pp, plan.virtual_stages
    if p == 1:
        return 1.0
    if plan.pp_schedule == "gpipe":
        return float(m)
    if v == 1:
        return float(min(m, p))
    return min(float(m), p + (p - 1) / v)


def parallel_estimate(
    spec: DecoderSpec,
    plan,
    *,
    batch: int,
    seq_len: int,
    precision_bytes: int = 4,
    optimizer: str = "adamw",
) -> dict[str, int]:
    """Bytes per rank (busiest pipeline rank): params, grads, optimizer_state, activations and the total.

    ``batch``: rows per data-parallel replica per step; ``precision_bytes``: of
    weights, gradients and activations (fp32 training: 4).
    """
    if optimizer not in _OPTIMIZER_STATE_BYTES:
        raise ValueError(
            f"optimizer: expected one of {sorted(_OPTIMIZER_STATE_BYTES)}, got {optimizer!r}"
        )
    numel = max(rank_param_numel(spec, plan, r) for r in range(plan.pp))
    activations = parallel_activations.activation_bytes(
        spec, plan, batch=batch, seq_len=seq_len, precision_bytes=precision_bytes
    )
    out = {
        "params": numel * precision_bytes,
        "grads": numel * precision_bytes,
        "optimizer_state": numel * _OPTIMIZER_STATE_BYTES[optimizer],
        "activations": activations,
    }
    out["total"] = sum(out.values())
    return out
