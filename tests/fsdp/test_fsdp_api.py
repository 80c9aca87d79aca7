"""shard() on one process: unit selection, the same hooks without communication, and bad input."""

import copy

import pytest
import torch
from torch import nn

from shardkit import fsdp
from shardkit.models.gpt import Block

import fsdp_cases


def _train(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(steps):
        batch = fsdp_cases.global_batch(1, step)
        loss = model(batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("strategy", fsdp.STRATEGIES)
def test_world_one_runs_the_same_hooks_and_matches_plain_training(strategy):
    ref = fsdp_cases.tiny_gpt()
    model = fsdp.shard(copy.deepcopy(ref), units=[Block], strategy=strategy)
    # Parameters are now one flat buffer per unit: the root, then the blocks.
    assert [n for n, _ in model.named_parameters()] == ["_flat_param_0", "layers.0._flat_param_0", "layers.1._flat_param_0"]
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    assert _train(model) == _train(ref)
    full = fsdp.full_state_dict(model)
    for name, value in ref.state_dict().items():
        assert torch.equal(full[name], value), name


def test_size_threshold_and_callable_select_units():
    ref = fsdp_cases.tiny_gpt()
    block_numel = sum(p.numel() for p in ref.layers[0].parameters())
    by_size = fsdp.shard(copy.deepcopy(ref), units=block_numel)
    assert [u.path for u in fsdp.get_state(by_size).units] == ["", "layers.0", "layers.1"]
    by_callable = fsdp.shard(copy.deepcopy(ref), units=lambda m: isinstance(m, nn.Linear))
    units = {u.path: u for u in fsdp.get_state(by_callable).units}
    assert len(units) == 1 + 2 * 7 + 1  # root, 7 linears per block, the head
    # The head's weight is tied to the embedding (root): it lives once, in the root.
    assert units["lm_head"].groups == []
    assert _train(by_size) == _train(by_callable) == _train(copy.deepcopy(ref))


def test_mixed_precision_computes_in_bf16_and_keeps_fp32_shards():
    model = fsdp.shard(fsdp_cases.tiny_gpt(), units=[Block],
                       mixed_precision=fsdp.MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    batch = fsdp_cases.global_batch(1, 0)
    out = model(batch, labels=batch)
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())


def test_frozen_parameters_get_their_own_flat_buffer_without_grad():
    model = fsdp_cases.tiny_gpt()
    model.layers[0].mlp.requires_grad_(False)
    model = fsdp.shard(model, units=[Block])
    flats = dict(model.named_parameters())
    assert not flats["layers.0._flat_param_1"].requires_grad and flats["layers.0._flat_param_0"].requires_grad
    batch = fsdp_cases.global_batch(1, 0)
    model(batch, labels=batch).loss.backward()
    assert flats["layers.0._flat_param_1"].grad is None and flats["layers.0._flat_param_0"].grad is not None


def test_clip_grad_norm_equals_torch_on_one_rank():
    ref = fsdp_cases.tiny_gpt()
    model = fsdp.shard(copy.deepcopy(ref), units=[Block])
    batch = fsdp_cases.global_batch(1, 0)
    ref(batch, labels=batch).loss.backward()
    model(batch, labels=batch).loss.backward()
    expected = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.01)
    assert torch.allclose(fsdp.clip_grad_norm_(model, 0.01), expected, rtol=1e-5)
    clipped = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()
    assert torch.allclose(clipped, torch.tensor(0.01), rtol=1e-4)


def test_units_that_match_nothing_are_refused():
    with pytest.raises(ValueError, match="units: .*matched no module"):
        fsdp.shard(fsdp_cases.tiny_gpt(), units=[nn.Conv2d])
    with pytest.raises(ValueError, match="units: .*matched no module"):
        fsdp.shard(fsdp_cases.tiny_gpt(), units=lambda m: False)
    with pytest.raises(TypeError, match="units: expected nn.Module subclasses"):
        fsdp.shard(fsdp_cases.tiny_gpt(), units=["Block"])
    with pytest.raises(ValueError, match="units: a size threshold must be >= 1"):
        fsdp.shard(fsdp_cases.tiny_gpt(), units=0)


def test_strategy_aliases_name_the_same_strategies():
    assert fsdp.get_state(fsdp.shard(fsdp_cases.tiny_gpt(), strategy="zero-3")).strategy == "FULL_SHARD"
    assert fsdp.get_state(fsdp.shard(fsdp_cases.tiny_gpt(), strategy="DDP")).strategy == "NO_SHARD"


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="strategy: expected one of NO_SHARD, SHARD_GRAD_OP, FULL_SHARD, HYBRID"):
        fsdp.shard(fsdp_cases.tiny_gpt(), strategy="ZERO4")
    with pytest.raises(TypeError, match="mixed_precision: expected a shardkit.fsdp.MixedPrecision"):
        fsdp.shard(fsdp_cases.tiny_gpt(), mixed_precision={"param_dtype": torch.bfloat16})
    with pytest.raises(TypeError, match="MixedPrecision.param_dtype"):
        fsdp.MixedPrecision(param_dtype=torch.int8)
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        fsdp.shard("gpt")
    model = fsdp.shard(fsdp_cases.tiny_gpt())
    with pytest.raises(ValueError, match="model: already sharded"):
        fsdp.shard(model)
    with pytest.raises(TypeError, match="model: expected a model returned by shardkit.fsdp.shard"):
        fsdp.clip_grad_norm_(fsdp_cases.tiny_gpt(), 1.0)
    with pytest.raises(ValueError, match="max_norm: expected a positive number"):
        fsdp.clip_grad_norm_(model, 0.0)


def test_parameters_on_mixed_devices_are_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3, device="meta"))
    with pytest.raises(ValueError, match="model: parameters must all be on one device"):
        fsdp.shard(model)


def test_parameters_of_mixed_dtypes_in_one_unit_are_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="must share a dtype"):
        fsdp.shard(model)


def test_loading_another_models_state_is_refused():
    model = fsdp.shard(fsdp_cases.tiny_gpt(), units=[Block])
    with pytest.raises(ValueError, match="source: not a state of this model: missing"):
        fsdp.load_full_state_dict(model, {"weight": torch.zeros(3)})


def test_hf_llama_with_tied_weights_trains_like_the_unsharded_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True)
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(config)
    layer_cls = type(ref.model.layers[0])
    model = fsdp.shard(copy.deepcopy(ref), units=[layer_cls], strategy="FULL_SHARD")
    assert len(fsdp.get_state(model).units) == 3
    assert _train(model) == _train(ref)
