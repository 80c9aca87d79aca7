"""Per-step parity of RewardTrainer and GRPOTrainer with TRL 1.16's, run side by side in the test.

Same tiny Llama weights (deep copies), same data in dataset order, same
optimizer; losses and grad norms must agree within rtol 1e-4 at every step.
"""

import copy
import logging

import pytest
import torch

from tests.trainers.conftest import make_records, make_tokenizer

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
logging.getLogger("transformers").setLevel(logging.ERROR)

import shardkit.trainers as sk
from shardkit.models import GPTForSequenceClassification

COMMON = {"learning_rate": 1e-2, "per_device_train_batch_size": 4, "max_steps": 3, "lr_scheduler_type": "constant",
              "logging_steps": 1, "bf16": False, "optim": "adamw_torch", "seed": 0, "max_grad_norm": 1.0, "weight_decay": 0.0}
TRL_ONLY = {"report_to": "none", "save_strategy": "no", "use_cpu": True, "disable_tqdm": True, "dataloader_num_workers": 0}
SKIP = {"epoch", "step", "learning_rate", "num_tokens", "train_runtime", "train_samples_per_second",
        "train_steps_per_second", "total_flos", "train_loss", "step_time"}


def make_seq_cls(vocab_size: int, pad_token_id: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
                      pad_token_id=pad_token_id, bos_token_id=None, eos_token_id=1, tie_word_embeddings=False)
    return LlamaForSequenceClassification(cfg)


def assert_close_history(ours, theirs, keys):
    assert len(ours) == len(theirs) > 0
    for step, (a, b) in enumerate(zip(ours, theirs), start=1):
        for key in keys:
            assert key in a and key in b, f"step {step}: {key} missing (ours {sorted(a)}, TRL {sorted(b)})"
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), f"step {step} {key}: ours {a[key]} vs TRL {b[key]}"


def _reward_records(n, conversational, margin, seed):
    records = make_records("preference", n, seed=seed, conversational=conversational)
    for i, r in enumerate(records):
        if margin:
            r["margin"] = 0.25 * (i % 3)
        if not conversational and i % 2:  # implicit prompt: the prompt is part of chosen/rejected
            r["chosen"], r["rejected"] = r["prompt"] + r["chosen"], r["prompt"] + r["rejected"]
            del r["prompt"]
    if not conversational:
        for r in records:
            r.setdefault("prompt", "")
    return records


@pytest.mark.parametrize("conversational,margin,center,ours_gpt", [
    (False, True, 0.01, False),
    (True, False, None, True),
])
def test_reward_matches_trl(tmp_path, conversational, margin, center, ours_gpt):
    tok = make_tokenizer(pad_is_eos=False)
    records = _reward_records(12, conversational, margin, seed=5)
    model = make_seq_cls(len(tok), tok.pad_token_id, seed=5)
    ours_model = GPTForSequenceClassification.from_hf(copy.deepcopy(model)) if ours_gpt else copy.deepcopy(model)
    kw = {"max_length": 64, "center_rewards_coefficient": center}
    args = sk.RewardConfig(output_dir=str(tmp_path / "ours"), shuffle=False, report_to=[], disable_tqdm=True,
                           **COMMON, **kw)
    ours = sk.RewardTrainer(ours_model, args=args, train_dataset=records, processing_class=tok).train().log_history
    targs = trl.RewardConfig(output_dir=str(tmp_path / "trl"), train_sampling_strategy="sequential", **COMMON,
                             **TRL_ONLY, **kw)
    trainer = trl.RewardTrainer(model=model, args=targs, train_dataset=datasets.Dataset.from_list(records),
                                processing_class=tok)
    trainer.train()
    theirs = [h for h in trainer.state.log_history if "loss" in h]
    assert_close_history(ours, theirs, ["loss", "grad_norm", "accuracy", "margin", "mean_reward", "min_reward",
                                        "max_reward"])
