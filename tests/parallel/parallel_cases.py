"""Rank-side checks of shardkit.parallel: a plan's training against one process training the same GPT.

Every rank builds the same tiny GPT (same seed) and the same global batch;
data-parallel replica d takes rows [d*B/dp, (d+1)*B/dp), the TP and PP ranks
of one replica see the same rows. The reference (``reference_run``) trains an
unparallelised copy on the whole batch with the same optimizer (torch.optim
SGD: plain arithmetic, so a wrong gradient scale shows up in the losses).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from shardkit.models import GPT
from shardkit.models.config import GPTConfig

STEPS, BATCH, SEQ, VOCAB = 5, 4, 16, 64
LR = 0.5


def tiny_config(num_layers: int = 4) -> GPTConfig:
    return GPTConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_layers=num_layers,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )


def tiny_gpt(num_layers: int = 4) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config(num_layers))


def batch(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)  # (B, T)


def reference_run(
    num_layers: int = 4, steps: int = STEPS
) -> tuple[list[float], list[float]]:
    """Losses and gradient norms of plain single-process training (the spec)."""
    model = tiny_gpt(num_layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    losses, norms = [], []
    for step in range(steps):
        ids = batch(step)
        logits = model(ids).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        norms.append(
            float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))
        )
        losses.append(float(loss.detach()))
        opt.step()
        opt.zero_grad()
    return losses, norms


def replica_rows(pm) -> slice:
    plan = pm.plan
    if pm.mesh is None or plan.dp == 1:
        return slice(0, BATCH)
    d = pm.mesh.get_local_rank("dp_replicate") * plan.dp_shard + pm.mesh.get_local_rank(
        "dp_shard"
    )
    per = BATCH // plan.dp
    return slice(d * per, (d + 1) * per)


def parallel_run(
    plan,
    num_layers: int = 4,
    steps: int = STEPS,
    local_update: bool = False,
    reduce: bool = True,
):
    """Losses and gradient norms under ``plan`` (the same on every rank), and the final norm weights.

    ``local_update``: step each parameter's local shard with its local gradient
    shard (what a fused optimizer on DTensors does), rather than torch.optim on
    DTensors. ``reduce=False`` skips the partial-gradient all-reduce (the
    negative control of the sequence-parallel norm test).
    """
    import importlib

    from shardkit import parallel
    from torch.distributed.tensor import DTensor

    par_mod = importlib.import_module(
        "shardkit.parallel.parallelize"
    )  # the module, not the function
    pm = parallel.parallelize(tiny_gpt(num_layers), plan)
    if (
        not reduce
    ):  # the bug: no reduction of SP norm gradients (this child process only)
        par_mod.reduce_partial_grads = lambda params: 0
    opt = (
        None
        if local_update
        else torch.optim.SGD(list(pm.parameters()), lr=LR, foreach=False)
    )
    losses, norms = [], []
    rows = replica_rows(pm)
    for step in range(steps):
        ids = batch(step)[rows]
        losses.append(float(pm.forward_backward(ids)))
        if reduce:
            norms.append(float(parallel.clip_grad_norm_(pm, None)))
        if opt is not None:
            opt.step()
        else:
            with torch.no_grad():
                for p in pm.parameters():
                    local = p._local_tensor if isinstance(p, DTensor) else p
                    g = p.grad
                    if isinstance(g, DTensor):
                        # Layout changes that are not reductions are applied (a fused optimizer
                        # does so too); a Partial gradient is used as it is, unreduced.
                        if g.placements != p.placements and not any(
                            pl.is_partial() for pl in g.placements
                        ):
                            g = g.redistribute(p.device_mesh, p.placements)
                        g = g._local_tensor
                    local.add_(g, alpha=-LR)
        if step == steps - 1:  # what this rank really holds, for the memory estimate
            _LAST_LOCAL_NUMEL[:] = [
                sum(_local(p).numel() for p in pm.parameters()),
                sum(
                    _local(p.grad).numel()
                    for p in pm.parameters()
                    if p.grad is not None
                ),
            ]
        pm.zero_grad()
    # Lists, not tensors: results travel back through a pipe.
    norm_weights = {
        n: (p._local_tensor if isinstance(p, DTensor) else p).detach().tolist()
        for n, p in pm.named_parameters()
        if n.endswith("layernorm.weight")
    }
    return losses, norms, norm_weights


def _local(t):
    from torch.distributed.tensor import DTensor

    return t._local_tensor if isinstance(t, DTensor) else t


def run_plans(rank, world_size, plans, num_layers):
    """Several plans one after the other in the same processes (one spawn, several meshes).

    Per plan: losses, grad norms, and this rank's measured local parameter and gradient elements.
    """
    from shardkit.parallel import ParallelPlan

    return [
        parallel_run(ParallelPlan(**kw), num_layers)[:2] + (_LAST_LOCAL_NUMEL[:],)
        for kw in plans
    ]


_LAST_LOCAL_NUMEL = [
    0,
    0,
]  # [params, grads] of the last parallel_run's model on this rank


def world2_cases(rank, world_size, plans, num_layers):
    """The world-2 plans and the HF Llama plan in one spawn (process start-up is most of a small test's time)."""
    return run_plans(rank, world_size, plans, num_layers), hf_llama_tp(rank, world_size)


def sp_norm_drift(rank, world_size):
    """tp=2 with sequence parallelism and local-shard updates, with and without the gradient reduction."""
    from shardkit.parallel import ParallelPlan

    plan = {"tp": 2, "sequence_parallel": True}
    with_reduce = parallel_run(ParallelPlan(**plan), num_layers=2, local_update=True)
    without = parallel_run(
        ParallelPlan(**plan), num_layers=2, local_update=True, reduce=False
    )
    return with_reduce[0], with_reduce[2], without[0], without[2]


def save_tp_checkpoint(rank, world_size, path):
    from shardkit import parallel

    pm = parallel.parallelize(tiny_gpt(2), parallel.ParallelPlan(tp=2))
    opt = torch.optim.SGD(list(pm.parameters()), lr=LR, foreach=False)
    losses = []
    for step in range(2):
        losses.append(float(pm.forward_backward(batch(step))))
        opt.step()
        pm.zero_grad()
    parallel.save_full_state_dict(pm, path)
    return float(pm.forward_backward(batch(2)))


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def hf_llama_tp(rank, world_size):
    """Per SP setting: max logit difference and gradient norms of a tiny HF Llama under ``llama_tp_plan``
    (tp = world) and unparallelised."""
    return [_hf_llama_tp(world_size, sp) for sp in (False, True)]


def _hf_llama_tp(world_size, sequence_parallel):
    import copy

    from shardkit.parallel import llama_tp_plan
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.parallel import parallelize_module
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        attn_implementation="sdpa",
    )
    ref = LlamaForCausalLM(config)
    model = copy.deepcopy(ref)
    mesh = init_device_mesh("cpu", (world_size,), mesh_dim_names=("tp",))
    # Explicit position_ids: under SP the model sees T / tp embeddings and would count positions from them.
    plan = llama_tp_plan(
        sequence_parallel=sequence_parallel, loss_parallel=False, num_layers=2
    )
    parallelize_module(model, mesh, plan)
    ids = batch(0)
    pos = torch.arange(SEQ)[None].expand(BATCH, SEQ)
    got = model(input_ids=ids, position_ids=pos).logits  # (B, T, V), replicated
    want = ref(input_ids=ids).logits
    got.float().logsumexp(-1).sum().backward()
    want.float().logsumexp(-1).sum().backward()
    norm = lambda ps: float(
        sum(
            (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad)
            .pow(2)
            .sum()
            for p in ps
        )
        ** 0.5
    )
    return (
        float((got - want).abs().max().detach()),
        norm(model.parameters()),
        norm(ref.parameters()),
    )


