"""Estimator and checkpointing on Hugging Face ``LlamaForCausalLM`` built from a config (offline).

Skipped when transformers is not installed (``pip install 'shardkit[hf]'``).
"""

import copy

import pytest
import torch
from shardkit import checkpointing
from shardkit.memory import DecoderSpec, SavedActivationCounter, estimate

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # importing transformers takes seconds

BATCH, SEQ = 2, 24


@pytest.fixture(scope="module")
def llama():
    config = transformers.LlamaConfig(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def step(model, ids):
    with SavedActivationCounter(exclude=model) as saved:
        loss = model(input_ids=ids, labels=ids).loss
    measured = saved.bytes
    loss.backward()
    return measured, {name: p.grad for name, p in model.named_parameters()}


def test_spec_from_config_counts_the_same_parameters(llama):
    spec = DecoderSpec.from_hf_config(llama.config)
    assert spec.params == sum(p.numel() for p in llama.parameters())
    assert estimate(llama).params == spec.params


@pytest.mark.parametrize("policy", ["every_block", 2])
def test_checkpointing_gives_identical_grads_and_the_predicted_activations(llama, policy):
    ids = torch.randint(0, llama.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    plain = copy.deepcopy(llama)
    ckpt = checkpointing.apply(copy.deepcopy(llama), policy)
    assert checkpointing.checkpointed(ckpt)[0] == "model.layers.0"
    saved_plain, grads_plain = step(plain, ids)
    saved_ckpt, grads_ckpt = step(ckpt, ids)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=0, atol=0, msg=name)
    kw = dict(precision="fp32", batch=BATCH, seq_len=SEQ)
    # HF's RoPE tables and label shift differ slightly from the reference decoder: 2% tolerance.
    assert saved_plain == pytest.approx(estimate(plain, **kw)["activations"], rel=0.02)
    assert saved_ckpt == pytest.approx(estimate(ckpt, checkpointing=policy, **kw)["activations"], rel=0.02)
