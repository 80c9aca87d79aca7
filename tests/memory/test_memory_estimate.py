"""The estimator's arithmetic: the rule of thumb, what each strategy divides, bad input."""

import json

import pytest
import torch
from shardkit import memory
from shardkit.memory import DecoderSpec, estimate
from shardkit.memory.reference_model import ReferenceDecoder

SPEC = DecoderSpec(vocab=1000, hidden=64, layers=3, heads=4, kv_heads=2, intermediate=176)
PSI = 1_000_000


def per_param(est, name):
    return est[name] / est.params


def test_mixed_precision_adamw_is_16_bytes_per_param():
    est = estimate(PSI, optimizer="adamw", precision="bf16")
    assert [per_param(est, n) for n in ("params", "grads", "master_weights", "optimizer_state")] == [2, 2, 4, 8]
    assert est.model_state_bytes_per_param == 16


def test_sgd_with_momentum_is_12_and_without_is_8():
    assert estimate(PSI, optimizer="sgd", precision="fp16").model_state_bytes_per_param == 12
    assert estimate(PSI, optimizer="sgd", sgd_momentum=False).model_state_bytes_per_param == 8


def test_fp32_adamw_is_16_bytes_without_master_but_4_byte_activations():
    fp32 = estimate(SPEC, precision="fp32", batch=2, seq_len=32)
    bf16 = estimate(SPEC, precision="bf16", batch=2, seq_len=32)
    assert fp32["master_weights"] == 0 and fp32.model_state_bytes_per_param == 16
    assert fp32["params"] == 2 * bf16["params"]
    # Activations are larger in fp32 (the fp32 log-softmax and norm statistics are shared).
    assert fp32["activations"] > bf16["activations"]


@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_each_strategy_divides_what_it_shards(world):
    def states(strategy, **kw):
        return estimate(PSI, strategy=strategy, world_size=world, **kw).model_state_bytes / PSI

    assert states("NO_SHARD") == 16
    assert states("SHARD_GRAD_OP") == pytest.approx(2 + 14 / world, abs=1e-5)
    assert states("FULL_SHARD") == pytest.approx(16 / world, abs=1e-5)
    if world % 2 == 0:
        assert states("HYBRID", host_size=2) == pytest.approx(16 / 2, abs=1e-5)
    assert states("ZERO3") == states("FULL_SHARD") and states("DDP") == states("NO_SHARD")


def test_comm_buffers_follow_the_sharding_schedule():
    one = estimate(SPEC, strategy="FULL_SHARD", world_size=1)
    assert one["comm_buffers"] == 0
    root, block = SPEC.root_params, SPEC.block_params
    # bf16: the root + a running and a prefetched block gathered, two blocks' grads
    # unreduced; or, when the root's gradient arrives last, the root gathered and its + a block's grads.
    worst = max(root + 2 * block + 2 * block, root + root + block)
    full = estimate(SPEC, strategy="FULL_SHARD", world_size=4)
    assert full["comm_buffers"] == 2 * worst
    assert sum(next(i for i in full.items if i.name == "comm_buffers").parts.values()) == full["comm_buffers"]
    assert estimate(SPEC, strategy="HYBRID", world_size=4, host_size=2)["comm_buffers"] == 2 * worst
    # SHARD_GRAD_OP keeps every unit gathered (its params line): only the unreduced grads.
    assert estimate(SPEC, strategy="SHARD_GRAD_OP", world_size=4)["comm_buffers"] == 2 * max(2 * block, root + block)
    # In-place all-reduces: NO_SHARD, and HYBRID with one rank per host.
    assert estimate(SPEC, strategy="NO_SHARD", world_size=4)["comm_buffers"] == 0
    assert estimate(SPEC, strategy="HYBRID", world_size=4, host_size=1)["comm_buffers"] == 0
    # A bare count: one unit (the whole model) unless a unit size is given.
    assert estimate(10**6, strategy="FULL_SHARD", world_size=4, precision="fp32")["comm_buffers"] == 4 * 2 * 10**6
    assert estimate(10**6, strategy="FULL_SHARD", world_size=4, precision="fp32", unit_params=1000)["comm_buffers"] == 4 * 5000


