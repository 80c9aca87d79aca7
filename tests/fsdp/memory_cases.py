"""Rank-side measurement of what a sharded training step holds, for checking ``shardkit.memory.estimate``.

The model is ``memory.ReferenceDecoder`` (the architecture the activation
formula itemizes) with a realistically shaped spec: the root (embedding, norm,
head) a little larger than a block, as in Llama-7B. One fp32 AdamW step warms
the optimizer up; the second step is measured:

* model states: bytes of the flat shards, their ``.grad`` and the optimizer
  state after the step (``memory.model_state_bytes``);
* communication buffers: ``CommBufferProbe`` samples, after every tensor op
  of the step, the bytes of gathered parameter buffers alive and of full
  gradients not yet reduced (a unit's ``full.grad`` while it accumulates and
  the inputs of reduce-scatters in flight), and keeps the peak of their sum;
* activations: storages autograd saves in the forward
  (``memory.SavedActivationCounter``), not counting parameters, shards or
  gathered buffers.
"""

from __future__ import annotations

import torch

from shardkit import comm, fsdp
from shardkit.memory import CommBufferProbe, DecoderSpec, SavedActivationCounter, estimate, model_state_bytes
from shardkit.memory.reference_model import DecoderBlock, ReferenceDecoder
from shardkit.optim import FusedAdamW

SPEC = DecoderSpec(vocab=1000, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=344)
ROWS, SEQ = 2, 64  # per rank


def _step(model, opt, rank, step, probe_state=None):
    gen = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(0, SPEC.vocab, (ROWS * 64, SEQ), generator=gen)[rank * ROWS : (rank + 1) * ROWS]
    labels = torch.roll(ids, -1, dims=1)
    state = fsdp.get_state(model)
    if probe_state is None:
        model(ids, labels).backward()
        opt.step()
        opt.zero_grad()
        return None
    exclude = [*model.parameters(), *model.buffers(), *(g.full for g in state.groups)]
    with CommBufferProbe(state) as probe:
        with SavedActivationCounter(exclude=exclude) as saved:
            loss = model(ids, labels)
        activations = saved.bytes
        loss.backward()
        opt.step()
    return probe, activations


def run_measure(rank, world, strategies):
    """``{strategy: {measured..., estimated...}}`` for this rank, each after a fp32 AdamW step."""
    torch.set_num_threads(1)
    comm.init()
    return {strategy: _measure(rank, world, strategy) for strategy in strategies}


def _measure(rank, world, strategy):
    torch.manual_seed(0)
    model = fsdp.shard(ReferenceDecoder(SPEC, max_seq_len=SEQ), units=[DecoderBlock], strategy=strategy)
    state = fsdp.get_state(model)
    opt = FusedAdamW(model.parameters(), lr=1e-3)
    _step(model, opt, rank, 0)
    probe, activations = _step(model, opt, rank, 1, probe_state=True)
    measured = model_state_bytes(model, opt)
    host_size = state.shard_world_size if strategy == "HYBRID" else None
    est = estimate(SPEC, optimizer="adamw", precision="fp32", strategy=strategy, world_size=world, host_size=host_size,
                   batch=ROWS, seq_len=SEQ)
    flat_numel = sum(g.shard_numel * g.shard_world for g in state.groups)
    return {
        "measured": {**measured, "comm_peak": probe.peak, "gathered": probe.peak_gathered,
                     "unreduced": probe.peak_unreduced, "activations": activations, "padding": flat_numel - SPEC.params},
        "estimated": {item.name: item.bytes for item in est.items},
        "estimated_comm_parts": dict(est.items[-1].parts),
    }
