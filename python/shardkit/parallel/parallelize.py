"""``parallelize(model, plan)``: the one place the parallelisms are composed, in a fixed order.

1. **PP split**: this rank's stages (``pipeline.build_stages``).
2. **TP / SP**: DTensor plans on each stage (``tensor_parallel``), on the ``tp`` axis.
3. **Activation checkpointing**: ``shardkit.checkpointing`` on every block
   (keeps parameter names, and recomputes through the TP hooks).
4. **Compile**: ``torch.compile`` per block, in place.
5. **Sharding**: torch ``fully_shard`` on the ``dp_shard`` axis (HSDP over
   ``(dp_replicate, dp_shard)`` when there are replicas), blocks first, then the stage.

Design note, why ``fully_shard`` and not ``shardkit.fsdp.shard()`` here:
``shard()`` flattens a unit's parameters into one plain buffer and installs
plain-tensor views, which drops the DTensor placements that TP parameters
need in forward (their ``Shard(0)`` / ``Shard(1)`` layouts drive the TP
collectives), and torch's pipeline stages drive FSDP through
``FSDPModule`` (``set_requires_gradient_sync``, ``set_is_last_backward``
between micro-batches), which ``shard()`` does not implement. ``fully_shard``
keeps each parameter a DTensor on the 2-D ``(dp_shard, tp)`` mesh, so the
local TP shard is what gets sharded, as Megatron's distributed optimizer does
with its flat buffers. On one axis (no TP, no PP) ``shard()`` stays the
trainers' sharding step. Measured on ``dp_shard=2`` (``benchmarks/bench_parallel.py``,
RESULTS.md, CPU gloo): both hold 16,008,192 model-state bytes per rank for a
4.2M-parameter GPT, at 0.99 s (``fully_shard``) vs 1.01 s (``shard()``) per
step, equal within noise; so the choice rests on composition, not speed.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from shardkit.parallel.pipeline import GPTStage, build_schedule, build_stages
from shardkit.parallel.plan import MESH_AXES, ParallelPlan
from shardkit.parallel.tensor_parallel import (
    apply_gpt_tensor_parallel,
    reduce_partial_grads,
)


def build_mesh(plan: ParallelPlan, device_type: str = "cpu"):
    """The 4-D ``DeviceMesh`` ``(pp, dp_replicate, dp_shard, tp)``; None for one process."""
    if plan.world_size == 1:
        return None
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(
        device_type,
        tuple(getattr(plan, a) for a in MESH_AXES),
        mesh_dim_names=MESH_AXES,
    )


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class ParallelModel:
    """A GPT laid out over the mesh by ``parallelize``: this rank's stage modules and how to step them.

    ``loss = pm.forward_backward(input_ids)`` runs the forward and backward of
    one batch (the pipeline schedule when pp > 1) and returns the batch's mean
    token loss averaged over the data-parallel replicas, the same on every
    rank; gradients end up reduced (TP partial sums included) and ready for
    ``clip_grad_norm_`` and an optimizer over ``pm.parameters()``.
    """

    def __init__(
        self,
        plan: ParallelPlan,
        mesh,
        stages: list[tuple[int, GPTStage]],
        schedule,
        pp_stages,
    ) -> None:
        self.plan, self.mesh, self.schedule = plan, mesh, schedule
        self.stage_indices = [s for s, _ in stages]
        self.modules = [m for _, m in stages]
        self.pp_stages = pp_stages
        self._tokens = None

    # ---- what the model is -------------------------------------------------------
    def parameters(self):
        for m in self.modules:
            yield from m.parameters()

    def named_parameters(self):
        for m in self.modules:
            yield from m.named_parameters()

    def train(self, mode: bool = True) -> ParallelModel:
        for m in self.modules:
            m.train(mode)
        return self

    def group(self, axis: str):
        """The process group of mesh axis ``axis`` (None for one process)."""
        return None if self.mesh is None else self.mesh.get_group(axis)

    @property
    def is_first(self) -> bool:
        return self.modules[0].is_first

    @property
    def is_last(self) -> bool:
        return self.modules[-1].is_last

    # ---- the step ------------------------------------------------------------------
    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum of next-token losses of (a micro-batch of) the batch / the token count of all replicas' batches.

        Times ``dp``: the sharding step averages gradients over the replicas,
        which this undoes, so the gradient is that of the global token mean
        however unevenly padding spreads the tokens over replicas.
        """
        targets = torch.cat(
            [labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1
        )  # (B, T)
        plan = self.plan
        if plan.tp > 1 and plan.loss_parallel:
            from torch.distributed.tensor import DTensor, Shard

            # (B, T, V/tp) local shards -> one vocabulary-sharded DTensor; loss_parallel's
            # cross-entropy reduces log-sum-exps across the TP group.
            logits = DTensor.from_local(
                logits, self.mesh["tp"], [Shard(2)], run_check=False
            )
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            targets.flatten(),
            ignore_index=-100,
            reduction="sum",
        )
        if hasattr(loss, "to_local"):
            loss = loss.to_local()  # Replicate: every TP rank holds the value
        return loss * (self.plan.dp / self._tokens)

    def forward_backward(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward and backward of one batch (this replica's rows); returns the global mean token loss (detached).

        Collective over the whole mesh. The loss is the mean over the tokens of
        all replicas' rows (labels -100 ignored), as one process computes it on
        the concatenated batch.
        """
        labels = input_ids if labels is None else labels
        plan = self.plan
        tokens = (labels[:, 1:] != -100).sum().reshape(1).to(torch.float32)
        if (
            plan.dp > 1
        ):  # the token count of every replica's rows: the global mean's denominator
            for axis in ("dp_replicate", "dp_shard"):
                if getattr(plan, axis) > 1:
                    dist.all_reduce(tokens, group=self.group(axis))
        self._tokens = tokens[0].clamp_min(1)
        ctx = contextlib.nullcontext()
        if plan.tp > 1 and plan.loss_parallel:
            from torch.distributed.tensor.parallel import loss_parallel

            ctx = loss_parallel()
        with ctx:
            if self.schedule is None:
                loss = self.loss_fn(self.modules[0](input_ids), labels)
                loss.backward()
                loss = loss.detach()
            else:
                losses: list[torch.Tensor] = []
                self.schedule.step(input_ids, target=labels, losses=losses)
                # Only the last stage's rank computed losses; the others add zeros.
                loss = (
                    torch.stack([x.detach() for x in losses]).sum()
                    if losses
                    else torch.zeros(())
                )
        loss = loss.reshape(1).float().clone()
        if plan.pp > 1:
            dist.all_reduce(loss, group=self.group("pp"))
        if plan.dp > 1:
            for axis in ("dp_replicate", "dp_shard"):
                if getattr(plan, axis) > 1:
                    dist.all_reduce(loss, group=self.group(axis))
            loss /= plan.dp
        reduce_partial_grads(self.parameters())
        return loss[0]

    def zero_grad(self) -> None:
        for m in self.modules:
            m.zero_grad(set_to_none=True)


def parallelize(model: nn.Module, plan: ParallelPlan) -> ParallelModel:
    """Lay ``model`` (a ``shardkit.models.GPT`` with every parameter on every rank) out over the ranks.

    Validates the plan against the world size and the model's shape before
    any process group is created (ValueError naming the field), builds the
    mesh, then applies PP split -> TP/SP -> activation checkpointing ->
    compile -> sharding. Every rank must call it with the same model values
    (same seed). Collective.
    """
    if not isinstance(plan, ParallelPlan):
        raise TypeError(
            f"plan: expected a shardkit.parallel.ParallelPlan, got {type(plan).__name__}"
        )
    plan.validate(world_size=_world_size(), config=getattr(model, "config", None))
    device = next(model.parameters()).device
    mesh = build_mesh(plan, device.type)
    pp_rank = 0 if mesh is None else mesh.get_local_rank("pp")

    # 1. PP split (with pp=1, one stage holding the whole model).
    stages = build_stages(model, pp_rank, plan.pp, plan.virtual_stages)
    for _, module in stages:
        # 2. TP / SP
        if plan.tp > 1:
            apply_gpt_tensor_parallel(
                module,
                mesh["tp"],
                sequence_parallel=plan.sequence_parallel,
                loss_parallel=plan.loss_parallel,
            )
            module.seq_shards = plan.tp if plan.sequence_parallel else 1
        # 3. activation checkpointing
        if plan.activation_checkpointing:
            from shardkit import checkpointing

            block_ids = {id(b) for b in module.layers.values()}
            checkpointing.apply(
                module,
                "every_block",
                blocks=lambda _name, m, ids=block_ids: id(m) in ids,
            )
        # 4. compile
        if plan.compile:
            for block in module.layers.values():
                block.compile()
        # 5. sharding
        if plan.dp > 1:
            _shard(module, mesh, plan)

    schedule, pp_stages = None, None
    if plan.pp > 1:
        from torch.distributed.pipelining import PipelineStage

        pp_group = mesh.get_group("pp")
        pp_stages = [
            PipelineStage(m, s, plan.num_stages, device, group=pp_group)
            for s, m in stages
        ]
        holder = {}
        schedule = build_schedule(
            plan.pp_schedule,
            pp_stages,
            plan.microbatches,
            lambda logits, labels: holder["pm"].loss_fn(logits, labels),
        )
    pm = ParallelModel(plan, mesh, stages, schedule, pp_stages)
    if plan.pp > 1:
        holder["pm"] = pm
    return pm


def _shard(module: GPTStage, mesh, plan: ParallelPlan) -> None:
    from torch.distributed.fsdp import fully_shard

    dp_mesh = (
        mesh["dp_replicate", "dp_shard"] if plan.dp_replicate > 1 else mesh["dp_shard"]
    )
    # Under PP the micro-batches would otherwise all-gather each block again; keep them gathered.
    reshard = plan.pp == 1
    for block in module.layers.values():
        fully_shard(block, mesh=dp_mesh, reshard_after_forward=reshard)
    fully_shard(module, mesh=dp_mesh, reshard_after_forward=reshard)
