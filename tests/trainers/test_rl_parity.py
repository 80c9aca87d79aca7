"""Per-step parity of RewardTrainer and GRPOTrainer with TRL 1.16's, run side by side in the test.

Same tiny Llama weights (deep copies), same data in dataset order, same
optimizer; losses and grad norms must agree within rtol 1e-4 at every step.
"""

import copy
import logging
import random

import pytest
import torch

from tests.trainers.conftest import make_llama, make_records, make_tokenizer

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


def make_seq_cls(vocab_size: int, pad_token_id: int, seed: int = 0, num_labels: int = 1):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=num_labels,
                      pad_token_id=pad_token_id, bos_token_id=None, eos_token_id=1, tie_word_embeddings=False)
    return LlamaForSequenceClassification(cfg)


def assert_close_history(ours, theirs, keys, first_step=1):
    assert len(ours) == len(theirs) > 0
    for step, (a, b) in enumerate(zip(ours, theirs), start=first_step):
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


# -- GRPO ---------------------------------------------------------------------

def make_rollout(seed: int, max_len: int):
    """A deterministic rollout_func: random completions (some end in EOS, some are cut) and a per-row extra."""
    rng = random.Random(seed)

    def rollout(prompts, trainer):
        tok = trainer.processing_class
        if isinstance(prompts[0], list):
            prompt_ids = [tok.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)
                          ["input_ids"] for p in prompts]
        else:
            prompt_ids = [tok(text=p)["input_ids"] for p in prompts]
        completion_ids = []
        for _ in prompts:
            ids = [rng.randint(7, len(tok) - 1) for _ in range(rng.randint(1, max_len))]
            if rng.random() < 0.7:
                ids[-1] = tok.eos_token_id
            completion_ids.append(ids)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids,
                "logprobs": [[0.0] * len(c) for c in completion_ids], "bonus": [rng.random() for _ in prompts]}

    return rollout


def count_vowels(completions, **kwargs):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count("a") + 0.5 * t.count("e") - 0.1 * len(t) for t in texts]


def length_and_bonus(prompts, completions, completion_ids, target, bonus, trainer_state, **kwargs):
    # Uses a dataset column (target), a rollout extra (bonus) and the trainer state; None = does not apply.
    return [None if t == "skip" else len(ids) / 5.0 + b for ids, t, b in zip(completion_ids, target, bonus)]


def _prompts(n, conversational, seed):
    rng = random.Random(seed)
    out = []
    for i, r in enumerate(make_records("prompt_completion", n, seed=seed, conversational=conversational)):
        out.append({"prompt": r["prompt"], "target": "skip" if i % 3 == 2 else rng.choice(["a", "b"])})
    return out


GRPO_CASES = {
    "grpo": {"loss_type": "grpo", "reward_weights": [1.0, 0.5]},
    "bnpo-beta": {"loss_type": "bnpo", "beta": 0.1, "temperature": 0.7},
    "dr_grpo-iter2-batch": {"loss_type": "dr_grpo", "num_iterations": 2, "scale_rewards": "batch"},
    "dapo-beta-iter2-ga2": {"loss_type": "dapo", "beta": 0.05, "num_iterations": 2, "gradient_accumulation_steps": 2,
                                "mask_truncated_completions": True, "epsilon_high": 0.28, "scale_rewards": "none",
                                "use_bias_correction_kl": False},
    # Our GPT against HF's Llama: the same math in another op order, so a gentler step keeps rounding small.
    "gpt-rm-chat": {"loss_type": "dapo", "beta": 0.05, "num_iterations": 2, "learning_rate": 1e-2},
}
# Metrics that depend on how rows are split over micro-batches (TRL shuffles them with the global RNG).
PER_MICRO_BATCH = {"entropy", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                   "clip_ratio/low_min", "clip_ratio/high_max"}


@pytest.mark.parametrize("case", list(GRPO_CASES))
def test_grpo_matches_trl(tmp_path, monkeypatch, case):
    from shardkit.models import GPT

    kw = dict(GRPO_CASES[case])
    conversational = case == "gpt-rm-chat"
    tok = make_tokenizer(pad_is_eos=False)
    records = _prompts(6, conversational, seed=7)
    policy = make_llama(len(tok), seed=7)
    funcs = [count_vowels, length_and_bonus]
    if case == "gpt-rm-chat":
        rm = make_seq_cls(len(tok), tok.pad_token_id, seed=8)
        rm.config._name_or_path = "tiny-rm"
        funcs = [count_vowels, rm]
        records = [{"prompt": r["prompt"]} for r in records]
    common = {**COMMON, "learning_rate": 5e-2, "max_steps": 3, "per_device_train_batch_size": 4,
              "num_generations": 2, "max_completion_length": 6, "shuffle_dataset": False, **kw}
    # TRL builds its reference model from the hub by name: hand it a copy of the policy instead.
    monkeypatch.setattr(trl.trainer.grpo_trainer, "create_model_from_path",
                        lambda *a, **k: copy.deepcopy(policy).eval())
    ours_model = GPT.from_hf_llama(policy) if case == "gpt-rm-chat" else copy.deepcopy(policy)
    ours_funcs = [f if callable(f) and not isinstance(f, torch.nn.Module) else copy.deepcopy(f) for f in funcs]
    args = sk.GRPOConfig(output_dir=str(tmp_path / "ours"), report_to=[], disable_tqdm=True, **common)
    ours = sk.GRPOTrainer(ours_model, ours_funcs, args=args, train_dataset=records, processing_class=tok,
                          rollout_func=make_rollout(11, 6)).train().log_history
    targs = trl.GRPOConfig(output_dir=str(tmp_path / "trl"), **TRL_ONLY, **common)
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=funcs, args=targs,
                              train_dataset=datasets.Dataset.from_list(records), processing_class=tok,
                              reward_processing_classes=[tok] * len(funcs), rollout_func=make_rollout(11, 6))
    trainer.train()
    theirs = [h for h in trainer.state.log_history if "loss" in h]
    keys = sorted(k for k in set(theirs[0]) - SKIP)
    if kw.get("gradient_accumulation_steps", 1) > 1:
        keys = [k for k in keys if k not in PER_MICRO_BATCH]
    assert {"loss", "grad_norm", "reward", "reward_std", "completions/mean_length"} <= set(keys)
    if kw.get("beta"):
        assert "kl" in keys or kw.get("gradient_accumulation_steps", 1) > 1
    assert len(ours) == len(theirs) == 3
    for step, (a, b) in enumerate(zip(ours, theirs), start=1):
        # Generation metrics appear in the steps that generated; ours must log exactly where TRL does.
        present = [k for k in keys if k in b]
        assert sorted(k for k in a if k in keys) == sorted(present), f"step {step}: {sorted(a)} vs {sorted(b)}"
        assert_close_history([a], [b], present, first_step=step)
