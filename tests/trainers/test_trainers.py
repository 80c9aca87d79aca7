"""Trainer behaviour: learning, accumulation, schedules, resume, reference memory, configs."""

import copy
import math

import pytest
import torch

from tests.trainers.conftest import make_llama, make_records, make_tokenizer
from shardkit.models import GPT, GPTConfig
from shardkit.trainers import (DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, PretrainConfig, PretrainTrainer,
                               SFTConfig, SFTTrainer)


def _gpt(tok, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, max_position_embeddings=256, tie_word_embeddings=True))


def _args(cls, tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), learning_rate=1e-2, per_device_train_batch_size=4, max_steps=8,
                lr_scheduler_type="constant", logging_steps=1, optim="adamw_torch", report_to=[], disable_tqdm=True,
                max_length=64, seed=0)
    base.update(kw)
    return cls(**base)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("optim", ["adamw_torch", pytest.param("adamw_fused", marks=pytest.mark.native)])
def test_sft_on_our_gpt_learns(tmp_path, optim):
    tok = make_tokenizer()
    model = _gpt(tok)
    before = _params(model)
    # One batch seen again and again: its loss must fall.
    trainer = SFTTrainer(model, args=_args(SFTConfig, tmp_path, optim=optim, max_steps=8),
                         train_dataset=make_records("prompt_completion", 4), processing_class=tok)
    history = trainer.train().log_history
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert all(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_pretraining_an_hf_llama_learns_and_bf16_fused_runs(tmp_path):
    tok = make_tokenizer()
    model = make_llama(len(tok))
    before = _params(model)
    trainer = PretrainTrainer(model, args=_args(PretrainConfig, tmp_path, max_steps=8, max_length=48),
                              train_dataset=make_records("text", 8), processing_class=tok)
    history = trainer.train().log_history
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    if not pytest.importorskip("shardkit").HAS_NATIVE:
        return
    bf16 = PretrainTrainer(make_llama(len(tok)), args=_args(PretrainConfig, tmp_path / "bf16", max_steps=8,
                                                            max_length=48, bf16=True, optim="adamw_fused"),
                           train_dataset=make_records("text", 8), processing_class=tok)
    history = bf16.train().log_history
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


def test_gradient_accumulation_normalises_over_the_whole_batch(tmp_path):
    tok = make_tokenizer()
    records = make_records("prompt_completion", 16)
    model = make_llama(len(tok))
    runs = []
    for bs, ga in ((4, 1), (2, 2), (1, 4)):
        trainer = SFTTrainer(copy.deepcopy(model), args=_args(SFTConfig, tmp_path / f"{ga}", shuffle=False,
                                                              per_device_train_batch_size=bs,
                                                              gradient_accumulation_steps=ga, max_steps=3),
                             train_dataset=records, processing_class=tok)
        runs.append(trainer.train().log_history)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
            assert b["num_tokens"] == a["num_tokens"]


def test_warmup_cosine_schedule_and_clipping(tmp_path):
    tok = make_tokenizer()
    trainer = SFTTrainer(_gpt(tok), args=_args(SFTConfig, tmp_path, lr_scheduler_type="cosine", warmup_steps=3,
                                               max_steps=10, max_grad_norm=0.05),
                         train_dataset=make_records("prompt_completion", 16), processing_class=tok)
    history = trainer.train().log_history
    expected = [s / 3 if s < 3 else 0.5 * (1 + math.cos(math.pi * (s - 3) / 7)) for s in range(10)]
    assert [h["learning_rate"] for h in history] == pytest.approx([1e-2 * e for e in expected])
    assert all(h["grad_norm"] > 0.05 for h in history)  # logged before clipping


def test_max_grad_norm_none_means_no_clipping(tmp_path):
    # transformers accepts max_grad_norm=None for "no clipping"; it once raised a TypeError here.
    tok = make_tokenizer()

    def history(name, norm):
        trainer = SFTTrainer(_gpt(tok), args=_args(SFTConfig, tmp_path / name, max_steps=4, max_grad_norm=norm),
                             train_dataset=make_records("prompt_completion", 8), processing_class=tok)
        return trainer.train().log_history

    unclipped, off, clipped = history("none", None), history("zero", 0.0), history("clipped", 0.05)
    # None trains exactly as 0 (clipping off), and both log the pre-clip norm.
    assert [h["loss"] for h in unclipped] == [h["loss"] for h in off]
    assert [h["grad_norm"] for h in unclipped] == [h["grad_norm"] for h in off]
    assert all(h["grad_norm"] > 0.05 for h in unclipped)
    # Clipping does change this run, so the equality above is not vacuous.
    assert [h["loss"] for h in clipped][1:] != [h["loss"] for h in unclipped][1:]
    for bad in (-1.0, "None", True):
        with pytest.raises(ValueError, match="max_grad_norm must be a number >= 0 or None"):
            SFTConfig(max_grad_norm=bad)
    assert SFTConfig.from_file(None, {"max_grad_norm": "null"}).max_grad_norm is None


@pytest.mark.parametrize("optim", ["adamw_torch", pytest.param("adamw_fused", marks=pytest.mark.native)])
def test_resume_equals_uninterrupted_run(tmp_path, optim):
    tok = make_tokenizer()
    records = make_records("prompt_completion", 10)
    model = _gpt(tok)

    def run(out, **kw):
        args = _args(SFTConfig, out, optim=optim, max_steps=6, per_device_train_batch_size=3,
                     gradient_accumulation_steps=2, lr_scheduler_type="cosine", warmup_steps=2, **kw)
        return SFTTrainer(copy.deepcopy(model), args=args, train_dataset=records, processing_class=tok)

    full = run(tmp_path / "full")
    full_history = full.train().log_history
    run(tmp_path / "part", save_steps=3).train()  # leaves checkpoint-3 behind
    resumed = run(tmp_path / "resumed")  # a fresh trainer, from the initial weights, picks it up
    resumed_history = resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-3")).log_history
    assert resumed_history == full_history
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_dpo_precomputed_reference_holds_no_model_and_matches_live_reference(tmp_path):
    tok = make_tokenizer()
    records = make_records("preference", 8)
    model = _gpt(tok)
    live = DPOTrainer(copy.deepcopy(model), args=_args(DPOConfig, tmp_path / "a", max_steps=4),
                      train_dataset=records, processing_class=tok)
    assert live.ref_model is not None
    pre = DPOTrainer(copy.deepcopy(model), args=_args(DPOConfig, tmp_path / "b", max_steps=4,
                                                      precompute_ref_log_probs=True),
                     train_dataset=records, processing_class=tok)
    assert pre.ref_model is None
    seen = []
    original = pre.compute_loss

    def spy(*a, **kw):
        seen.append(pre.ref_model)
        return original(*a, **kw)

    pre.compute_loss = spy
    a, b = live.train().log_history, pre.train().log_history
    assert seen and all(ref is None for ref in seen)
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert y["rewards/margins"] == pytest.approx(x["rewards/margins"], rel=1e-4, abs=1e-7)
    assert a[-1]["rewards/margins"] > 0  # DPO pushes chosen above rejected


def test_kto_learns_on_our_gpt(tmp_path):
    tok = make_tokenizer()
    trainer = KTOTrainer(_gpt(tok), args=_args(KTOConfig, tmp_path, max_steps=6),
                         train_dataset=make_records("unpaired_preference", 4), processing_class=tok)
    history = trainer.train().log_history
    assert history[0]["loss"] == pytest.approx(0.5 * 1.0, abs=1e-6)  # policy == reference: 1 - σ(0)
    assert history[-1]["loss"] < history[0]["loss"]


def test_eval_and_jsonl_metrics(tmp_path):
    tok = make_tokenizer()
    trainer = SFTTrainer(_gpt(tok), args=_args(SFTConfig, tmp_path, max_steps=4, eval_steps=2, report_to=["jsonl"]),
                         train_dataset=make_records("prompt_completion", 8),
                         eval_dataset=make_records("prompt_completion", 4, seed=9), processing_class=tok)
    history = trainer.train().log_history
    evals = [h for h in history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [2, 4] and evals[1]["eval_loss"] < evals[0]["eval_loss"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(history)


def test_bad_configs_and_inputs_raise_clear_errors(tmp_path):
    tok = make_tokenizer()
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="nope")
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type=["sigmoid", "nope"])
    with pytest.raises(ValueError, match="loss_weights"):
        DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        SFTConfig(gradient_accumulation_steps=0)
    with pytest.raises(TypeError, match="args must be a SFTConfig"):
        SFTTrainer(_gpt(tok), args=DPOConfig(), train_dataset=make_records("text", 2), processing_class=tok)
    with pytest.raises(ValueError, match="processing_class is required"):
        SFTTrainer(_gpt(tok), args=SFTConfig(), train_dataset=make_records("text", 2))
    with pytest.raises(ValueError, match=r"list row 1: missing field 'completion'"):
        SFTTrainer(_gpt(tok), args=SFTConfig(), train_dataset=[{"prompt": "a", "completion": "b"}, {"prompt": "c"}],
                   processing_class=tok)
    with pytest.raises(ValueError, match=r"row 0: cannot tell the dataset kind"):
        SFTTrainer(_gpt(tok), args=SFTConfig(), train_dataset=[{"txt": "a"}], processing_class=tok)
    with pytest.raises(ValueError, match="missing field 'rejected'"):
        DPOTrainer(_gpt(tok), args=DPOConfig(), train_dataset=[{"prompt": "a", "chosen": "b"}], processing_class=tok)


def test_config_from_toml_with_overrides(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('[trainer]\nlearning_rate = 0.001\nloss_type = "ipo"\nmax_steps = 5\n')
    cfg = DPOConfig.from_file(path, {"beta": "0.2", "shuffle": "false"})
    assert (cfg.learning_rate, cfg.loss_type, cfg.max_steps, cfg.beta, cfg.shuffle) == (1e-3, "ipo", 5, 0.2, False)
    with pytest.raises(ValueError, match="unknown field 'betaa'"):
        DPOConfig.from_file(path, {"betaa": "1"})


def test_dpo_with_precomputed_reference_resumes_exactly(tmp_path):
    tok = make_tokenizer()
    records, evals = make_records("preference", 8), make_records("preference", 4, seed=5)
    model = _gpt(tok)

    def trainer(out, **kw):
        args = _args(DPOConfig, out, max_steps=4, per_device_train_batch_size=2, precompute_ref_log_probs=True,
                     eval_steps=2, **kw)
        return DPOTrainer(copy.deepcopy(model), args=args, train_dataset=records, eval_dataset=evals,
                          processing_class=tok)

    full = trainer(tmp_path / "full", save_steps=2).train().log_history
    resumed = trainer(tmp_path / "resumed").train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert resumed.log_history == full


def test_dpo_on_an_hf_gpt2_learns(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = make_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128))
    before = _params(model)
    trainer = DPOTrainer(model, args=_args(DPOConfig, tmp_path, max_steps=6),
                         train_dataset=make_records("preference", 4), processing_class=tok)
    history = trainer.train().log_history
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["rewards/accuracies"] == 1.0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