def fused_adamw_losses(plan_kwargs, steps: int = 3) -> list[float]:
    """Losses of shardkit's FusedAdamW stepping the local DTensor shards under a plan."""
    from shardkit import parallel
    from shardkit.optim import FusedAdamW

    pm = parallel.parallelize(tiny_gpt(4), parallel.ParallelPlan(**plan_kwargs))
    opt = FusedAdamW(list(pm.parameters()), lr=1e-3, weight_decay=0.0)
    losses = []
    for step in range(steps):
        losses.append(float(pm.forward_backward(batch(step)[replica_rows(pm)])))
        opt.step()
        pm.zero_grad()
    return losses


def torch_adamw_losses(steps: int = 3) -> list[float]:
    model = tiny_gpt(4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    losses = []
    for step in range(steps):
        ids = batch(step)
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def world4_cases(rank, world_size, plans, num_layers):
    """The world-4 plans, then FusedAdamW on dp_shard2 x tp2 (FSDP2 x TP shards) in the same processes."""
    return run_plans(rank, world_size, plans, num_layers), fused_adamw_losses(
        {"dp_shard": 2, "tp": 2}
    )


ACTIVATION_PLANS = [  # tests/parallel/test_parallel_memory.py, on 2 ranks
    {"tp": 2},  # SP: norms on T / 2 positions, the linears' inputs gathered to T
    {"tp": 2, "sequence_parallel": False, "loss_parallel": False},
    {"tp": 2, "activation_checkpointing": True},
    {"pp": 2, "pp_schedule": "1f1b", "microbatches": 2},  # stage 0: 2 in flight, stage 1: 1
    {"pp": 2, "pp_schedule": "interleaved_1f1b", "microbatches": 4},
    {"pp": 2, "pp_schedule": "zero_bubble", "microbatches": 4},  # weight backwards deferred
]


def activation_peaks(rank, world_size, plans, num_layers=4):
    """Per plan: the most saved-activation bytes this rank held at once during one step (DTensors by
    their local shards), counted with saved-tensor hooks (``SavedActivationCounter(track_peak=True)``)."""
    from shardkit import parallel
    from shardkit.memory import SavedActivationCounter

    peaks = []
    for kw in plans:
        pm = parallel.parallelize(tiny_gpt(num_layers), parallel.ParallelPlan(**kw))
        ids = batch(0)[replica_rows(pm)]
        with SavedActivationCounter(exclude=list(pm.parameters()), track_peak=True) as saved:
            pm.forward_backward(ids)
        peaks.append(saved.peak_bytes)
    return peaks
