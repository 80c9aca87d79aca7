"""Tensor and sequence parallelism (Megatron-LM's layout) as DTensor plans for ``parallelize_module``.

Per block: q/k/v and gate/up are column-parallel (each TP rank owns
``num_heads / tp`` heads and ``intermediate_size / tp`` columns), o and down
are row-parallel, so a block costs one all-reduce in forward and one in
backward per sub-layer. With sequence parallelism the residual stream and
the norms between sub-layers stay sharded along the sequence (dim 1): the
all-reduce becomes a reduce-scatter after o/down plus an all-gather before
q/k/v and gate/up (same bytes), and norm activations shrink by ``tp``.

The embedding is row-parallel over the vocabulary; the head is column-parallel
over the vocabulary. With loss parallelism the logits stay sharded along the
vocabulary (``Shard(-1)``) and the cross-entropy combines per-rank partial
log-sum-exps (``torch.distributed.tensor.parallel.loss_parallel``), so the
(B, T, V) logits are never gathered.

The silent bug this layout invites: a sequence-parallel norm weight is
replicated, but each TP rank only sees its slice of the sequence, so its
gradient is a *partial* sum (DTensor ``Partial``). Something must all-reduce
it across the TP group before the update, or the copies drift apart and the
loss diverges slowly. ``reduce_partial_grads`` does that, once per step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)


def gpt_block_plan(*, sequence_parallel: bool) -> dict:
    """The plan of one ``shardkit.models.gpt.Block`` (keys relative to the block)."""
    seq = Shard(1) if sequence_parallel else Replicate()
    # Attention.forward(x, cos, sin, mask, cache): only x is a sharded activation.
    plan = {
        "self_attn": PrepareModuleInput(
            input_layouts=(seq, None, None, None, None),
            desired_input_layouts=(Replicate(), None, None, None, None),
        ),
        "self_attn.q_proj": ColwiseParallel(),
        "self_attn.k_proj": ColwiseParallel(),
        "self_attn.v_proj": ColwiseParallel(),
        "self_attn.o_proj": RowwiseParallel(output_layouts=seq),
        "mlp": PrepareModuleInput(
            input_layouts=(seq,), desired_input_layouts=(Replicate(),)
        ),
        "mlp.gate_proj": ColwiseParallel(),
        "mlp.up_proj": ColwiseParallel(),
        "mlp.down_proj": RowwiseParallel(output_layouts=seq),
    }
    if sequence_parallel:
        plan["input_layernorm"] = SequenceParallel()
        plan["post_attention_layernorm"] = SequenceParallel()
    return plan


def gpt_outer_plan(
    *, sequence_parallel: bool, loss_parallel: bool, has_embed: bool, has_head: bool
) -> dict:
    """The embedding, final norm and head of a GPT (or of the pipeline stages that hold them)."""
    seq = Shard(1) if sequence_parallel else Replicate()
    plan = {}
    if has_embed:
        plan["embed_tokens"] = RowwiseParallel(
            input_layouts=Replicate(), output_layouts=seq
        )
    if has_head:
        if sequence_parallel:
            plan["norm"] = SequenceParallel()
        # Local output either way: a pipeline stage sends plain tensors, and the loss
        # function rebuilds the vocabulary-sharded DTensor (see parallel.loss).
        plan["lm_head"] = ColwiseParallel(
            input_layouts=seq,
            output_layouts=Shard(-1) if loss_parallel else Replicate(),
            use_local_output=True,
        )
    return plan


def apply_gpt_tensor_parallel(
    module: nn.Module, tp_mesh, *, sequence_parallel: bool, loss_parallel: bool
) -> None:
    """Parallelize a GPT or a GPT pipeline stage in place over ``tp_mesh`` (1-D)."""
    has_embed = getattr(module, "embed_tokens", None) is not None
    has_head = getattr(module, "lm_head", None) is not None
    outer = gpt_outer_plan(
        sequence_parallel=sequence_parallel,
        loss_parallel=loss_parallel,
        has_embed=has_embed,
        has_head=has_head,
    )
    if outer:
        parallelize_module(module, tp_mesh, outer)
    for block in _blocks(module):
        parallelize_module(
            block, tp_mesh, gpt_block_plan(sequence_parallel=sequence_parallel)
        )


def llama_tp_plan(
    *, sequence_parallel: bool = True, loss_parallel: bool = True, num_layers: int
) -> dict:
    """A ``parallelize_module`` plan for an HF ``LlamaForCausalLM`` (module name -> style).

    HF's attention reshapes with ``-1`` heads, so it runs on the local heads as
    is. Its decoder layer passes ``hidden_states`` as the first argument and the
    rotary ``position_embeddings`` as a keyword; only ``hidden_states`` is sharded.
    Under sequence parallelism pass ``position_ids`` (B, T) to the model: it
    would otherwise count positions from the T / tp local embeddings.
    """
    seq = Shard(1) if sequence_parallel else Replicate()
    plan = {
        "model.embed_tokens": RowwiseParallel(
            input_layouts=Replicate(), output_layouts=seq
        ),
        "lm_head": ColwiseParallel(
            input_layouts=seq,
            output_layouts=Shard(-1) if loss_parallel else Replicate(),
            use_local_output=not loss_parallel,
        ),
    }
    if sequence_parallel:
        plan["model.norm"] = SequenceParallel()
    for i in range(num_layers):
        p = f"model.layers.{i}."
        plan.update(
            {
                p + "self_attn": PrepareModuleInput(
                    input_kwarg_layouts={"hidden_states": seq},
                    desired_input_kwarg_layouts={"hidden_states": Replicate()},
                ),
                p + "self_attn.q_proj": ColwiseParallel(),
                p + "self_attn.k_proj": ColwiseParallel(),
                p + "self_attn.v_proj": ColwiseParallel(),
                p + "self_attn.o_proj": RowwiseParallel(output_layouts=seq),
                p + "mlp": PrepareModuleInput(
                    input_layouts=(seq,), desired_input_layouts=(Replicate(),)
                ),
                p + "mlp.gate_proj": ColwiseParallel(),
                p + "mlp.up_proj": ColwiseParallel(),
                p + "mlp.down_proj": RowwiseParallel(output_layouts=seq),
            }
        )
        if sequence_parallel:
            plan[p + "input_layernorm"] = SequenceParallel()
            plan[p + "post_attention_layernorm"] = SequenceParallel()
    return plan


def _blocks(module: nn.Module):
    layers = getattr(module, "layers", None)
    if layers is None:
        return []
    return list(layers.values()) if isinstance(layers, nn.ModuleDict) else list(layers)


@torch.no_grad()
def reduce_partial_grads(params) -> int:
    """Redistribute every DTensor gradient to its parameter's placements, in place.

    For a sequence-parallel norm weight (``Partial`` gradient) that is the
    all-reduce across the TP group; without it each TP rank would step its
    replica with a different gradient. Any other mismatch is a layout the
    optimizer would convert at every step anyway: the vocabulary-sharded
    embedding's gradient comes back ``Replicate``, a full (V, H) tensor on
    every TP rank, which this cuts back to the rank's shard. Returns how many
    gradients were redistributed. Collective over the meshes of those
    parameters: every rank must call it at the same point.
    """
    reduced = 0
    for p in params:
        g = p.grad
        if isinstance(g, DTensor) and tuple(g.placements) != tuple(p.placements):
            p.grad = g.redistribute(p.device_mesh, p.placements)
            reduced += 1
    return reduced
