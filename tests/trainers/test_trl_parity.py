"""Per-step parity with TRL 1.16 on the same tiny Llama, data, optimizer and order.

Both sides start from the same weights (a deep copy) and see the data in
dataset order (TRL's sequential sampler, our shuffle=False). Losses and float
metrics must agree within rtol 1e-4; accuracies and token counts exactly.
"""

import copy
import logging

import pytest

from tests.trainers.conftest import make_llama, make_records, make_tokenizer

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
logging.getLogger("transformers").setLevel(logging.ERROR)

import shardkit.trainers as sk  # noqa: E402

COMMON = dict(learning_rate=1e-2, per_device_train_batch_size=4, max_steps=3, lr_scheduler_type="constant",
              logging_steps=1, bf16=False, optim="adamw_torch", seed=0, max_grad_norm=1.0, weight_decay=0.0)
TRL_ONLY = dict(report_to="none", train_sampling_strategy="sequential", save_strategy="no", use_cpu=True,
                disable_tqdm=True, dataloader_num_workers=0)
EXACT = {"num_tokens", "rewards/accuracies", "step"}
SKIP = {"epoch", "step", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
        "train_loss"}


def _ours(trainer_cls, config_cls, model, tok, records, tmp_path, optim="adamw_torch", **kw):
    args = config_cls(output_dir=str(tmp_path / "ours"), shuffle=False, report_to=[], disable_tqdm=True,
                      **{**COMMON, "optim": optim}, **kw)
    trainer = trainer_cls(model, args=args, train_dataset=records, processing_class=tok)
    return trainer.train().log_history


def _trl(trainer_cls, config_cls, model, tok, records, tmp_path, **kw):
    args = config_cls(output_dir=str(tmp_path / "trl"), **COMMON, **TRL_ONLY, **kw)
    extra = {}
    if trainer_cls is not trl.SFTTrainer and not kw.get("precompute_ref_log_probs"):
        extra["ref_model"] = copy.deepcopy(model)  # TRL would load it from the hub by name
    trainer = trainer_cls(model=model, args=args, train_dataset=datasets.Dataset.from_list(records),
                          processing_class=tok, **extra)
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


def assert_same_history(ours, theirs, required):
    assert len(ours) == len(theirs) > 0
    for step, (a, b) in enumerate(zip(ours, theirs), start=1):
        missing = [k for k in required if k not in a or k not in b]
        assert not missing, f"step {step}: metrics missing {missing}"
        for key in sorted(set(a) & set(b) - SKIP):
            if key in EXACT:
                assert a[key] == b[key], f"step {step} {key}: ours {a[key]} vs TRL {b[key]}"
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), f"step {step} {key}: ours {a[key]} vs TRL {b[key]}"


@pytest.mark.parametrize("packing,optim", [(False, "adamw_torch"), (True, "adamw_torch"),
                                           pytest.param(False, "adamw_fused", marks=pytest.mark.native)])
def test_sft_matches_trl(tmp_path, packing, optim):
    """Our fused AdamW against TRL's torch AdamW too: the same update within tolerance."""
    tok = make_tokenizer()
    records = make_records("prompt_completion", 12)
    model = make_llama(len(tok))
    kw = dict(max_length=24 if packing else 64, packing=packing)
    ours = _ours(sk.SFTTrainer, sk.SFTConfig, copy.deepcopy(model), tok, records, tmp_path, optim=optim, **kw)
    theirs = _trl(trl.SFTTrainer, trl.SFTConfig, model, tok, records, tmp_path, **kw)
    assert_same_history(ours, theirs, ["loss", "grad_norm", "learning_rate", "num_tokens", "mean_token_accuracy",
                                       "entropy"])


@pytest.mark.parametrize("assistant_only", [False, True])
def test_sft_conversational_messages_match_trl(tmp_path, assistant_only):
    tok = make_tokenizer()
    records = make_records("messages", 8, seed=4, conversational=True)
    model = make_llama(len(tok), seed=4)
    kw = dict(max_length=64, assistant_only_loss=assistant_only)
    ours = _ours(sk.SFTTrainer, sk.SFTConfig, copy.deepcopy(model), tok, records, tmp_path, **kw)
    theirs = _trl(trl.SFTTrainer, trl.SFTConfig, model, tok, records, tmp_path, **kw)
    assert_same_history(ours, theirs, ["loss", "grad_norm", "num_tokens", "mean_token_accuracy"])


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "robust", ["sigmoid", "sft"]])
def test_dpo_matches_trl(tmp_path, loss_type):
    tok = make_tokenizer()
    records = make_records("preference", 8, seed=1)
    model = make_llama(len(tok), seed=1)
    kw = dict(max_length=64, beta=0.1, loss_type=loss_type, label_smoothing=0.1 if loss_type == "robust" else 0.0)
    if isinstance(loss_type, list):  # DPO plus the chosen answers' NLL, weighted
        kw["loss_weights"] = [1.0, 0.5]
    ours = _ours(sk.DPOTrainer, sk.DPOConfig, copy.deepcopy(model), tok, records, tmp_path, **kw)
    theirs = _trl(trl.DPOTrainer, trl.DPOConfig, model, tok, records, tmp_path, **kw)
    assert_same_history(ours, theirs, ["loss", "grad_norm", "num_tokens", "rewards/chosen", "rewards/rejected",
                                       "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"])
    if loss_type == "sigmoid":
        assert ours[0]["loss"] == pytest.approx(0.6931472, abs=1e-6)  # ln 2: policy == reference at step 1


def test_dpo_conversational_with_precomputed_reference_matches_trl(tmp_path):
    tok = make_tokenizer()
    records = make_records("preference", 8, seed=2, conversational=True)
    model = make_llama(len(tok), seed=2)
    kw = dict(max_length=64, precompute_ref_log_probs=True)
    ours = _ours(sk.DPOTrainer, sk.DPOConfig, copy.deepcopy(model), tok, records, tmp_path, **kw)
    theirs = _trl(trl.DPOTrainer, trl.DPOConfig, model, tok, records, tmp_path, **kw)
    assert_same_history(ours, theirs, ["loss", "rewards/margins", "logps/chosen"])


def test_kto_matches_trl(tmp_path):
    tok = make_tokenizer()
    records = make_records("unpaired_preference", 12, seed=3)
    model = make_llama(len(tok), seed=3)
    kw = dict(max_length=64, beta=0.1, desirable_weight=1.0, undesirable_weight=1.5)
    ours = _ours(sk.KTOTrainer, sk.KTOConfig, copy.deepcopy(model), tok, records, tmp_path, **kw)
    theirs = _trl(trl.KTOTrainer, trl.KTOConfig, model, tok, records, tmp_path, **kw)
    assert_same_history(ours, theirs, ["loss", "grad_norm", "kl", "num_tokens", "rewards/chosen", "rewards/rejected",
                                       "logps/chosen", "logps/rejected"])
