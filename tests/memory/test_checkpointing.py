"""Activation checkpointing: same gradients, less saved memory, as the estimator says."""

import copy

import pytest
import torch
from shardkit import checkpointing
from shardkit.checkpointing import EveryKth, MemoryBudget
from shardkit.memory import DecoderSpec, SavedActivationCounter, estimate
from shardkit.memory.reference_model import DecoderBlock, ReferenceDecoder
from torch import nn
from torch.utils.checkpoint import set_checkpoint_early_stop
from torch.utils.flop_counter import FlopCounterMode

SPEC = DecoderSpec(vocab=320, hidden=64, layers=4, heads=4, kv_heads=2, intermediate=160)
BATCH, SEQ = 2, 24


def make_model(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return ReferenceDecoder(SPEC, max_seq_len=SEQ, dropout=dropout)


def inputs():
    gen = torch.Generator().manual_seed(1)
    return tuple(torch.randint(0, SPEC.vocab, (BATCH, SEQ), generator=gen) for _ in range(2))


def grads_after_backward(model, autocast=False, seed=3):
    torch.manual_seed(seed)  # dropout masks come from here
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(*inputs())
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_grads(reference, candidate):
    assert reference.keys() == candidate.keys()
    for name in reference:
        torch.testing.assert_close(candidate[name], reference[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("policy", ["every_block", "every_2", 3, EveryKth(1)])
def test_gradients_equal_the_unchecked_model(policy):
    plain = make_model()
    ckpt = checkpointing.apply(copy.deepcopy(plain), policy)
    loss_a, grads_a = grads_after_backward(plain)
    loss_b, grads_b = grads_after_backward(ckpt)
    assert torch.equal(loss_a, loss_b)
    assert_same_grads(grads_a, grads_b)


def test_dropout_masks_are_replayed_on_recompute():
    plain = make_model(dropout=0.3)
    ckpt = checkpointing.apply(copy.deepcopy(plain), "every_block")
    loss_a, grads_a = grads_after_backward(plain)
    loss_b, grads_b = grads_after_backward(ckpt)
    assert torch.equal(loss_a, loss_b)
    assert_same_grads(grads_a, grads_b)
    # The comparison can fail: another seed gives other masks and other grads.
    _, grads_c = grads_after_backward(copy.deepcopy(plain), seed=4)
    assert not torch.equal(grads_c["layers.0.q_proj.weight"], grads_a["layers.0.q_proj.weight"])


def test_cpu_bf16_autocast_is_reentered_on_recompute():
    plain = make_model()
    ckpt = checkpointing.apply(copy.deepcopy(plain), "every_block")
    loss_a, grads_a = grads_after_backward(plain, autocast=True)
    loss_b, grads_b = grads_after_backward(ckpt, autocast=True)
    assert torch.equal(loss_a, loss_b)
    assert_same_grads(grads_a, grads_b)
    # Autocast really changes the numbers, so recomputing in fp32 would show.
    _, grads_fp32 = grads_after_backward(copy.deepcopy(plain), autocast=False)
    assert not torch.equal(grads_fp32["layers.0.q_proj.weight"], grads_a["layers.0.q_proj.weight"])


@pytest.mark.parametrize("policy", ["every_block", 2, 3])
def test_saved_bytes_drop_by_what_the_estimator_predicts(policy):
    def saved_bytes(model):
        with SavedActivationCounter(exclude=model) as saved:
            loss = model(*inputs())
        measured = saved.bytes
        loss.backward()
        return measured

    plain = make_model()
    ckpt = checkpointing.apply(copy.deepcopy(plain), policy)
    measured_drop = saved_bytes(plain) - saved_bytes(ckpt)
    kw = dict(precision="fp32", batch=BATCH, seq_len=SEQ)
    predicted_drop = estimate(SPEC, **kw)["activations"] - estimate(SPEC, checkpointing=policy, **kw)["activations"]
    assert measured_drop > 0
    assert measured_drop == pytest.approx(predicted_drop, rel=0.01)


def test_recompute_costs_one_forward_per_checkpointed_block():
    def step_flops(model):
        with FlopCounterMode(display=False) as flops:
            model(*inputs()).backward()
        return flops.get_total_flops()

    with FlopCounterMode(display=False) as block_flops:
        make_model().layers[0](torch.randn(BATCH, SEQ, SPEC.hidden))
    plain = make_model()
    ckpt = checkpointing.apply(copy.deepcopy(plain), "every_2")  # blocks 0 and 2
    # Without early stop the recompute replays the block's whole forward.
    with set_checkpoint_early_stop(False):
        extra = step_flops(ckpt) - step_flops(plain)
    assert extra == 2 * block_flops.get_total_flops()


def test_budget_policy_respects_its_budget_with_fewest_blocks():
    ids, labels = inputs()
    full = estimate(SPEC, precision="fp32", batch=BATCH, seq_len=SEQ)["activations"]
    every = estimate(SPEC, precision="fp32", batch=BATCH, seq_len=SEQ, checkpointing="every_block")["activations"]
    budget = (full + every) // 2  # needs some blocks, not all
    model = make_model()
    plan = checkpointing.plan(model, MemoryBudget(budget, example_args=(ids, labels)))
    assert 0 < len(plan.checkpointed) < SPEC.layers
    assert all(p.forward_flops > 0 and p.saved_bytes > p.input_bytes for p in plan.profiles)
    checkpointing.apply(model, plan)
    with SavedActivationCounter(exclude=model) as saved:
        loss = model(ids, labels)
    assert saved.bytes <= budget
    assert saved.bytes == plan.predicted_saved_bytes
    assert saved.bytes == estimate(SPEC, precision="fp32", batch=BATCH, seq_len=SEQ, checkpointing=plan)["activations"]
    # One block fewer would not have fitted.
    one_fewer = saved.bytes + plan.profiles[0].saved_bytes - plan.profiles[0].input_bytes
    assert one_fewer > budget
    loss.backward()


def test_budget_probe_leaves_rng_alone_and_rejects_an_impossible_budget():
    model = make_model(dropout=0.1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    checkpointing.plan(model, MemoryBudget(10**12, example_args=inputs()))
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(ValueError, match="max_bytes"):
        checkpointing.plan(model, MemoryBudget(1000, example_args=inputs()))


def test_module_identity_state_dict_and_remove():
    model = make_model()
    keys = list(model.state_dict())
    checkpointing.apply(model, "every_block")
    assert isinstance(model.layers[0], DecoderBlock)
    assert list(model.state_dict()) == keys
    assert checkpointing.checkpointed(model) == [f"layers.{i}" for i in range(SPEC.layers)]
    with pytest.raises(ValueError, match="already applied"):
        checkpointing.apply(model, "every_block")
    checkpointing.remove(model)
    assert type(model.layers[0]) is DecoderBlock and checkpointing.checkpointed(model) == []


def test_recompute_runs_module_hooks_again():
    """What lets a later shard() all-gather before recompute: forward pre-hooks fire twice."""
    model = checkpointing.apply(make_model(), "every_block")
    calls = []
    model.layers[1].register_forward_pre_hook(lambda module, args: calls.append(torch.is_grad_enabled()))
    loss = model(*inputs())
    assert len(calls) == 1
    loss.backward()
    assert len(calls) == 2


def test_offload_is_a_noop_on_cpu():
    plain = make_model()
    offloaded = checkpointing.apply(copy.deepcopy(plain), "none", offload=True)
    assert checkpointing.checkpointed(offloaded) == []
    with SavedActivationCounter(exclude=offloaded) as saved:
        loss = offloaded(*inputs())
    assert saved.bytes == estimate(SPEC, precision="fp32", batch=BATCH, seq_len=SEQ)["activations"]
    loss.backward()
    _, grads_a = grads_after_backward(plain)
    offloaded.zero_grad(set_to_none=True)
    _, grads_b = grads_after_backward(offloaded)
    assert_same_grads(grads_a, grads_b)


def test_no_grad_forward_does_not_checkpoint():
    model = checkpointing.apply(make_model(), "every_block")
    with torch.no_grad():
        loss = model(*inputs())
    assert loss.grad_fn is None


def test_blocks_by_class_and_callable():
    model = make_model()
    by_class = checkpointing.plan(model, "every_block", blocks=DecoderBlock)
    by_callable = checkpointing.plan(model, "every_block", blocks=lambda name, m: name.endswith("mlp_norm"))
    assert by_class.block_names == tuple(f"layers.{i}" for i in range(SPEC.layers))
    assert by_callable.block_names == tuple(f"layers.{i}.mlp_norm" for i in range(SPEC.layers))


@pytest.mark.parametrize(
    ("policy", "kwargs", "error", "match"),
    [
        ("sometimes", {}, ValueError, "policy"),
        (0, {}, ValueError, "k"),
        ("every_0", {}, ValueError, "k"),
        (2.5, {}, ValueError, "policy"),
        ("every_block", {"blocks": nn.GRU}, ValueError, "blocks"),
        ("every_block", {"blocks": "layers"}, TypeError, "blocks"),
        ("every_block", {"offload": "yes"}, TypeError, "offload"),
    ],
)
def test_bad_arguments_raise_clear_errors(policy, kwargs, error, match):
    with pytest.raises(error, match=match):
        checkpointing.apply(make_model(), policy, **kwargs)


def test_a_plan_for_another_model_is_rejected():
    other = checkpointing.plan(ReferenceDecoder(DecoderSpec(**{**SPEC.to_dict(), "layers": 6}), SEQ), "every_block")
    with pytest.raises(ValueError, match="CheckpointPlan"):
        checkpointing.apply(make_model(), other)


def test_bad_budget_arguments():
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryBudget(-1)
    with pytest.raises(TypeError, match="example_args"):
        MemoryBudget(10, example_args=[1])
    with pytest.raises(ValueError, match="nn.ModuleList"):
        checkpointing.apply(nn.Linear(2, 2), "every_block")
    with pytest.raises(TypeError, match="model"):
        checkpointing.apply("model", "every_block")


@pytest.mark.slow
def test_checkpointing_then_compile_keeps_grads_and_the_memory_drop():
    """DESIGN.md's order: checkpointing, then torch.compile (traced without graph breaks)."""
    torch._dynamo.reset()
    plain = make_model()
    ckpt = checkpointing.apply(copy.deepcopy(plain), "every_block")
    compiled_plain = torch.compile(copy.deepcopy(plain), backend="aot_eager", fullgraph=True)
    compiled_ckpt = torch.compile(ckpt, backend="aot_eager", fullgraph=True)

    def saved_bytes(module, owner):
        with SavedActivationCounter(exclude=owner) as saved:
            loss = module(*inputs())
        measured = saved.bytes
        loss.backward()
        return measured

    _, grads_eager = grads_after_backward(plain)
    without = saved_bytes(compiled_plain, compiled_plain)
    with_ckpt = saved_bytes(compiled_ckpt, ckpt)
    assert with_ckpt < without / 3
    for name, grad in grads_eager.items():
        torch.testing.assert_close(dict(ckpt.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("policy", ["none", "every_block"])
def test_offload_moves_saved_activations_off_the_gpu(policy):
    plain = make_model().cuda()
    offloaded = checkpointing.apply(copy.deepcopy(plain), policy, offload=True)
    reference = checkpointing.apply(copy.deepcopy(plain), policy)
    ids, labels = (t.cuda() for t in inputs())

    def forward_backward(model):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        loss = model(ids, labels)
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated() - before
        loss.backward()
        return held, {name: p.grad for name, p in model.named_parameters()}

    held_reference, grads_reference = forward_backward(reference)
    held_offloaded, grads_offloaded = forward_backward(offloaded)
    # The blocks' saved tensors (or, checkpointed, their inputs) now live on the
    # host; what stays is the head's (the log-softmax over the vocabulary).
    assert held_offloaded < held_reference
    for name, grad in grads_reference.items():
        torch.testing.assert_close(grads_offloaded[name], grad, rtol=1e-5, atol=1e-6, msg=name)
