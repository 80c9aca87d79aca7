"""Rank-side checks of shardkit.fsdp: sharded training against single-process
training of an unsharded copy on the concatenated batch (computed on every
rank, from the same seed), with torch.optim as the independent optimizer.

Every rank builds the same model and the same global batch; rank r trains on
its rows, the reference on all of them. The loss is a mean over equally many
tokens per rank, so the mean of the rank losses is the reference loss.
"""

from __future__ import annotations

import contextlib
import copy
import os
from types import SimpleNamespace

import tempfile

import torch
import torch.distributed as dist
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from shardkit import comm, fsdp
from shardkit.models import GPT
from shardkit.models.gpt import Block
from shardkit.optim import FusedAdamW, FusedSGD

ROWS_PER_RANK, SEQ = 2, 12
STEPS = 20
TOL = 1e-5  # losses and parameters
# Adam divides by sqrt(v), so a rounding-level gradient difference (the
# summation order across ranks) of an element whose gradient is near zero
# moves its update by up to a fraction of lr: lr 1e-3 keeps 20 steps within TOL.
ADAM_LR = 1e-3


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    # Odd sizes so the flat buffers never divide evenly by 2, 3 or 4.
    shape = dict(hidden_size=36, intermediate_size=58, num_heads=3, num_kv_heads=1, vocab_size=61)
    return GPT.from_preset("tiny", **{**shape, **overrides})


def global_batch(world: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, 61, (world * ROWS_PER_RANK, SEQ), generator=g)


def local_rows(batch: torch.Tensor, rank: int) -> torch.Tensor:
    return batch[rank * ROWS_PER_RANK : (rank + 1) * ROWS_PER_RANK]


def make_optimizers(kind: str, sharded: nn.Module, ref: nn.Module):
    trainable = [p for p in ref.parameters() if p.requires_grad]
    if kind == "adamw":
        return (FusedAdamW(sharded.parameters(), lr=ADAM_LR, weight_decay=0.1),
                torch.optim.AdamW(trainable, lr=ADAM_LR, weight_decay=0.1))
    return (FusedSGD(sharded.parameters(), lr=0.2, momentum=0.9),
            torch.optim.SGD(trainable, lr=0.2, momentum=0.9))


def mean_over_ranks(value: torch.Tensor) -> float:
    t = value.detach().reshape(1).clone().float()
    if comm.is_initialized():
        comm.all_reduce(t, "avg")
    return float(t)


def assert_params_match(sharded: nn.Module, ref: nn.Module, tol: float, what: str) -> None:
    full = fsdp.full_state_dict(sharded, rank0_only=False)
    expected = ref.state_dict()
    assert sorted(full) == sorted(expected), f"{what}: names {sorted(full)} != {sorted(expected)}"
    for name, value in expected.items():
        err = (full[name].float() - value.float()).abs().max().item()
        assert err <= tol, f"{what}: {name} differs by {err} (tolerance {tol})"


