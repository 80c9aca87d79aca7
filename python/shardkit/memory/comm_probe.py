"""``CommBufferProbe``: the communication buffers a sharded step really holds, to check the estimate.

``shard()`` keeps two kinds of transient full-size buffers besides the shards:
gathered unit parameters (the one computing, the root, the prefetched next
one) and full gradients not reduced yet (a unit's ``full.grad`` while it
accumulates, and the inputs of reduce-scatters in flight). The probe samples
both after every tensor op of the step and keeps the peak of their sum::

    with CommBufferProbe(fsdp.get_state(model)) as probe:
        model(x).loss.backward()
    probe.peak, probe.peak_gathered, probe.peak_unreduced
"""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


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
        # Every group's reduce-scatter goes through its transport: sample as it starts.
        self._transports = list({id(g.transport): g.transport for g in self.state.groups
                                 if g.transport is not None}.values())
        for transport in self._transports:
            real = transport.reduce_scatter_avg

            def reduce_scatter_avg(out, inp, *args, real=real, **kwargs):
                self.sample(extra=inp)
                return real(out, inp, *args, **kwargs)

            transport.reduce_scatter_avg = reduce_scatter_avg  # an instance attribute, deleted on exit
        self._hooks = [g.full.register_hook(self._on_grad) for g in self.state.groups if g.trainable]
        return super().__enter__()

    def _on_grad(self, grad):
        self.sample(extra=grad)

    def __exit__(self, *exc):
        for transport in self._transports:
            del transport.reduce_scatter_avg
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
