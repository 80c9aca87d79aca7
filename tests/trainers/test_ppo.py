"""PPOTrainer against an independent plain-torch PPO on fixed rollouts, plus learning, resume, HF models, errors.

The reference below runs every row on its own, unpadded (so no masks or
position ids), walks GAE backwards with Python floats, whitens by hand and
steps a ``torch.optim.AdamW`` over copies of the initial models: the trainer's
padded, batched computation must give the same experience, losses and
updated parameters.
"""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from shardkit.trainers import (
    PPOConfig,
    PPOTrainer,
    prepare_model_and_optimizer,
    scalar_head_gpt,
)
from shardkit.trainers.scores import position_scores

from tests.trainers.conftest import make_gpt, make_llama, make_records, make_tokenizer


def _gpt(tok, seed):
    return make_gpt(len(tok), seed)


def _args(tmp_path, **kw):
    base = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "num_mini_batches": 2,
        "num_ppo_epochs": 2,
        "response_length": 6,
        "stop_token": "eos",
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "optim": "adamw_torch",
        "max_grad_norm": None,
        "report_to": [],
        "disable_tqdm": True,
        "logging_steps": 1,
        "seed": 0,
        "max_length": 64,
    }
    base.update(kw)
    return PPOConfig(**base)


def _prompts(n=8):
    return [{"prompt": r["prompt"]} for r in make_records("prompt_completion", n, seed=3)]


# -- the reference -------------------------------------------------------------------------------------------
def _row_logprobs(model, ids, p, n, temperature):
    """Log-probs of tokens p..p+n-1 of one unpadded row, and the entropies of those positions."""
    logits = model(ids[None]).logits[0, p - 1 : p + n - 1].float() / temperature
    logsm = logits.log_softmax(-1)
    return logsm.gather(-1, ids[p : p + n, None])[:, 0], -(logsm.exp() * logsm).sum(-1)


def _row_values(model, ids, p, n):
    return model(ids[None]).logits[0, p - 1 : p + n - 1, 0].float()


def _reference_rollout(policy, ref, value, reward, prompts, responses, eos, a):
    """Per row: tokens, logprobs, values, rewards, advantages (whitened), returns."""
    rows = []
    for prompt, resp in zip(prompts, responses):
        resp = resp.tolist()
        n = resp.index(eos) + 1 if eos in resp else len(resp)
        ids = torch.tensor(prompt + resp[:n])
        p = len(prompt)
        with torch.no_grad():
            lp, _ = _row_logprobs(policy, ids, p, n, a.temperature)
            ref_lp, _ = _row_logprobs(ref, ids, p, n, a.temperature)
            v = _row_values(value, ids, p, n)
            score = float(reward(ids[None]).logits[0, -1, 0])
        if a.missing_eos_penalty is not None and eos not in resp[:n]:
            score -= a.missing_eos_penalty
        logr = (ref_lp - lp).tolist()
        kl = [-x if a.kl_estimator == "k1" else math.exp(x) - 1 - x for x in logr]
        r = [-a.kl_coef * k for k in kl]
        r[-1] += score
        adv, last = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_v = float(v[t + 1]) if t + 1 < n else 0.0
            last = r[t] + a.gamma * next_v - float(v[t]) + a.gamma * a.lam * last
            adv[t] = last
        rows.append(
            {
                "ids": ids,
                "p": p,
                "n": n,
                "logprobs": lp,
                "values": v,
                "rewards": torch.tensor(r),
                "adv": torch.tensor(adv),
                "ret": torch.tensor(adv) + v,
                "kl": torch.tensor(kl),
                "score": score,
            }
        )
    flat = torch.cat([row["adv"] for row in rows]).double()
    mean, var = flat.mean(), flat.var(unbiased=True)
    for row in rows:
        row["adv_w"] = ((row["adv"].double() - mean) / torch.sqrt(var + 1e-8)).float()
    return rows


