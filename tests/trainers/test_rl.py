"""RewardTrainer and GRPOTrainer behaviour: generation paths, learning, and clear errors on bad input."""

import copy
import math

import pytest
import torch
from shardkit.models import GPT, GPTConfig, GPTForSequenceClassification
from shardkit.trainers import GRPOConfig, GRPOTrainer, RewardConfig, RewardTrainer

from tests.trainers.conftest import make_llama, make_records, make_tokenizer


def _gpt(tok, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, max_position_embeddings=128, tie_word_embeddings=True))


def _grpo_args(tmp_path, **kw):
    base = {"output_dir": str(tmp_path), "learning_rate": 1e-2, "per_device_train_batch_size": 8, "max_steps": 2,
            "num_generations": 4, "max_completion_length": 6, "logging_steps": 1, "optim": "adamw_torch",
            "report_to": [], "disable_tqdm": True, "seed": 0}
    base.update(kw)
    return GRPOConfig(**base)


def _prompts(n=8, conversational=False):
    return [{"prompt": r["prompt"]} for r in make_records("prompt_completion", n, conversational=conversational)]


def count_a(completions, **kwargs):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(t.count("a")) for t in texts]


@pytest.mark.parametrize("hf,conversational", [(False, False), (True, True)])
def test_grpo_generates_with_kv_cache_and_stops_at_eos(tmp_path, hf, conversational):
    """Both generation paths: completions end at their first EOS or at max_completion_length."""
    tok = make_tokenizer(pad_is_eos=False)
    model = make_llama(len(tok), seed=1) if hf else _gpt(tok, seed=1)
    seen = []

    def spy(prompts, completions, completion_ids, **kwargs):
        seen.append((prompts, completion_ids))
        return [float(len(c)) for c in completion_ids]

    state = GRPOTrainer(model, [spy], args=_grpo_args(tmp_path, temperature=1.5),
                        train_dataset=_prompts(conversational=conversational), processing_class=tok).train()
    assert len(seen) == 2 and all(math.isfinite(h["loss"]) for h in state.log_history)
    prompts, ids = seen[0]
    assert len(ids) == 8 and prompts[0] == prompts[3] != prompts[4]  # each prompt num_generations times in a row
    for row in ids:
        assert 1 <= len(row) <= 6
        assert tok.eos_token_id not in row[:-1]  # nothing after the first EOS
    assert {"reward", "reward_std", "entropy", "completions/mean_length", "rewards/spy/mean"} <= set(state.log_history[0])


def test_grpo_on_our_gpt_raises_its_reward(tmp_path):
    tok = make_tokenizer(pad_is_eos=False)
    args = _grpo_args(tmp_path, max_steps=12, learning_rate=3e-2, per_device_train_batch_size=16,
                      num_generations=8, loss_type="grpo")
    history = GRPOTrainer(_gpt(tok, seed=2), count_a, args=args, train_dataset=_prompts(16),
                          processing_class=tok).train().log_history
    rewards = [h["reward"] for h in history]
    assert sum(rewards[-3:]) / 3 > 2 * sum(rewards[:3]) / 3 + 0.2, rewards


def test_gpt_reward_model_matches_hf_and_learns(tmp_path):
    from tests.trainers.test_rl_parity import make_seq_cls

    tok = make_tokenizer(pad_is_eos=False)
    hf = make_seq_cls(len(tok), tok.pad_token_id, seed=3)
    ours = GPTForSequenceClassification.from_hf(copy.deepcopy(hf))
    ids = torch.tensor([[9, 10, 11, 12, 1], [9, 13, 1, 0, 0]])
    mask = (ids != 0).long()
    torch.testing.assert_close(ours(ids, attention_mask=mask).logits, hf(input_ids=ids, attention_mask=mask).logits)
    args = RewardConfig(output_dir=str(tmp_path), learning_rate=1e-2, per_device_train_batch_size=8, max_steps=15,
                        logging_steps=1, optim="adamw_torch", report_to=[], disable_tqdm=True)
    history = RewardTrainer(ours, args=args, train_dataset=make_records("preference", 8),
                            processing_class=tok).train().log_history
    assert history[-1]["accuracy"] == 1.0 and history[-1]["loss"] < 0.5 * history[0]["loss"]


# -- bad input ------------------------------------------------------------------

def _trainer(tmp_path, funcs, rollout=None, records=None, **kw):
    tok = make_tokenizer(pad_is_eos=False)
    return GRPOTrainer(_gpt(tok), funcs, args=_grpo_args(tmp_path, max_steps=1, **kw),
                       train_dataset=records or _prompts(), processing_class=tok, rollout_func=rollout)


@pytest.mark.parametrize("returns,match", [
    (lambda n: [0.0] * (n - 1), "returned 7 rewards, expected 8"),
    (lambda n: [float("nan")] * n, "must be finite"),
    (lambda n: ["good"] * n, "non-number at index 0"),
    (lambda n: 1.0, "must return a list of 8 numbers"),
])
def test_grpo_rejects_bad_rewards(tmp_path, returns, match):
    def bad_reward(completions, **kwargs):
        return returns(len(completions))

    with pytest.raises((ValueError, TypeError), match=f"'bad_reward'.*{match}|{match}"):
        _trainer(tmp_path, [bad_reward]).train()