def train_and_compare(rank, world, strategy, optim, units=(Block,), model_fn=tiny_gpt, steps=STEPS,
                      accumulate=1, clip=None, freeze=(), sharded_fn=None):
    """``sharded_fn()``, if given, builds the sharded model (default: ``shard()`` of a copy of ``model_fn()``)."""
    ref = model_fn()
    for name, p in ref.named_parameters():
        if any(name.startswith(f) for f in freeze):
            p.requires_grad_(False)
    if sharded_fn is not None:
        sharded = sharded_fn()
    else:
        sharded = fsdp.shard(copy.deepcopy(ref), units=list(units) if units else None, strategy=strategy)
    opt, ref_opt = make_optimizers(optim, sharded, ref)
    what = f"{strategy}/{optim}/world {world}"
    for step in range(steps):
        batch = global_batch(world * accumulate, step)
        # Reference: one step on the whole batch.
        ref_loss = ref(batch, labels=batch).loss
        ref_loss.backward()
        if clip is not None:
            ref_norm = torch.nn.utils.clip_grad_norm_([p for p in ref.parameters() if p.requires_grad], clip)
        ref_opt.step()
        ref_opt.zero_grad()
        # Sharded: this rank's rows, in `accumulate` micro-batches.
        rows = batch.view(world, accumulate * ROWS_PER_RANK, SEQ)[rank].split(ROWS_PER_RANK)
        losses = []
        for i, micro in enumerate(rows):
            ctx = fsdp.no_sync(sharded) if i < accumulate - 1 else contextlib.nullcontext()
            with ctx:
                loss = sharded(micro, labels=micro).loss / accumulate
                loss.backward()
            losses.append(loss.detach())
        if clip is not None:
            norm = fsdp.clip_grad_norm_(sharded, clip)
            assert abs(float(norm) - float(ref_norm)) <= 1e-4 * float(ref_norm), f"{what}: grad norm {norm} != {ref_norm}"
        opt.step()
        opt.zero_grad()
        loss = mean_over_ranks(sum(losses))
        assert abs(loss - ref_loss.item()) <= TOL, f"{what}: step {step} loss {loss} != {ref_loss.item()}"
    assert_params_match(sharded, ref, TOL, what)
    return True


def join(threads: int = 1) -> None:
    """Join the collectives; one intra-op thread per rank (ranks share the cores)."""
    torch.set_num_threads(threads)
    comm.init()


SINGLE_HOST_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD")  # HYBRID on one host is FULL_SHARD


def run_parity(rank, world, strategies=SINGLE_HOST_STRATEGIES):
    """Every strategy with AdamW and with SGD (which does not hide gradient-scaling bugs)."""
    join()
    done = []
    for strategy in strategies:
        for optim in ("adamw", "sgd"):
            done.append(train_and_compare(rank, world, strategy, optim))
    return len(done)