def _reference_micro_loss(policy, value, rows, a):
    pg_terms, pg_count, vf_terms = [], 0, []
    for row in rows:
        new_lp, _ = _row_logprobs(policy, row["ids"], row["p"], row["n"], a.temperature)
        ratio = torch.exp(new_lp - row["logprobs"])
        adv = row["adv_w"]
        pg_terms.append(torch.max(-adv * ratio, -adv * ratio.clamp(1 - a.cliprange, 1 + a.cliprange)))
        vpred = _row_values(value, row["ids"], row["p"], row["n"])
        vclip = torch.max(torch.min(vpred, row["values"] + a.cliprange_value), row["values"] - a.cliprange_value)
        vf_terms.append(torch.max((vpred - row["ret"]) ** 2, (vclip - row["ret"]) ** 2))
        pg_count += row["n"]
    pg = torch.cat(pg_terms).sum() / pg_count
    vf = 0.5 * torch.cat(vf_terms).sum() / pg_count
    return pg, vf


@pytest.mark.parametrize("kl_estimator,whiten_rewards", [("k1", False), ("k3", True)])
def test_ppo_matches_plain_torch_reference(tmp_path, kl_estimator, whiten_rewards):
    tok = make_tokenizer()  # pad == eos: masks must come from lengths
    eos = tok.eos_token_id
    policy, value, reward = _gpt(tok, 0), scalar_head_gpt(_gpt(tok, 1)), scalar_head_gpt(_gpt(tok, 2))
    a = _args(
        tmp_path,
        kl_estimator=kl_estimator,
        whiten_rewards=whiten_rewards,
        gamma=0.99,
        lam=0.9,
        missing_eos_penalty=0.5,
        kl_coef=0.2,
        cliprange=0.1,
        cliprange_value=0.05,
    )
    ref_policy, ref_value, ref_ref, ref_reward = (copy.deepcopy(m) for m in (policy, value, policy, reward))
    trainer = PPOTrainer(a, tok, policy, None, reward, _prompts(), value)
    trainer.model, trainer.optimizer, trainer.lr_scheduler = prepare_model_and_optimizer(trainer.model, a, 1)

    prompts = trainer.rollout_prompts(0)
    queries, query_mask = trainer.collate_prompts(prompts)
    assert (query_mask == 0).any(), "the prompts should have different lengths (left padding under test)"
    gen = torch.Generator().manual_seed(5)
    responses = torch.randint(7, len(tok), (8, a.response_length), generator=gen)
    responses[0, 2] = eos  # stops early; the later tokens must be ignored
    responses[3, 0] = eos  # a one-token response
    responses[5, 5] = eos  # stops at the last position
    exp = trainer.make_experience(queries, query_mask, responses)

    if whiten_rewards:  # the reference whitens the per-token rewards first (mean kept), then runs GAE again
        rows = _reference_rollout(ref_policy, ref_ref, ref_value, ref_reward, prompts, responses, eos, a)
        flat = torch.cat([row["rewards"] for row in rows]).double()
        mean, var = flat.mean(), flat.var(unbiased=True)
        for row in rows:
            row["rewards"] = ((row["rewards"].double() - mean) / torch.sqrt(var + 1e-8) + mean).float()
            adv, last, v, n = [0.0] * row["n"], 0.0, row["values"], row["n"]
            for t in reversed(range(n)):
                next_v = float(v[t + 1]) if t + 1 < n else 0.0
                last = float(row["rewards"][t]) + a.gamma * next_v - float(v[t]) + a.gamma * a.lam * last
                adv[t] = last
            row["adv"] = torch.tensor(adv)
            row["ret"] = row["adv"] + v
        flat = torch.cat([row["adv"] for row in rows]).double()
        mean, var = flat.mean(), flat.var(unbiased=True)
        for row in rows:
            row["adv_w"] = ((row["adv"].double() - mean) / torch.sqrt(var + 1e-8)).float()
    else:
        rows = _reference_rollout(ref_policy, ref_ref, ref_value, ref_reward, prompts, responses, eos, a)

    for i, row in enumerate(rows):
        n = row["n"]
        assert int(exp["response_mask"][i].sum()) == n
        assert exp["response_mask"][i, n:].sum() == 0
        torch.testing.assert_close(exp["logprobs"][i, :n], row["logprobs"], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(exp["values"][i, :n], row["values"], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(exp["kl"][i, :n], row["kl"], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(exp["rewards"][i, :n], row["rewards"], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(exp["advantages"][i, :n], row["adv_w"], atol=5e-5, rtol=1e-5)
        torch.testing.assert_close(exp["returns"][i, :n], row["ret"], atol=2e-5, rtol=1e-5)
        assert abs(float(exp["scores"][i]) - row["score"]) < 2e-5
        assert exp["advantages"][i, n:].abs().sum() == 0

    stats = trainer.ppo_update(exp, 0)

    params = list(ref_policy.parameters()) + list(ref_value.parameters())
    opt = torch.optim.AdamW(
        params, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_epsilon, weight_decay=a.weight_decay
    )
    mini, micro = 4, 2
    for epoch in range(a.num_ppo_epochs):
        order = trainer.minibatch_order(0, epoch).tolist()
        for m in range(a.num_mini_batches):
            mb = order[m * mini : (m + 1) * mini]
            for k in range(mini // micro):
                pg, vf = _reference_micro_loss(
                    ref_policy, ref_value, [rows[j] for j in mb[k * micro : (k + 1) * micro]], a
                )
                ((pg + a.vf_coef * vf) / (mini // micro)).backward()
                assert abs(float(stats["pg_loss"][epoch, m, k]) - float(pg.detach())) < 2e-5
                assert abs(float(stats["vf_loss"][epoch, m, k]) - float(vf.detach())) < 2e-5
            opt.step()
            opt.zero_grad()
    for ours, theirs in ((trainer.policy, ref_policy), (trainer.value_model, ref_value)):
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(p, q, atol=2e-5, rtol=1e-4, msg=name)
    moved = max(
        float((p.detach() - q.detach()).abs().max()) for p, q in zip(trainer.policy.parameters(), ref_ref.parameters())
    )
    assert moved > 1e-3, "the policy did not change: the test would pass for a no-op update"


class _CountReward(torch.nn.Module):
    """A reward "model" with a scalar head: at each position, how many ``token`` ids came so far."""

    def __init__(self, token):
        super().__init__()
        self.token = token

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        hits = (input_ids == self.token).float()
        if attention_mask is not None:
            hits = hits * attention_mask
        return SimpleNamespace(logits=hits.cumsum(1)[..., None])


def test_ppo_learns_to_raise_the_reward(tmp_path):
    tok = make_tokenizer()
    target = tok.convert_tokens_to_ids("a")
    a = _args(
        tmp_path,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        num_mini_batches=2,
        num_ppo_epochs=2,
        stop_token=None,
        response_length=6,
        temperature=1.0,
        learning_rate=1e-2,
        max_steps=12,
        kl_coef=0.01,
    )
    trainer = PPOTrainer(a, tok, _gpt(tok, 0), None, _CountReward(target), _prompts(32), scalar_head_gpt(_gpt(tok, 1)))
    history = trainer.train().log_history
    first = sum(e["objective/scores"] for e in history[:2]) / 2
    last = sum(e["objective/scores"] for e in history[-2:]) / 2
    assert last > first + 1.0, (first, last)  # "a"s in prompt + 6 sampled tokens; seeds 0-2 go from ~0.5 to ~6
    for key in (
        "objective/kl",
        "objective/entropy",
        "objective/non_score_reward",
        "objective/rlhf_reward",
        "policy/approxkl_avg",
        "policy/clipfrac_avg",
        "loss/policy_avg",
        "loss/value_avg",
        "val/clipfrac_avg",
        "policy/entropy_avg",
        "val/ratio",
        "val/ratio_var",
        "val/num_eos_tokens",
        "lr",
        "episode",
        "eps",
    ):
        assert all(math.isfinite(e[key]) for e in history), key
    assert history[-1]["episode"] == 12 * 16


def test_ppo_resume_continues_exactly(tmp_path):
    tok = make_tokenizer()

    def run(out, steps, resume=None):
        a = _args(out, max_steps=steps, save_steps=1, num_ppo_epochs=1)
        t = PPOTrainer(
            a, tok, _gpt(tok, 0), None, scalar_head_gpt(_gpt(tok, 2)), _prompts(16), scalar_head_gpt(_gpt(tok, 1))
        )
        return t.train(resume_from_checkpoint=resume).log_history

    full = run(tmp_path / "full", 2)
    resumed = run(tmp_path / "full", 2, resume=str(tmp_path / "full" / "checkpoint-1"))
    drop = ("eps",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in resumed] == [
        {k: v for k, v in e.items() if k not in drop} for e in full
    ]


def test_ppo_with_hf_models(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = make_tokenizer(pad_is_eos=False)
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    reward, value = LlamaForSequenceClassification(cfg), LlamaForSequenceClassification(cfg)
    # The score at the last real token is what HF's own pooled head gives (right padding, pad != eos).
    ids = torch.tensor([[8, 9, 10, 11], [12, 13, tok.pad_token_id, tok.pad_token_id]])
    mask = (ids != tok.pad_token_id).long()
    with torch.no_grad():
        ours = position_scores(reward, ids, mask, (mask.cumsum(1) - 1).clamp(min=0))
        hf = reward(input_ids=ids, attention_mask=mask).logits[:, 0]
    torch.testing.assert_close(ours[torch.arange(2), mask.sum(1) - 1], hf)

    a = _args(tmp_path, max_steps=1, num_ppo_epochs=1, response_length=4)
    trainer = PPOTrainer(a, tok, make_llama(len(tok)), None, reward, _prompts(), value)
    entry = trainer.train().log_history[-1]
    assert math.isfinite(entry["loss/policy_avg"]) and math.isfinite(entry["loss/value_avg"])


def test_ppo_bad_input_names_the_field(tmp_path):
    tok = make_tokenizer()
    policy, value, reward = _gpt(tok, 0), scalar_head_gpt(_gpt(tok, 1)), scalar_head_gpt(_gpt(tok, 2))
    with pytest.raises(ValueError, match="reward_model.*scalar"):
        PPOTrainer(_args(tmp_path), tok, policy, None, _gpt(tok, 3), _prompts(), value)
    with pytest.raises(ValueError, match="value_model.*scalar"):
        PPOTrainer(_args(tmp_path), tok, policy, None, reward, _prompts(), _gpt(tok, 3))
    with pytest.raises(ValueError, match="num_mini_batches"):
        _args(tmp_path, gradient_accumulation_steps=3, num_mini_batches=2)
    with pytest.raises(ValueError, match="num_mini_batches"):
        _args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=1, num_mini_batches=2)
    with pytest.raises(ValueError, match="kl_estimator"):
        _args(tmp_path, kl_estimator="k2")
    with pytest.raises(ValueError, match="stop_token"):
        _args(tmp_path, stop_token="eos", stop_token_id=3)
    with pytest.raises(ValueError, match="response_length"):
        _args(tmp_path, max_length=6)
    with pytest.raises(ValueError, match="'prompt'"):
        PPOTrainer(_args(tmp_path), tok, policy, None, reward, [{"text": "x"}] * 8, value)
    with pytest.raises(ValueError, match="ref_model"):
        PPOTrainer(_args(tmp_path), tok, policy, policy, reward, _prompts(), value)
    with pytest.raises(ValueError, match="rollout batch"):
        PPOTrainer(_args(tmp_path), tok, policy, None, reward, _prompts(4), value)


def test_ppo_rollout_of_a_gpt_policy_samples_as_generate(tmp_path):
    """The GPT rollout goes through a DecodeSnapshot: same samples as ``generate`` from the same RNG state."""
    from shardkit.models.generation import generate

    tok = make_tokenizer()
    a = _args(tmp_path, response_length=12, temperature=0.9)
    policy = _gpt(tok, 0)
    trainer = PPOTrainer(a, tok, policy, None, scalar_head_gpt(_gpt(tok, 2)), _prompts(), scalar_head_gpt(_gpt(tok, 1)))
    queries, mask = trainer.collate_prompts(trainer.rollout_prompts(0))
    torch.manual_seed(5)
    got = trainer.generate(queries, mask)
    torch.manual_seed(5)
    want = generate(policy, queries, attention_mask=mask, max_new_tokens=12, temperature=0.9,
                    stop_tokens=(tok.eos_token_id,), pad_token_id=trainer.pad_token_id)[:, queries.shape[1]:]
    want = torch.cat([want, want.new_full((len(want), 12 - want.shape[1]), trainer.pad_token_id)], dim=1)
    assert torch.equal(got, want)