def _rollout(drop=None, **override):
    def rollout(prompts, trainer):
        out = {"prompt_ids": [[9, 10]] * len(prompts), "completion_ids": [[11, 1]] * len(prompts),
               "logprobs": [[0.0, 0.0]] * len(prompts), **override}
        out.pop(drop, None)
        return out

    return rollout


@pytest.mark.parametrize("rollout,match", [
    (_rollout(drop="completion_ids"), r"missing keys \['completion_ids'\]"),
    (_rollout(completion_ids=[[11, 1]] * 3), "'completion_ids' must be a list of 8"),
    (_rollout(extra=[1, 2]), "'extra' has 2 values"),
])
def test_grpo_rejects_bad_rollouts(tmp_path, rollout, match):
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, [count_a], rollout=rollout).train()


def test_grpo_rollout_extras_reach_reward_functions(tmp_path):
    got = {}

    def reward(completions, extra, **kwargs):
        got["extra"] = extra
        return [0.0] * len(completions)

    _trainer(tmp_path, [reward], rollout=_rollout(extra=list(range(8)))).train()
    assert got["extra"] == list(range(8))


def test_grpo_rejects_bad_config_and_data(tmp_path):
    with pytest.raises(ValueError, match=r"num_generations \(3\) must divide the generation batch"):
        _grpo_args(tmp_path, num_generations=3)
    with pytest.raises(ValueError, match="no 'prompt' field"):
        _trainer(tmp_path, [count_a], records=[{"question": "hi"}] * 8)
    with pytest.raises(ValueError, match="loss_type"):
        _grpo_args(tmp_path, loss_type="ppo")
    from tests.trainers.test_rl_parity import make_seq_cls

    tok = make_tokenizer(pad_is_eos=False)
    two_labels = make_seq_cls(len(tok), 0, num_labels=2)
    with pytest.raises(ValueError, match="scalar head"):
        _trainer(tmp_path, [two_labels])
    with pytest.raises(ValueError, match="scalar head"):
        RewardTrainer(GPTForSequenceClassification(_gpt(tok), num_labels=3), args=RewardConfig(output_dir=str(tmp_path)),
                      train_dataset=make_records("preference", 4), processing_class=tok)


@pytest.mark.parametrize("spg,ga", [(2, 1), (4, 2)])
def test_grpo_old_logps_from_the_first_pass_equal_a_separate_forward(tmp_path, monkeypatch, spg, ga):
    """Slices first trained with the generating weights take their old log-probs from that pass."""
    tok = make_tokenizer(pad_is_eos=False)
    histories = []
    for reuse in (True, False):
        monkeypatch.setattr(GRPOTrainer, "reuse_old_logps", reuse)
        args = _grpo_args(tmp_path, max_steps=4, per_device_train_batch_size=4, steps_per_generation=spg,
                          gradient_accumulation_steps=ga, num_iterations=2, beta=0.1, learning_rate=3e-2)
        histories.append(GRPOTrainer(_gpt(tok, seed=5), count_a, args=args, train_dataset=_prompts(16),
                                     processing_class=tok).train().log_history)
    for a, b in zip(*histories):
        for key in ("loss", "grad_norm", "kl", "clip_ratio/region_mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    assert any(h["clip_ratio/region_mean"] > 0 for h in histories[0])  # later passes really were off-policy


def test_grpo_resume_equals_the_uninterrupted_run(tmp_path):
    """A checkpoint at a generation boundary resumes to the same steps (the rollout depends only on the prompts)."""
    from tests.trainers.rl_distributed_cases import _count_a, _rollout

    tok = make_tokenizer(pad_is_eos=False)

    def run(out, steps, resume=None):
        args = _grpo_args(out, max_steps=steps, per_device_train_batch_size=4, num_generations=2, save_steps=2,
                          beta=0.1, num_iterations=2)
        trainer = GRPOTrainer(_gpt(tok, seed=6), _count_a, args=args, train_dataset=_prompts(8),
                              processing_class=tok, rollout_func=_rollout)
        return trainer.train(resume_from_checkpoint=resume).log_history

    full = run(tmp_path / "full", 6)  # writes checkpoint-2 and checkpoint-4 on its way
    resumed = run(tmp_path / "resumed", 6, resume=str(tmp_path / "full" / "checkpoint-2"))
    assert [h["step"] for h in resumed] == list(range(1, 7))
    for a, b in zip(resumed[2:], full[2:]):
        for key in ("loss", "grad_norm", "kl", "reward"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-8), (b["step"], key)


def test_reward_trainer_evaluates(tmp_path):
    tok = make_tokenizer(pad_is_eos=False)
    args = RewardConfig(output_dir=str(tmp_path), learning_rate=1e-2, per_device_train_batch_size=4,
                        per_device_eval_batch_size=3, max_steps=4, eval_steps=2, logging_steps=1,
                        optim="adamw_torch", report_to=[], disable_tqdm=True)
    trainer = RewardTrainer(GPTForSequenceClassification(_gpt(tok)), args=args,
                            train_dataset=make_records("preference", 8), eval_dataset=make_records("preference", 5),
                            processing_class=tok)
    evals = [h for h in trainer.train().log_history if "eval_loss" in h]
    assert len(evals) == 2 and {"eval_accuracy", "eval_margin", "eval_mean_reward"} <= set(evals[0])
    manual = trainer.evaluate()
    assert manual["eval_loss"] == pytest.approx(evals[-1]["eval_loss"], rel=1e-6)