class TiedAcrossUnits(nn.Module):
    """An embedding and a head that share a weight but sit in different units."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Embedding(61, 20)
        self.body = nn.Sequential(nn.Linear(20, 33), nn.Tanh(), nn.Linear(33, 20))
        self.head = nn.Linear(20, 61, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids, labels=None):
        logits = self.head(self.body(self.embed(ids)))
        return SimpleNamespace(loss=nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()))


def run_features(rank, world):
    """Frozen parameters, weights tied across units, no_sync accumulation, clip_grad_norm_."""
    join()
    # Frozen: the embedding (tied with the head) and the first block's MLP.
    train_and_compare(rank, world, "FULL_SHARD", "adamw", steps=4, freeze=("embed_tokens", "layers.0.mlp"))
    train_and_compare(rank, world, "FULL_SHARD", "sgd", units=(nn.Embedding, nn.Sequential),
                      model_fn=TiedAcrossUnits, steps=4)
    for strategy in SINGLE_HOST_STRATEGIES:
        train_and_compare(rank, world, strategy, "sgd", steps=3, accumulate=2)
        train_and_compare(rank, world, strategy, "adamw", steps=3, clip=0.05)
    return True


def run_mixed_precision(rank, world):
    """bf16 compute with fp32 reduction and fp32 shards stays close to fp32 training."""
    join()
    ref = tiny_gpt()
    policy = fsdp.MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    sharded = fsdp.shard(copy.deepcopy(ref), units=[Block], mixed_precision=policy)
    assert all(p.dtype == torch.float32 for p in sharded.parameters())
    opt, ref_opt = make_optimizers("adamw", sharded, ref)
    for step in range(5):
        batch = global_batch(world, step)
        ref_loss = ref(batch, labels=batch).loss
        ref_loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        out = sharded(local_rows(batch, rank), labels=local_rows(batch, rank))
        assert out.logits.dtype == torch.bfloat16
        out.loss.backward()
        assert all(p.grad.dtype == torch.float32 for p in sharded.parameters())
        opt.step()
        opt.zero_grad()
        loss = mean_over_ranks(out.loss)
        assert abs(loss - ref_loss.item()) <= 3e-2, f"bf16 step {step}: loss {loss} vs fp32 {ref_loss.item()}"
    assert_params_match(sharded, ref, 2e-2, "bf16")
    return True


def run_full_state_roundtrip(rank, world, directory):
    """save_full_state_dict on rank 0, loaded into a fresh sharded model on every rank."""
    join()
    ref = tiny_gpt(seed=5)
    sharded = fsdp.shard(copy.deepcopy(ref), units=[Block])
    path = os.path.join(directory, "full.safetensors")
    fsdp.save_full_state_dict(sharded, path)
    comm.barrier()
    assert not [f for f in os.listdir(directory) if f.startswith(".tmp_")], "a temporary file was left behind"
    other = fsdp.shard(tiny_gpt(seed=6), units=[Block])
    fsdp.load_full_state_dict(other, path)
    assert_params_match(other, ref, 0.0, "roundtrip")
    # The file is a plain safetensors state of the unsharded model.
    from safetensors.torch import load_file

    saved = load_file(path)
    for name, value in saved.items():
        assert torch.equal(value, ref.state_dict()[name]), name
    # A checkpoint of another model is refused, naming what differs.
    wrong = fsdp.shard(tiny_gpt(hidden_size=24, intermediate_size=40, num_heads=2, num_kv_heads=2), units=[Block])
    try:
        fsdp.load_full_state_dict(wrong, path)
    except ValueError as exc:
        assert "wrong shapes" in str(exc) and "source" in str(exc)
    else:
        raise AssertionError("loading another model's checkpoint did not raise")
    return True


def run_against_torch_fsdp2(rank, world):
    """shardkit FULL_SHARD and torch FSDP2 ``fully_shard`` (gloo) train to the same losses and parameters."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    join()
    ref = tiny_gpt(seed=7)
    ours = fsdp.shard(copy.deepcopy(ref), units=[Block])
    theirs = copy.deepcopy(ref)
    mesh = init_device_mesh("cpu", (world,))
    for block in theirs.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(theirs, mesh=mesh)
    opt = FusedAdamW(ours.parameters(), lr=ADAM_LR)
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=ADAM_LR)
    for step in range(6):
        rows = local_rows(global_batch(world, step), rank)
        loss = ours(rows, labels=rows).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        their_loss = theirs(rows, labels=rows).loss
        their_loss.backward()
        their_opt.step()
        their_opt.zero_grad()
        assert abs(loss.item() - their_loss.item()) <= TOL, f"step {step}: {loss.item()} vs FSDP2 {their_loss.item()}"
    full = fsdp.full_state_dict(ours, rank0_only=False)
    for name, value in theirs.state_dict().items():
        value = value.full_tensor() if hasattr(value, "full_tensor") else value
        err = (full[name] - value).abs().max().item()
        assert err <= TOL, f"{name} differs from FSDP2 by {err}"
    return True


