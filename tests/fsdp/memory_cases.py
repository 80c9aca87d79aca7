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

from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from shardkit import comm, fsdp
from shardkit.fsdp import flat_param
from shardkit.memory import DecoderSpec, SavedActivationCounter, estimate, model_state_bytes
from shardkit.memory.reference_model import DecoderBlock, ReferenceDecoder
from shardkit.optim import FusedAdamW

SPEC = DecoderSpec(vocab=1000, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=344)
ROWS, SEQ = 2, 64  # per rank


class CommBufferProbe(TorchDispatchMode):
    """Peak bytes of gathered parameters plus unreduced full gradients.

    Sampled after every tensor op, when a unit's full gradient reaches its
    flat buffer (a hook on it) and when ``shard()``'s code launches a
    reduce-scatter: at those two moments the gradient is alive but held by no
    attribute yet.
    """

    def __init__(self, state) -> None:
        super().__init__()
        self.state = state
        self.peak = 0  # gathered + unreduced, at the worst moment
        self.peak_gathered = 0
        self.peak_unreduced = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.sample()
        return out

    def __enter__(self):
        real = flat_param.comm

        def reduce_scatter(out, inp, *args, **kwargs):
            self.sample(extra=inp)
            return real.reduce_scatter(out, inp, *args, **kwargs)

        flat_param.comm = SimpleNamespace(all_gather=real.all_gather, all_reduce=real.all_reduce,
                                          reduce_scatter=reduce_scatter)
        self._real = real
        self._hooks = [g.full.register_hook(self._on_grad) for g in self.state.groups if g.trainable]
        return super().__enter__()

    def _on_grad(self, grad):
        self.sample(extra=grad)

    def __exit__(self, *exc):
        flat_param.comm = self._real
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    def sample(self, extra=None) -> None:
        sharded = self.state.strategy != "NO_SHARD"
        storages = {}
        if extra is not None and sharded:
            storages[extra.untyped_storage()._cdata] = extra.untyped_storage().nbytes()
        gathered = 0
        for g in self.state.groups:
            if not g.alias:  # with alias the "full" buffer is the shard itself
                gathered += g.full.untyped_storage().nbytes()
            # NO_SHARD reduces the gradient in place and keeps it as .grad: no extra buffer.
            unreduced = [g.full.grad] + [inp for _, _, inp in g.pending] if sharded else []
            for t in unreduced:
                if t is not None:
                    storages[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        unreduced = sum(storages.values())
        self.peak_gathered = max(self.peak_gathered, gathered)
        self.peak_unreduced = max(self.peak_unreduced, unreduced)
        self.peak = max(self.peak, gathered + unreduced)


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
