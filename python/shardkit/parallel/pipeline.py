"""Pipeline parallelism: cutting a ``GPT`` into stages by blocks, and the schedule that runs them.

Stage ``s`` of ``S`` holds a contiguous run of blocks; the first also holds the
embedding, the last the final norm and the head. A stage keeps the GPT's
parameter names (``layers.5.mlp.up_proj.weight``), so the stages' state dicts
together are the model's. The interleaved schedules give each pipeline rank
``v`` stages in a loop (rank r holds stages r, r+pp, ...), which shrinks the
bubble from (p-1)/(m+p-1) to (p-1)/(v*m+p-1).

The schedules are torch's (``torch.distributed.pipelining``); the loss is the
sum of token losses of a micro-batch divided by the token count of the whole
batch, with ``scale_grads=False``, so the gradients are exactly those of the
batch mean whatever the micro-batching (mean-of-means would weigh padded
micro-batches wrongly).
"""

from __future__ import annotations

import torch
from torch import nn

from shardkit.models.gpt import GPT


class GPTStage(nn.Module):
    """A slice of a ``GPT``: optional embedding, some blocks, optional final norm and head.

    ``forward(input_ids (B, T))`` on the first stage, ``forward(hidden (B, T', H))``
    on the others (T' = T / tp under sequence parallelism); returns the hidden
    state, or the logits (B, T, V or V/tp) on the last stage. Positions are
    0..T-1 (pre-training batches: no padding, no packing).
    """

    def __init__(
        self, model: GPT, layer_ids: list[int], *, first: bool, last: bool
    ) -> None:
        super().__init__()
        self.config = model.config
        self.embed_tokens = model.embed_tokens if first else None
        # A ModuleDict keyed by the GPT's layer index keeps the GPT's parameter names.
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in layer_ids})
        self.norm = model.norm if last else None
        self.lm_head = model.lm_head if last else None
        self.rotary = model.rotary
        self.seq_shards = 1  # tp under sequence parallelism: the hidden state holds T / seq_shards positions

    @property
    def is_first(self) -> bool:
        return self.embed_tokens is not None

    @property
    def is_last(self) -> bool:
        return self.lm_head is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed_tokens is not None:
            t = x.shape[1]
            x = self.embed_tokens(x)  # (B, T, H), or (B, T/tp, H) sequence-sharded
        else:
            t = x.shape[1] * self.seq_shards
        positions = torch.arange(t, device=x.device)[None]  # (1, T)
        cos, sin = self.rotary(positions, x.dtype)
        for block in self.layers.values():
            x = block(x, cos, sin, None, None)
        if self.lm_head is not None:
            x = self.lm_head(self.norm(x))  # (B, T, V) or (B, T, V/tp)
        return x


def layer_split(num_layers: int, num_stages: int) -> list[list[int]]:
    """Contiguous, as even as possible: stage s gets blocks [s*L//S, (s+1)*L//S)."""
    return [
        list(range(s * num_layers // num_stages, (s + 1) * num_layers // num_stages))
        for s in range(num_stages)
    ]


def stage_ids(pp_rank: int, pp: int, virtual: int) -> list[int]:
    """The stages pipeline rank ``pp_rank`` holds: r, r+pp, ... (loop order, as the interleaved schedules expect)."""
    return [pp_rank + k * pp for k in range(virtual)]


def build_stages(
    model: GPT, pp_rank: int, pp: int, virtual: int
) -> list[tuple[int, GPTStage]]:
    """(stage index, stage module) of this rank; the blocks of other ranks' stages are left to the garbage collector."""
    if not isinstance(model, GPT):
        raise TypeError(
            f"model: pipeline parallelism splits a shardkit GPT, got {type(model).__name__}"
        )
    num_stages = pp * virtual
    split = layer_split(model.config.num_layers, num_stages)
    return [
        (s, GPTStage(model, split[s], first=s == 0, last=s == num_stages - 1))
        for s in stage_ids(pp_rank, pp, virtual)
    ]


def build_schedule(kind: str, stages: list, microbatches: int, loss_fn):
    """The torch schedule named ``kind`` over this rank's ``PipelineStage`` objects."""
    from torch.distributed import pipelining as pl

    if kind == "gpipe":
        return pl.ScheduleGPipe(
            stages[0], microbatches, loss_fn=loss_fn, scale_grads=False
        )
    if kind == "1f1b":
        return pl.Schedule1F1B(
            stages[0], microbatches, loss_fn=loss_fn, scale_grads=False
        )
    if kind == "interleaved_1f1b":
        return pl.ScheduleInterleaved1F1B(
            stages, microbatches, loss_fn=loss_fn, scale_grads=False
        )
    if kind == "zero_bubble":
        return pl.ScheduleInterleavedZeroBubble(
            stages, microbatches, loss_fn=loss_fn, scale_grads=False
        )
    raise ValueError(f"pp_schedule: unknown schedule {kind!r}")


def bubble_formula(pp: int, microbatches: int, virtual: int = 1) -> float:
    """Idle fraction of an ideal schedule: (p-1)/(v*m+p-1) (v=1: GPipe and 1F1B)."""
    return (pp - 1) / (virtual * microbatches + pp - 1)