def run_memory_layout(rank, world):
    """Each rank keeps ceil(numel / world) elements per unit, and FULL_SHARD frees a block after its forward."""
    join()
    ref = tiny_gpt()
    model = fsdp.shard(copy.deepcopy(ref), units=[Block])
    state = fsdp.get_state(model)
    per_unit = [sum(p.numel() for p in ref.layers[0].parameters())] * 2
    root = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("layers"))
    expected = [-(-n // world) for n in [root] + per_unit]
    assert [p.numel() for p in model.parameters()] == expected
    rows = local_rows(global_batch(world, 0), rank)
    model(rows, labels=rows).loss.backward()
    # After backward every gathered buffer is freed; only the shards remain.
    assert all(not g.is_unsharded for g in state.groups)
    with torch.no_grad():
        seen = []
        hooks = [model.layers[0].register_forward_pre_hook(lambda m, a: seen.append(state.groups[2].is_unsharded)),
                 model.layers[1].register_forward_pre_hook(lambda m, a: seen.append(state.groups[1].is_unsharded))]
        model(rows)
        for hook in hooks:
            hook.remove()
    # When block 0 starts, block 1's gather is already under way (prefetched,
    # from the order the last iteration ran in); when block 1 runs, block 0 has
    # been freed again. No backward follows a forward under no_grad, so at its
    # end every unit is freed, the root included.
    assert seen == [True, False] and not any(g.is_unsharded for g in state.groups)
    return True


def _train_steps(model, opt, rank, world, steps, first_step):
    losses = []
    for step in range(first_step, first_step + steps):
        # The same 12 rows at every world size (12 divides by 2, 3 and 4), split over the ranks.
        batch = torch.randint(0, 61, (12, SEQ), generator=torch.Generator().manual_seed(2000 + step))
        rows = batch.view(world, -1, SEQ)[rank]
        loss = model(rows, labels=rows).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(mean_over_ranks(loss))
    return losses


def run_sharded_checkpoint(rank, world, directory, phase, optim, strategy="FULL_SHARD"):
    """phase "save": train 3 steps, checkpoint, train 3 more (the uninterrupted run);
    phase "resume": load the checkpoint into a fresh model and train the same 3 steps."""
    join()
    model = fsdp.shard(tiny_gpt(seed=11 if phase == "save" else 12), units=[Block], strategy=strategy)
    opt = FusedAdamW(model.parameters(), lr=ADAM_LR) if optim == "adamw" else FusedSGD(model.parameters(), lr=0.2, momentum=0.9)
    if phase == "save":
        _train_steps(model, opt, rank, world, 3, 0)
        fsdp.save_sharded_checkpoint(model, opt, directory)
    else:
        fsdp.load_sharded_checkpoint(model, opt, directory)
    losses = _train_steps(model, opt, rank, world, 3, 3)
    full = fsdp.full_state_dict(model, rank0_only=False)
    # numpy arrays travel back by value (tensors would go through shared file descriptors).
    return losses, {k: v.numpy() for k, v in full.items()}


def run_checkpoint_of_other_model(rank, world, directory):
    join()
    model = fsdp.shard(tiny_gpt(), units=[Block])
    fsdp.save_sharded_checkpoint(model, None, directory)
    other = fsdp.shard(tiny_gpt(num_layers=3), units=[Block])
    try:
        fsdp.load_sharded_checkpoint(other, None, directory)
    except ValueError as exc:
        assert "checkpoint of another model" in str(exc), exc
        return True
    raise AssertionError("loading another model's sharded checkpoint did not raise")


def run_interrupted_save(rank, world, directory):
    """Rank 1 dies in the middle of save_sharded_checkpoint (after the temporary directory exists)."""
    join()
    comm.get_group().set_timeout(5.0)
    model = fsdp.shard(tiny_gpt(seed=13), units=[Block])
    if rank == 1:
        import safetensors.torch

        def crash(*args, **kwargs):
            os._exit(3)

        safetensors.torch.save_file = crash
    fsdp.save_sharded_checkpoint(model, None, directory)
    return True


def run_sharded_resave(rank, world, directory, seed, crash_rank=None, k=None):
    """Save a model of ``seed`` (one SGD step, so momentum is saved too) over ``directory``.

    Rank ``crash_rank`` ends its process (``os._exit``, no cleanup runs) at its
    ``k``-th file write or rename; ``k=None``: none does. Returns the rank's
    counted steps.
    """
    from shardkit.testing.faults import CrashAt

    join()
    model = fsdp.shard(tiny_gpt(seed=seed), units=[Block])
    opt = FusedSGD(model.parameters(), lr=0.2, momentum=0.9)
    _train_steps(model, opt, rank, world, 1, 0)
    with CrashAt(k if rank == crash_rank else None, hard=True) as probe:
        fsdp.save_sharded_checkpoint(model, opt, directory)
    return probe.calls


def run_load_then_save(rank, world, directory, seed):
    """Load ``directory`` (as a resume does), then save over it; returns the loaded full state."""
    join()
    model = fsdp.shard(tiny_gpt(seed=seed), units=[Block])
    opt = FusedSGD(model.parameters(), lr=0.2, momentum=0.9)
    fsdp.load_sharded_checkpoint(model, opt, directory)
    loaded = {k: v.numpy() for k, v in fsdp.full_state_dict(model, rank0_only=False).items()}
    fsdp.save_sharded_checkpoint(model, opt, directory)
    return loaded


def sft_trainer(output_dir: str, per_device_batch: int, optim: str = "adamw_fused"):
    """A small SFT run on our GPT with the offline toy tokenizer and data (as tests/trainers)."""
    from shardkit.models import GPTConfig
    from shardkit.trainers import SFTConfig, SFTTrainer
    from shardkit.trainers.toy import char_tokenizer, toy_records

    tok = char_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, max_position_embeddings=256, tie_word_embeddings=True))
    args = SFTConfig(output_dir=output_dir, learning_rate=1e-3, per_device_train_batch_size=per_device_batch,
                     max_steps=4, lr_scheduler_type="constant", logging_steps=1, optim=optim, report_to=[],
                     disable_tqdm=True, max_length=64, seed=0, max_grad_norm=0.5, gradient_accumulation_steps=2)
    return SFTTrainer(model, args=args, train_dataset=toy_records("prompt_completion", 16), processing_class=tok)


