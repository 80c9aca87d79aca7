"""Rank-side checks of shard()'s device code path on CPU: the "process_group" transport (torch.distributed
on gloo, the tensors' own device) against the shared-memory transport and a single-process model.

Every rank trains three copies of the same model on the same rows: one
sharded over shardkit.comm ("shm", today's CPU path), one over the process
group, and an unsharded reference on the whole global batch. The two sharded
runs differ only in who sums the gradients (a shared-memory ring or gloo),
so they agree to rounding.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from shardkit import comm, fsdp
from shardkit.fsdp.streams import StreamSet
from shardkit.fsdp.transport import HostTransport, ProcessGroupTransport
from shardkit.models.gpt import Block
from shardkit.trainers import data_parallel

from fsdp_cases import ROWS_PER_RANK, SEQ, TOL, global_batch, join, make_optimizers, tiny_gpt

PAIR_TOL = 1e-6  # shm vs process_group, fp32: the same math up to the order of the gradient sums


@contextlib.contextmanager
def shm_forbidden():
    """Any shardkit.comm collective inside raises: the process-group model must not touch shared memory."""
    names = ("all_gather", "reduce_scatter", "all_reduce", "barrier")
    saved = {n: getattr(comm, n) for n in names}

    def refuse(*args, **kwargs):
        raise AssertionError("the process_group transport called shardkit.comm")

    for n in names:
        setattr(comm, n, refuse)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(comm, n, fn)


def _full(model) -> dict[str, torch.Tensor]:
    return fsdp.full_state_dict(model, rank0_only=False)


def _max_diff(a: dict, b: dict) -> tuple[float, str]:
    assert sorted(a) == sorted(b), f"names differ: {sorted(a)} != {sorted(b)}"
    return max(((a[k].float() - b[k].float()).abs().max().item(), k) for k in a)


def train_pair(rank, world, strategy, optim, *, steps=3, accumulate=1, clip=None, policy=None,
               freeze=(), ref_tol=TOL):
    """shm vs process_group vs the single-process reference; returns the process-group model."""
    ref = tiny_gpt()
    for name, p in ref.named_parameters():
        if any(name.startswith(f) for f in freeze):
            p.requires_grad_(False)
    shm = fsdp.shard(copy.deepcopy(ref), units=[Block], strategy=strategy, mixed_precision=policy)
    with shm_forbidden():
        pg = fsdp.shard(copy.deepcopy(ref), units=[Block], strategy=strategy, mixed_precision=policy,
                        transport="process_group")
    assert isinstance(fsdp.get_state(shm).transport, HostTransport)
    assert isinstance(fsdp.get_state(pg).transport, ProcessGroupTransport)
    opt_shm, ref_opt = make_optimizers(optim, shm, ref)
    opt_pg, _ = make_optimizers(optim, pg, copy.deepcopy(ref))
    what = f"{strategy}/{optim}/world {world}" + (" bf16" if policy is not None else "")
    for step in range(steps):
        batch = global_batch(world * accumulate, step)
        ref_loss = ref(batch, labels=batch).loss
        ref_loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in ref.parameters() if p.requires_grad], clip)
        ref_opt.step()
        ref_opt.zero_grad()
        rows = batch.view(world, accumulate * ROWS_PER_RANK, SEQ)[rank].split(ROWS_PER_RANK)
        losses, norms = {}, {}
        for name, model, opt in (("shm", shm, opt_shm), ("pg", pg, opt_pg)):
            guard = shm_forbidden() if name == "pg" else contextlib.nullcontext()
            with guard:
                total = torch.zeros(())
                for i, micro in enumerate(rows):
                    ctx = fsdp.no_sync(model) if i < accumulate - 1 else contextlib.nullcontext()
                    with ctx:
                        loss = model(micro, labels=micro).loss / accumulate
                        loss.backward()
                    total += loss.detach().float()
                if clip is not None:
                    norms[name] = float(fsdp.clip_grad_norm_(model, clip))
                opt.step()
                opt.zero_grad()
                # The mean over ranks, through the model's own transport (data_parallel.all_reduce_).
                mean = data_parallel.all_reduce_(total.double().reshape(1), "sum", model) / world
            losses[name] = float(mean)
        assert abs(losses["pg"] - losses["shm"]) <= PAIR_TOL, f"{what}: step {step} loss pg {losses} "
        ref_value = ref_loss.item()
        assert abs(losses["pg"] - ref_value) <= ref_tol, f"{what}: step {step} {losses['pg']} vs {ref_value}"
        if clip is not None:
            assert abs(norms["pg"] - norms["shm"]) <= 1e-6 * norms["shm"], f"{what}: grad norms {norms}"
    full_shm = _full(shm)
    with shm_forbidden():
        full_pg = _full(pg)
    err, name = _max_diff(full_pg, full_shm)
    assert err <= PAIR_TOL, f"{what}: {name} differs from the shm run by {err}"
    err, name = _max_diff(full_pg, ref.state_dict())
    assert err <= ref_tol, f"{what}: {name} differs from the reference by {err}"
    return pg


class _Event:
    def __init__(self, log, stream):
        self.log, self.stream, self.waited = log, stream, 0
        log.append(("record", stream, self))

    def wait(self):
        self.waited += 1
        self.log.append(("wait", self.stream, self))


class RecordingStreams(StreamSet):
    """The CUDA stream protocol with the streams replaced by a log: which side stream each collective was
    issued on, and whether the compute stream waited for its event."""

    def __init__(self):
        super().__init__("cpu")
        self.log, self.current = [], "compute"

    @contextlib.contextmanager
    def side(self, name):
        self.stream(name)  # validates the name
        previous, self.current = self.current, name
        self.log.append(("enter", name, None))
        try:
            yield
        finally:
            self.current = previous

    def record(self):
        assert self.current != "compute", "an event recorded outside a side stream"
        return _Event(self.log, self.current)


def check_stream_protocol(rank, world, strategy):
    """Prefetches run on the all-gather stream, reductions on the reduce-scatter stream, and the compute
    stream waits for every side event before the step: checked on the process-group transport."""
    model = fsdp.shard(tiny_gpt(), units=[Block], strategy=strategy, transport="process_group")
    state = fsdp.get_state(model)
    streams = RecordingStreams()
    state.streams = streams
    for g in state.groups:
        g.streams = streams
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainable = sum(g.trainable for g in state.groups)
    for step in range(3):
        streams.log.clear()
        batch = global_batch(world, step)[rank * ROWS_PER_RANK : (rank + 1) * ROWS_PER_RANK]
        model(batch, labels=batch).loss.backward()
        events = [e for kind, _, e in streams.log if kind == "record"]
        # Every event the side streams recorded was waited on by the end of backward, once.
        assert all(e.waited == 1 for e in events), f"{strategy} step {step}: unwaited side events"
        rs = [e for e in events if e.stream == "reduce_scatter"]
        ag = [e for e in events if e.stream == "all_gather"]
        assert len(rs) == trainable, f"{strategy}: {len(rs)} reductions for {trainable} trainable groups"
        if strategy == "NO_SHARD" or step == 0:
            assert not ag, f"{strategy} step {step}: prefetch without an order to follow"
        else:  # forward prefetches the next blocks, backward the previous ones
            assert len(ag) >= len(state.units) - 1, f"{strategy} step {step}: only {len(ag)} prefetches"
        opt.step()
        opt.zero_grad()
    return True


def check_sharded_checkpoint(rank, world, model, directory):
    """save/load_sharded_checkpoint on the process-group transport (its barriers go through gloo)."""
    with shm_forbidden():
        fsdp.save_sharded_checkpoint(model, None, directory)
        fresh = fsdp.shard(tiny_gpt(seed=9), units=[Block], transport="process_group")
        fsdp.load_sharded_checkpoint(fresh, None, directory)
        err, name = _max_diff(_full(fresh), _full(model))
    assert err == 0, f"sharded checkpoint: {name} differs by {err} after the round trip"


def run_transport_parity(rank, world, directory):
    join()
    pg = train_pair(rank, world, "FULL_SHARD", "adamw", clip=0.05)
    check_sharded_checkpoint(rank, world, pg, directory)
    train_pair(rank, world, "SHARD_GRAD_OP", "sgd", accumulate=2, freeze=("layers.0.mlp",))
    train_pair(rank, world, "NO_SHARD", "adamw")
    # bf16 compute from fp32 master shards (FusedAdamW steps the fp32 shards), gradients reduced in fp32.
    policy = fsdp.MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    pg = train_pair(rank, world, "FULL_SHARD", "adamw", policy=policy, ref_tol=3e-2)
    assert all(p.dtype == torch.float32 for p in pg.parameters())
    assert all(g.full.dtype == torch.bfloat16 for g in fsdp.get_state(pg).groups)
    for strategy in ("FULL_SHARD", "NO_SHARD"):
        check_stream_protocol(rank, world, strategy)
    assert not torch.cuda.is_initialized()
    return True

