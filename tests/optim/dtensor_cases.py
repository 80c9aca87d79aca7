"""Rank-side cases for the fused optimizers on DTensor parameters (run by shardkit.testing.spawn).

The anchor is torch.optim on the same DTensor model: torch FSDP2 (``fully_shard``)
and tensor parallel (``parallelize_module``) give both optimizers the same
parameters and gradients, so after a few steps their parameters must agree.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from safetensors.torch import load_file, save_file

from shardkit.optim import FusedAdam, FusedAdamW, FusedSGD

# 11 and 6 rows shard unevenly over 2, 3 and 4 ranks (FSDP2); TP splits HIDDEN evenly, as it requires.
VOCAB, DIM, HIDDEN, SEQ = 11, 6, 12, 8

PAIRS = {
    "adamw": (FusedAdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "adam": (FusedAdam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.05, amsgrad=True)),
    "sgd": (FusedSGD, torch.optim.SGD, dict(lr=5e-2, momentum=0.9, nesterov=True, weight_decay=0.01)),
}


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.up = nn.Linear(DIM, HIDDEN)
        self.down = nn.Linear(HIDDEN, DIM)

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.down(F.gelu(self.up(self.norm(x))))


class TiedLM(nn.Module):
    """Embedding tied to the output head, two residual blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx):  # (B, T) -> (B, T, V)
        x = self.emb(idx)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, VOCAB, (3, SEQ), generator=gen)
    return idx, torch.randint(0, VOCAB, (3, SEQ), generator=gen)


def lm_loss(model, seed):
    idx, targets = batch(seed)
    return F.cross_entropy(model(idx).flatten(0, 1), targets.flatten())


def fsdp2_model(dtype=torch.float32, mesh=None):
    torch.manual_seed(0)
    model = TiedLM().to(dtype)
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    worst = 0.0
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        full_x = x.full_tensor() if isinstance(x, DTensor) else x
        full_y = y.full_tensor() if isinstance(y, DTensor) else y
        worst = max(worst, (full_x.float() - full_y.float()).abs().max().item())
    return worst


def train_pair(make_model, loss_fn, name: str, steps: int = 5):
    """The same model under shardkit's optimizer and torch's; returns the largest parameter difference."""
    ours_cls, theirs_cls, kwargs = PAIRS[name]
    ours, theirs = make_model(), make_model()
    opt_ours = ours_cls(ours.parameters(), **kwargs)
    opt_theirs = theirs_cls(theirs.parameters(), foreach=False, **kwargs)
    for step in range(steps):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            loss_fn(model, step).backward()
            opt.step()
            opt.zero_grad()
    return max_param_diff(ours, theirs), opt_ours


# ---- FSDP2 ---------------------------------------------------------------------------


def run_fsdp2_parity(rank, world, name):
    diff, opt = train_pair(fsdp2_model, lambda m, s: lm_loss(m, 100 * s + rank), name)
    for p in opt.param_groups[0]["params"]:
        for key, value in opt.state[p].items():
            if key != "step" and value is not None:
                assert isinstance(value, DTensor) and value.placements == p.placements, (key, type(value))
                assert value._local_tensor.shape == p._local_tensor.shape, key
    return diff


def run_fsdp2_bf16_masters(rank, world):
    """A bf16-sharded FSDP2 model: fp32 masters in the state, updated as torch AdamW updates fp32 copies."""
    model = fsdp2_model(torch.bfloat16)
    opt = FusedAdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    # The anchor: torch AdamW on fp32 DTensor copies of the parameters, fed the same (upcast) gradients.
    shadows = [nn.Parameter(DTensor.from_local(p._local_tensor.float(), p.device_mesh, p.placements,
                                               shape=p.shape, stride=p.stride())) for p in model.parameters()]
    anchor = torch.optim.AdamW(shadows, lr=1e-2, weight_decay=0.1, foreach=False)
    losses = []
    for step in range(8):
        loss = lm_loss(model, 3 if step % 2 else 4)  # two batches in turn: the loss must fall
        loss.backward()
        losses.append(loss.item())
        for p, shadow in zip(model.parameters(), shadows):
            shadow.grad = DTensor.from_local(p.grad._local_tensor.float(), p.device_mesh, p.placements,
                                             shape=p.shape, stride=p.stride())
        opt.step()
        anchor.step()
        opt.zero_grad()
    worst = 0.0
    for p, shadow in zip(model.parameters(), shadows):
        master = opt.state[p]["master_param"]
        assert isinstance(master, DTensor) and master.dtype == torch.float32
        assert master.placements == p.placements and master.device_mesh == p.device_mesh
        assert torch.equal(master._local_tensor.to(torch.bfloat16), p._local_tensor)
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        worst = max(worst, (master._local_tensor - shadow._local_tensor).abs().max().item())
    return worst, losses[-2:] < losses[:2]  # both batches' losses fell


# ---- tensor parallel -------------------------------------------------------------------

TP_PLAN = {
    "norm": SequenceParallel(),
    "up": ColwiseParallel(input_layouts=Shard(1)),
    "down": RowwiseParallel(output_layouts=Shard(1)),
}


def tp_model(mesh):
    torch.manual_seed(0)
    model = Block()
    parallelize_module(model, mesh, TP_PLAN)
    return model


def tp_loss(seed):
    def loss(model, step):
        gen = torch.Generator().manual_seed(1000 * seed + step)
        x = torch.randn(2, SEQ, DIM, generator=gen)  # the local sequence shard (sequence parallel)
        return model(x).pow(2).mean()

    return loss


def run_tp_parity(rank, world, name):
    mesh = init_device_mesh("cpu", (world,))
    diff, opt = train_pair(lambda: tp_model(mesh), tp_loss(rank), name)
    placements = {tuple(p.placements) for p in opt.param_groups[0]["params"]}
    assert {(Shard(0),), (Shard(1),), (Replicate(),)} <= placements, placements
    return diff