def run_sft_trainer(rank, world, output_dir):
    """The trainer under WORLD_SIZE ranks: prepare_model_and_optimizer shards it (FULL_SHARD)."""
    torch.set_num_threads(1)
    trainer = sft_trainer(output_dir, per_device_batch=2)
    history = trainer.train().log_history
    assert fsdp.get_state(trainer.model).strategy == "FULL_SHARD"
    full = fsdp.full_state_dict(trainer.model, rank0_only=False)
    return history, {k: v.numpy() for k, v in full.items()}


# ---- HYBRID (simulated hosts: SHARDKIT_HOST_ID per rank) -------------------------


def run_hybrid(rank, world):
    """HYBRID against single-process training (AdamW, SGD, clipping, no_sync), then its full state loaded as FULL_SHARD."""
    join()
    group = comm.get_group()
    hosts, per_host = group.topology.num_hosts, group.local_world_size
    done = [train_and_compare(rank, world, "HYBRID", optim) for optim in ("adamw", "sgd")]
    # The gradient norm counts each element once, not once per host.
    done.append(train_and_compare(rank, world, "HYBRID", "adamw", steps=3, clip=0.05))
    # no_sync accumulation: the in-host and cross-host reductions both wait for the last micro-batch.
    done.append(train_and_compare(rank, world, "HYBRID", "sgd", steps=3, accumulate=2))
    model = fsdp.shard(tiny_gpt(seed=5), units=[Block], strategy="HYBRID")
    state = fsdp.get_state(model)
    assert state.shard_world_size == per_host and state.replica_index == group.host_index
    assert [p.numel() for p in model.parameters()] == [g.shard_numel for g in state.groups]
    assert all(g.shard_world == per_host and g.num_replicas == hosts for g in state.groups)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "full.safetensors") if rank == 0 else None
        paths = [path]
        dist.broadcast_object_list(paths, src=0)
        fsdp.save_full_state_dict(model, paths[0])
        comm.barrier()
        flat = fsdp.shard(tiny_gpt(seed=6), units=[Block], strategy="FULL_SHARD")
        fsdp.load_full_state_dict(flat, paths[0])
        assert_params_match(flat, tiny_gpt(seed=5), 0.0, "HYBRID full state loaded as FULL_SHARD")
        comm.barrier()  # rank 0 removes the directory only once everyone has read it
    return len(done)


