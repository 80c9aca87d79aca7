"""Memory of the RL recipes: the 7B PPO figure by hand, and tiny real trainers measured against the estimate.

Model states and frozen weights are checked exactly (plus torch AdamW's
per-tensor fp32 step counter, 4 B per parameter tensor). Activations of a
real PPO step on ``shardkit.models.GPT`` are checked to 10%: the formula is
exact for ``ReferenceDecoder``, and our GPT already saves about 6% more in a
plain pretraining step (RoPE tables, the fp32 RMSNorm path), asserted too.
"""

import pytest
import torch
from shardkit.cli import main
from shardkit.memory import (
    PRESETS,
    DecoderSpec,
    SavedActivationCounter,
    estimate,
    model_state_bytes,
)
from shardkit.memory.measure import unique_storage_bytes
from shardkit.trainers import (
    DPOConfig,
    DPOTrainer,
    PPOConfig,
    PPOTrainer,
    prepare_model_and_optimizer,
    scalar_head_gpt,
)

from tests.trainers.conftest import make_gpt, make_records, make_tokenizer

GB = 1e9


def test_ppo_7b_is_the_220_gb_class_figure():
    # arXiv 2309.00754 Table 1's estimate: two trained 7B models x 16 B (mixed AdamW) = 224 GB.
    bare = estimate(7 * 10**9, recipe="ppo")
    assert bare.model_state_bytes == 2 * 7e9 * 16
    assert bare["frozen_models"] == 2 * 7e9 * 2
    # Llama-2-7B: the value model has a scalar head instead of the 32000 x 4096 LM head.
    spec = PRESETS["llama2-7b"]
    est = estimate(spec, recipe="ppo", seq_len=1024)
    value = spec.params - spec.vocab * spec.hidden + spec.hidden
    assert est.trainable_params == spec.params + value
    assert est["params"] == 2 * (spec.params + value)
    assert est["grads"] == 2 * (spec.params + value)
    assert est["master_weights"] == 4 * (spec.params + value)
    assert est["optimizer_state"] == 8 * (spec.params + value)
    assert est["frozen_models"] == 2 * (spec.params + value)
    assert 210 * GB < est.model_state_bytes < 225 * GB
    assert est.inputs["models"]["trained"] == {"policy": spec.params, "value model": value}
    # FULL_SHARD over 8 ranks divides the trained states and the frozen weights alike.
    sharded = estimate(spec, recipe="ppo", strategy="FULL_SHARD", world_size=8)
    assert sharded.model_state_bytes == pytest.approx(est.model_state_bytes / 8, abs=8)
    assert sharded["frozen_models"] == pytest.approx(est["frozen_models"] / 8, abs=8)


def test_recipes_hold_the_right_models():
    spec = PRESETS["llama3-8b"]
    pre = estimate(spec, batch=2, seq_len=512)
    dpo = estimate(spec, recipe="dpo", batch=2, seq_len=512)
    assert dpo.model_state_bytes == pre.model_state_bytes and dpo["frozen_models"] == 2 * spec.params
    # Chosen and rejected rows go through one forward: the activations of twice the batch.
    assert dpo["activations"] == estimate(spec, batch=4, seq_len=512)["activations"]
    assert "frozen_models" not in [i.name for i in estimate(spec, recipe="dpo", reference=False).items]
    assert estimate(spec, recipe="grpo")["frozen_models"] == 2 * spec.params
    rm = estimate(spec, recipe="rm", batch=2, seq_len=512)
    assert rm.trainable_params == spec.params - spec.vocab * spec.hidden + spec.hidden
    assert rm["activations"] < dpo["activations"]  # no vocabulary log-softmax
    with pytest.raises(ValueError, match="recipe"):
        estimate(spec, recipe="rlhf")


def test_cli_memory_recipe(capsys):
    assert main(["memory", "--preset", "llama2-7b", "--recipe", "ppo", "--seq-len", "1024"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PPO | 6,738,415,616 policy params")
    assert "frozen_models" in out and "policy + value model" in out


def _gpt(vocab, seed):
    return make_gpt(vocab, seed)


def _spec(vocab):
    return DecoderSpec(vocab=vocab, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, tie_embeddings=True)


def test_ppo_estimate_matches_a_real_ppo_step(tmp_path):
    tok = make_tokenizer()
    vocab, spec = len(tok), _spec(len(tok))
    args = PPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        num_ppo_epochs=1,
        response_length=8,
        optim="adamw_torch",
        report_to=[],
        disable_tqdm=True,
    )
    prompts = [{"input_ids": list(range(10, 18))}] * 2
    trainer = PPOTrainer(
        args, tok, _gpt(vocab, 0), None, scalar_head_gpt(_gpt(vocab, 1)), prompts, scalar_head_gpt(_gpt(vocab, 2))
    )
    trainer.model, trainer.optimizer, trainer.lr_scheduler = prepare_model_and_optimizer(trainer.model, args, 1)
    queries, mask = trainer.collate_prompts(trainer.rollout_prompts(0))
    exp = trainer.make_experience(
        queries, mask, torch.randint(8, vocab, (2, 8), generator=torch.Generator().manual_seed(0))
    )
    with SavedActivationCounter(exclude=trainer.model) as saved:
        loss, _ = trainer.micro_batch_loss(exp, torch.arange(2))
    activations = saved.bytes  # read before backward frees them
    loss.backward()
    trainer.optimizer.step()
    measured = model_state_bytes(trainer.model, trainer.optimizer)
    est = estimate(spec, recipe="ppo", precision="fp32", batch=2, seq_len=16)
    tensors = len(list(trainer.model.parameters()))
    assert measured["params"] == est["params"]
    assert measured["grads"] == est["grads"]
    assert measured["master_weights"] == est["master_weights"] == 0
    assert measured["optimizer_state"] == est["optimizer_state"] + 4 * tensors  # AdamW's fp32 step per tensor
    frozen = unique_storage_bytes([*trainer.ref_model.parameters(), *trainer.reward_model.parameters()])
    assert frozen == est["frozen_models"]
    assert activations == pytest.approx(est["activations"], rel=0.10)
    # The same gap on a plain pretraining step of the same GPT: it is the model, not the recipe.
    with SavedActivationCounter(exclude=trainer.model) as plain:
        out = trainer.policy(exp["input_ids"], labels=exp["input_ids"])
        plain_bytes = plain.bytes
    del out
    pre = estimate(spec, precision="fp32", batch=2, seq_len=16)["activations"]
    assert plain_bytes == pytest.approx(pre, rel=0.10)


def test_dpo_reference_is_the_frozen_estimate(tmp_path):
    tok = make_tokenizer()
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], disable_tqdm=True)
    trainer = DPOTrainer(
        _gpt(len(tok), 0), args=args, train_dataset=make_records("preference", 4), processing_class=tok
    )
    est = estimate(_spec(len(tok)), recipe="dpo", precision="fp32")
    assert unique_storage_bytes(trainer.ref_model.parameters()) == est["frozen_models"]
    assert unique_storage_bytes(trainer.model.parameters()) == est["params"]