def run_fsdp2_tp_parity(rank, world, name):
    """2-D mesh: TP inside pairs of ranks, FSDP2 across them."""
    mesh = init_device_mesh("cpu", (world // 2, 2), mesh_dim_names=("dp", "tp"))

    def make():
        model = tp_model(mesh["tp"])
        fully_shard(model, mesh=mesh["dp"])
        return model

    diff, opt = train_pair(make, tp_loss(rank), name)
    assert all(p.device_mesh.ndim == 2 for p in opt.param_groups[0]["params"])
    return diff


# ---- distributed checkpoint: save at N ranks, load at M ---------------------------------


def run_dcp_save(rank, world, path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model = fsdp2_model(torch.bfloat16)
    opt = FusedAdamW(model.parameters(), lr=1e-2)
    for step in range(3):
        lm_loss(model, 10 * step + rank).backward()
        opt.step()
        opt.zero_grad()
    osd = get_optimizer_state_dict(model, opt)
    dcp.save({"model": model.state_dict(), "optim": osd}, checkpoint_id=path)
    expected = full_state(model, opt)
    if rank == 0:
        save_file(expected, os.path.join(path, "expected.safetensors"))
    return True


def full_state(model, opt):
    """Every state entry as a full tensor, by parameter name (collective)."""
    names = {p: n for n, p in model.named_parameters()}
    out = {}
    for p, state in opt.state.items():
        for key, value in state.items():
            out[f"{names[p]}.{key}"] = (value.full_tensor() if isinstance(value, DTensor) else value).clone()
    return out


def run_dcp_load(rank, world, path):
    """Loads the checkpoint saved at another world size into shardkit's optimizer and into torch's."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    model = fsdp2_model(torch.bfloat16)
    opt = FusedAdamW(model.parameters(), lr=1e-2)
    state = {"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=path)
    model.load_state_dict(state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    loaded = full_state(model, opt)
    saved = load_file(os.path.join(path, "expected.safetensors"))
    assert loaded.keys() == saved.keys(), sorted(set(loaded) ^ set(saved))
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    for p in model.parameters():
        assert opt.state[p]["master_param"].placements == p.placements
    # The checkpoint also loads into torch.optim.AdamW (it ignores master_param): same state keys.
    # torch keeps a bf16 parameter's moments in bf16, so it holds the saved fp32 moments rounded.
    ref = fsdp2_model(torch.bfloat16)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    ref_state = {"model": ref.state_dict(), "optim": get_optimizer_state_dict(ref, ref_opt)}
    dcp.load(ref_state, checkpoint_id=path)
    set_optimizer_state_dict(ref, ref_opt, ref_state["optim"])
    p0 = next(ref.parameters())
    return torch.equal(ref_opt.state[p0]["exp_avg"].full_tensor(), saved["emb.weight.exp_avg"].to(torch.bfloat16))


# ---- bad input ------------------------------------------------------------------------


def run_rejections(rank, world):
    """Each misuse raises a ValueError naming the parameter and the placement or mesh."""
    from torch.distributed.tensor import Partial

    mesh = init_device_mesh("cpu", (world,))
    messages = {}

    def expect(key, fn):
        try:
            fn()
        except ValueError as exc:
            messages[key] = str(exc)
        else:
            raise AssertionError(f"{key}: no ValueError")

    partial = nn.Parameter(DTensor.from_local(torch.ones(4), mesh, [Partial()]))
    expect("partial", lambda: FusedAdamW([partial]))

    other = init_device_mesh("cpu", (1, world), mesh_dim_names=("a", "b"))
    on_a = nn.Parameter(DTensor.from_local(torch.ones(3), mesh, [Shard(0)]))
    on_b = nn.Parameter(DTensor.from_local(torch.ones(3), other, [Replicate(), Shard(0)]))
    expect("meshes", lambda: FusedAdamW([on_a, on_b]))
    FusedAdamW([on_a]), FusedAdamW([on_b])  # each alone is fine

    # A state saved for a Shard(0) parameter does not fit a Replicate one of the same shape.
    sharded = nn.Parameter(DTensor.from_local(torch.ones(2, 3), mesh, [Shard(0)]))
    opt = FusedAdamW([sharded])
    sharded.grad = DTensor.from_local(torch.ones(2, 3), mesh, [Shard(0)])
    opt.step()
    saved = opt.state_dict()
    replicated = nn.Parameter(DTensor.from_local(torch.ones(2 * world, 3), mesh, [Replicate()]))
    expect("load", lambda: FusedAdamW([replicated]).load_state_dict(saved))

    return messages


def run_full_state_dict_loads_sharded(rank, world):
    """A plain (full) torch.optim state loads into a sharded optimizer, sliced locally."""
    torch.manual_seed(0)
    plain = TiedLM()
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    for step in range(2):
        lm_loss(plain, step).backward()
        plain_opt.step()
        plain_opt.zero_grad()
    sharded = fsdp2_model()
    opt = FusedAdamW(sharded.parameters(), lr=1e-2)
    opt.load_state_dict(plain_opt.state_dict())
    for p, q in zip(sharded.parameters(), plain.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key].full_tensor(), plain_opt.state[q][key]), key
            assert opt.state[p][key].placements == p.placements
    return True


# ---- DDP (plain parameters, gradients averaged by DDP) ------------------------------------


def run_ddp_parity(rank, world, name):
    from torch.nn.parallel import DistributedDataParallel

    def make():
        torch.manual_seed(0)
        return DistributedDataParallel(TiedLM())

    diff, _ = train_pair(make, lambda m, s: lm_loss(m, 100 * s + rank), name)
    return diff