def run_hybrid_unequal_hosts(rank, world):
    join()
    try:
        fsdp.shard(tiny_gpt(), units=[Block], strategy="HYBRID")
    except ValueError as exc:
        assert "same number of ranks on every host" in str(exc) and "[2, 1]" in str(exc), exc
        return True
    raise AssertionError("HYBRID over hosts of 2 and 1 ranks did not raise")


# ---- meta-device initialisation -------------------------------------------------

META_SEED = 21
META_LAYERS = 6  # enough blocks that one unit is small next to the model


class LiveStorageBytes(TorchDispatchMode):
    """Peak bytes of the CPU storages that tensor ops under it produced and that were alive at once.

    Checked after every op, so a buffer freed in place (``resize_(0)``) stops
    counting at the next op; storages created before entering are not counted.
    """

    def __init__(self):
        super().__init__()
        self.refs: dict[int, StorageWeakRef] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                known = self.refs.get(storage._cdata)
                if known is None or known.expired():
                    self.refs[storage._cdata] = StorageWeakRef(storage)
        self.peak = max(self.peak, self.live_bytes())
        return out

    def live_bytes(self) -> int:
        total = 0
        for key, ref in list(self.refs.items()):
            if ref.expired():
                del self.refs[key]
            else:
                total += torch.UntypedStorage._new_with_weak_ptr(ref.cdata).nbytes()
        return total


def meta_reference(layers=META_LAYERS) -> GPT:
    """A CPU-built GPT re-initialised unit by unit, as shard() initialises a meta-built one."""
    ref = tiny_gpt(num_layers=layers)
    return fsdp.initialize_units(ref, units=[Block], seed=META_SEED, param_init_fn=ref.init_weights)


def shard_meta_gpt(strategy="FULL_SHARD", layers=META_LAYERS):
    """``(sharded model, peak bytes live during shard())`` of a GPT built on the meta device."""
    with torch.device("meta"):
        model = tiny_gpt(num_layers=layers)
    with LiveStorageBytes() as live:
        model = fsdp.shard(model, units=[Block], strategy=strategy, seed=META_SEED, param_init_fn=model.init_weights)
    return model, live.peak


def run_meta_init(rank, world):
    """A meta-built GPT: the values of the CPU-built reference, never the whole model in memory, and it trains."""
    join()
    sharded, peak = shard_meta_gpt()
    ref = meta_reference()
    cpu_sharded = fsdp.shard(copy.deepcopy(ref), units=[Block])
    ours, theirs = fsdp.full_state_dict(sharded, rank0_only=False), fsdp.full_state_dict(cpu_sharded, rank0_only=False)
    for name, value in ref.state_dict().items():
        assert torch.equal(ours[name], value) and torch.equal(theirs[name], value), name
    assert torch.equal(sharded.rotary.inv_freq, ref.rotary.inv_freq)  # a non-persistent buffer, recomputed
    # Memory: the shards, plus one unit's parameters and its flat copy while it is cut; never the whole model.
    model_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    block_bytes = sum(p.numel() * p.element_size() for p in ref.layers[0].parameters())
    root_bytes = model_bytes - META_LAYERS * block_bytes
    shard_bytes = sum(p.numel() * p.element_size() for p in sharded.parameters())
    bound = shard_bytes + 2 * max(block_bytes, root_bytes) + 4096  # 4 KiB: RNG states, bool masks of the NaN check
    assert peak <= bound, f"peak {peak} B during shard() > shards {shard_bytes} + 2 units"
    assert peak < model_bytes, f"peak {peak} B during shard() is not below the model's {model_bytes} B"
    # SGD: Adam would turn rounding-level gradient differences of a 6-block model into visible ones.
    train_and_compare(rank, world, "FULL_SHARD", "sgd", model_fn=meta_reference, steps=6,
                      sharded_fn=lambda: shard_meta_gpt()[0])
    train_and_compare(rank, world, "SHARD_GRAD_OP", "sgd", model_fn=meta_reference, steps=6,
                      sharded_fn=lambda: shard_meta_gpt("SHARD_GRAD_OP")[0])
    return peak, model_bytes