def test_fp32_shard_grad_op_counts_the_stepped_shards_as_masters():
    est = estimate(PSI, strategy="SHARD_GRAD_OP", world_size=4, precision="fp32")
    assert est["params"] == 4 * PSI and est["master_weights"] == PSI  # 4 B / 4 ranks
    assert estimate(PSI, strategy="SHARD_GRAD_OP", world_size=1, precision="fp32")["master_weights"] == 0


def test_module_on_meta_device_counts_like_its_spec():
    with torch.device("meta"):
        model = ReferenceDecoder(SPEC, max_seq_len=64)
    assert sum(p.numel() for p in model.parameters()) == SPEC.params
    from_module = estimate(model, batch=2, seq_len=16, strategy="FULL_SHARD", world_size=2)
    from_spec = estimate(SPEC, batch=2, seq_len=16, strategy="FULL_SHARD", world_size=2)
    assert from_module.to_dict()["items"] == from_spec.to_dict()["items"]


def test_frozen_parameters_have_no_grads_or_optimizer_state():
    with torch.device("meta"):
        model = ReferenceDecoder(SPEC, max_seq_len=64)
    model.embed.weight.requires_grad_(False)
    est = estimate(model)
    assert est.trainable_params == SPEC.params - SPEC.vocab * SPEC.hidden
    assert est["grads"] == 2 * est.trainable_params and est["params"] == 2 * SPEC.params


def test_hf_style_config_is_read():
    class Config:  # the attribute names of transformers.LlamaConfig
        vocab_size, hidden_size, num_hidden_layers = 1000, 64, 3
        num_attention_heads, num_key_value_heads, intermediate_size, tie_word_embeddings = 4, 2, 176, False

    assert DecoderSpec.from_hf_config(Config()) == SPEC


def test_checkpointing_every_block_and_every_kth():
    kw = dict(batch=2, seq_len=32, precision="fp32")
    none, every, third = (estimate(SPEC, checkpointing=c, **kw)["activations"] for c in ("none", "every_block", 3))
    from shardkit.memory import activations

    tokens = 64
    gain = activations.block_bytes(SPEC, tokens, 4) - activations.checkpointed_block_bytes(SPEC, tokens, 4)
    assert none - every == 3 * gain
    assert none - third == 1 * gain  # blocks 0 only (0, 3, 6, ... of 3)


def test_to_dict_is_json_and_table_names_every_part():
    est = estimate(memory.PRESETS["llama3-8b"], strategy="HYBRID", world_size=16, host_size=8, checkpointing="every_2")
    payload = json.loads(json.dumps(est.to_dict()))
    assert sum(item["bytes"] for item in payload["items"]) == payload["total_bytes"] == est.total_bytes
    table = str(est)
    for name in ("params", "grads", "master_weights", "optimizer_state", "activations", "comm_buffers", "total"):
        assert name in table
    assert payload["inputs"]["checkpointing"] == "every_2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(optimizer="adam"), "optimizer"),
        (dict(precision="int8"), "precision"),
        (dict(strategy="ZERO1"), "strategy"),
        (dict(world_size=0), "world_size"),
        (dict(batch=-1), "batch"),
        (dict(strategy="HYBRID", world_size=4), "host_size"),
        (dict(strategy="HYBRID", world_size=4, host_size=3), "host_size"),
        (dict(checkpointing="sometimes"), "policy"),
        (dict(checkpointing=0), "k"),
        (dict(unit_params=0), "unit_params"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate(SPEC, **kwargs)


@pytest.mark.parametrize("model", ["7B", -5, 2.5, None, True])
def test_bad_model_is_a_type_error(model):
    with pytest.raises(TypeError, match="model"):
        estimate(model)


def test_bad_spec_names_the_field():
    with pytest.raises(ValueError, match="kv_heads"):
        DecoderSpec(vocab=10, hidden=64, layers=1, heads=4, kv_heads=3, intermediate=8)
    with pytest.raises(ValueError, match="layers"):
        DecoderSpec(vocab=10, hidden=64, layers=0, heads=4, kv_heads=4, intermediate=8)


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("[1, 2]", ValueError, "JSON object"),
        ("{not json", ValueError, "not valid JSON"),
        ('{"vocab_size": 5}', TypeError, "config"),
    ],
)
def test_bad_hf_config_files(tmp_path, text, error, match):
    from shardkit.memory.spec import load_hf_config

    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(error, match=match):
        load_hf_config(str(path))
