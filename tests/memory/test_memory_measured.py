"""The estimate against what a real CPU training step holds.

Model states: bytes of parameters, .grad and optimizer state after a
forward/backward/step. Activations: unique storages autograd saves, counted
with saved-tensor hooks. Stated tolerances: model states within 5% (the gap is
torch AdamW's per-tensor fp32 step counter, checked exactly too); the
activation formula is exact for the reference block, asserted to 1%.
"""

import pytest
import torch
from shardkit import checkpointing
from shardkit.memory import DecoderSpec, SavedActivationCounter, estimate, model_state_bytes
from shardkit.memory.reference_model import ReferenceDecoder

SMALL = DecoderSpec(vocab=384, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=160)
NO_GQA = DecoderSpec(vocab=256, hidden=96, layers=3, heads=6, kv_heads=6, intermediate=256)


def batch_for(spec, batch, seq):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, spec.vocab, (batch, seq), generator=gen)
    return ids, torch.randint(0, spec.vocab, (batch, seq), generator=gen)


def train_step_fp32(model, optimizer, ids, labels):
    model(ids, labels).backward()
    optimizer.step()


def train_step_mixed(model, masters, optimizer, ids, labels):
    """bf16 weights and grads, fp32 masters stepped by the optimizer, weights copied back."""
    model(ids, labels).backward()
    for master, param in zip(masters, model.parameters()):
        master.grad = param.grad.float()  # transient fp32 grad, dropped below
    optimizer.step()
    with torch.no_grad():
        for master, param in zip(masters, model.parameters()):
            param.copy_(master)
            master.grad = None


def measured_total(parts):
    return sum(parts.values())


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_model_state_bytes_match_a_real_step(optimizer_name, precision):
    torch.manual_seed(0)
    model = ReferenceDecoder(SMALL, max_seq_len=32)
    ids, labels = batch_for(SMALL, 2, 16)
    masters = []
    if precision == "bf16":
        model.to(torch.bfloat16)
        masters = [p.detach().float().requires_grad_() for p in model.parameters()]
    params = masters or list(model.parameters())
    if optimizer_name == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-3, foreach=False)
    else:
        opt = torch.optim.SGD(params, lr=1e-2, momentum=0.9, foreach=False)
    if precision == "bf16":
        train_step_mixed(model, masters, opt, ids, labels)
    else:
        train_step_fp32(model, opt, ids, labels)
    measured = model_state_bytes(model, opt, masters)
    est = estimate(SMALL, optimizer=optimizer_name, precision=precision)
    for name in ("params", "grads", "master_weights"):
        assert measured[name] == est[name], name
    step_counters = 4 * len(params) if optimizer_name == "adamw" else 0  # torch AdamW's fp32 `step` per tensor
    assert measured["optimizer_state"] - est["optimizer_state"] == step_counters
    assert measured_total(measured) == pytest.approx(est.model_state_bytes, rel=0.05)


@pytest.mark.parametrize("spec", [SMALL, NO_GQA], ids=["gqa", "mha"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("policy", ["none", "every_block", 2])
def test_activation_formula_matches_saved_tensors(spec, dtype, policy):
    torch.manual_seed(0)
    model = ReferenceDecoder(spec, max_seq_len=64).to(dtype)
    checkpointing.apply(model, policy)
    ids, labels = batch_for(spec, 3, 40)
    with SavedActivationCounter(exclude=model) as saved:
        loss = model(ids, labels)
    measured = saved.bytes
    loss.backward()  # the graph is usable: nothing the counter did broke it
    precision = "fp32" if dtype == torch.float32 else "bf16"
    predicted = estimate(spec, precision=precision, batch=3, seq_len=40, checkpointing=policy)["activations"]
    assert measured == pytest.approx(predicted, rel=0.01)


def test_counter_ignores_parameters_and_dropped_graphs():
    model = ReferenceDecoder(SMALL, max_seq_len=32)
    ids, labels = batch_for(SMALL, 1, 8)
    with SavedActivationCounter(exclude=model) as saved:
        model(ids, labels)  # output dropped at once: its graph and saved tensors are freed
        kept = model(ids, labels)
    # Exactly one forward's worth: no parameter, and nothing of the dropped graph.
    assert saved.bytes == estimate(SMALL, precision="fp32", batch=1, seq_len=8)["activations"]
    del kept
    # Only the caller's own ids and labels, which it still holds, remain.
    assert saved.bytes == ids.untyped_storage().nbytes() + labels.untyped_storage().nbytes()
