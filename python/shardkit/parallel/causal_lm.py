"""``PlanCausalLM``: a ``ParallelModel`` without pipeline stages, called like a causal LM (``.logits``).

Trainers whose loss needs whole-vocabulary log-probs of each row (DPO, KTO)
call ``model(input_ids=..., attention_mask=...).logits`` and reduce over the
data-parallel replicas; this adaptor gives them that on a TP / SP / sharded
layout, so their ``compute_loss`` runs unchanged:

* the logits come back full, (B, T, V), as a differentiable all-gather of the
  vocabulary shards when ``loss_parallel`` is on: those losses and metrics
  (entropy, argmax accuracy, mean logit) need every column, so the plan's
  loss-parallel saving does not apply to them;
* under sequence parallelism T is right-padded to a multiple of ``tp`` and
  cut back (causal attention: the padding never reaches a real position);
* only right-padded, unpacked rows: the stages attend causally from position
  0 and take no mask, so a left-padded mask or restarting ``position_ids``
  raises ValueError rather than being ignored;
* ``all_reduce_(values, op)`` reduces over the data-parallel axes only (the
  TP ranks of a replica hold the same values).

Pipeline parallelism is refused (the schedule owns the forward and backward,
and these losses need the chosen and rejected rows' sums at once).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


class PlanCausalLM(nn.Module):
    """``PlanCausalLM(pm)``: ``forward(input_ids (B, T), attention_mask=None, position_ids=None)`` -> ``.logits``."""

    def __init__(self, pm) -> None:
        super().__init__()
        if pm.plan.pp > 1:
            raise ValueError(f"parallel.pp: {pm.plan.pp}; a causal-LM view of the model needs pp = 1 "
                             "(the pipeline schedule runs the forward and backward itself)")
        self.pm = pm
        self.stage = pm.modules[0]  # registered: .train()/.eval() and parameters() reach it

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, use_cache=None, **_):
        from shardkit.models.gpt import CausalLMOutput
        from shardkit.models.attention_mask import is_right_padded

        b, t = input_ids.shape
        if attention_mask is not None and not is_right_padded(attention_mask):
            raise ValueError("attention_mask: rows must be right-padded under a ParallelPlan (the stages attend "
                             "causally from position 0 and take no mask)")
        if position_ids is not None and not torch.equal(
                position_ids, torch.arange(t, device=position_ids.device).expand(b, t)
        ):
            raise ValueError("position_ids: packed rows are not supported under a ParallelPlan; set packing = false")
        plan = self.pm.plan
        pad = (-t) % plan.tp if plan.sequence_parallel else 0
        ids = F.pad(input_ids, (0, pad), value=0) if pad else input_ids  # (B, T + pad)
        logits = self.stage(ids)  # (B, T + pad, V) or its vocabulary shard (B, T + pad, V / tp)
        if plan.tp > 1 and plan.loss_parallel:
            from torch.distributed.tensor import DTensor, Shard

            logits = DTensor.from_local(logits, self.pm.mesh["tp"], [Shard(2)], run_check=False).full_tensor()
        return CausalLMOutput(logits=logits[:, :t])

    def all_reduce_(self, values: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce ``values`` in place over the data-parallel replicas (``sum``, ``min`` or ``max``)."""
        plan = self.pm.plan
        for axis in ("dp_replicate", "dp_shard"):
            if getattr(plan, axis) > 1:
                dist.all_reduce(values, op=_OPS[op], group=self.pm.group(axis))
        return values
