"""``PPOTrainer``, ``PPOConfig``: RLHF with PPO, in the shape of TRL 1.12's ``trl.experimental.ppo``.

Four models: the policy (trained), a value model (trained, scalar head), a
frozen reference (a copy of the initial policy unless given) and a frozen
reward model (scalar head); see ``shardkit.trainers.scores``. One update:

1. Rollout: ``per_device_train_batch_size * gradient_accumulation_steps``
   prompts, left-padded, continued by up to ``response_length`` sampled tokens
   (batched, KV cache: ``shardkit.models.fast_decode.DecodeSnapshot`` for our
   GPT, HF ``generate`` otherwise), cut after the first stop token.
2. Experience (no grad, in chunks of ``local_rollout_forward_batch_size``):
   log-probs of the policy and the reference (logits / temperature), values,
   and the reward model's score at the last real token. Per-token reward
   = -kl_coef * KL (k1 or k3) plus the score on the last token; GAE(gamma,
   lam); advantages whitened over the batch's response tokens.
3. ``num_ppo_epochs`` passes over the batch, shuffled, in ``num_mini_batches``
   mini-batches; one optimizer step per mini-batch, whose gradient is the mean
   over its micro-batches (``per_device_train_batch_size`` rows each) of the
   clipped policy loss + vf_coef * clipped value loss.

Differences from TRL 1.12, each a fix of a reported defect: the score lands on
the last response token, not on the first pad after it (trl#3750), and the
value loss covers the same tokens as the policy loss; masks come from
lengths, never from the pad id (trl#1623); statistics (approxkl, entropy,
ratio) are means over response tokens, not over padding too; ``max_grad_norm``
clips (TRL's PPO ignores it: set it to None for TRL's behaviour); a mini-batch
is one optimizer step whatever ``num_mini_batches`` is (TRL steps every
``gradient_accumulation_steps`` micro-batches, which straddles mini-batches
when ``num_mini_batches > 1``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from shardkit.data.tokenize import encode_chat, encode_text
from shardkit.trainers import checkpoint, data_parallel, ema
from shardkit.trainers.base import TrainerState, check_processing_class
from shardkit.trainers.config import TrainingConfig
from shardkit.trainers.metrics_log import MetricsLog
from shardkit.trainers.ppo_core import (
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    truncate_after_stop,
    value_loss,
)
from shardkit.trainers.scores import check_scalar_model, position_scores
from shardkit.trainers.setup import (
    disable_dropout,
    freeze_reference,
    prepare_model_and_optimizer,
)


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class PPOConfig(TrainingConfig):
    """PPO hyperparameters with TRL 1.12's names and defaults (``trl.experimental.ppo.PPOConfig``)."""

    num_mini_batches: int = _f(1, "mini-batches (optimizer steps) per PPO epoch over one rollout batch")
    total_episodes: int | None = _f(
        None,
        "prompts to train on in all; None = num_train_epochs * dataset size "
        "(max_steps > 0 takes precedence, in rollout batches)",
    )
    local_rollout_forward_batch_size: int = _f(64, "rows per no-grad forward and per generate call in the rollout")
    response_length: int = _f(53, "tokens sampled per prompt (fewer when every row stopped)")
    stop_token: str | None = _f(None, "'eos': stop at the tokenizer's EOS; None: no stop token unless stop_token_id")
    stop_token_id: int | None = _f(None, "token id that ends a response (exclusive with stop_token)")
    temperature: float = _f(0.7, "sampling temperature; log-probs use logits / temperature")
    missing_eos_penalty: float | None = _f(None, "subtracted from the score of responses without EOS (>= 0)")
    num_ppo_epochs: int = _f(4, "passes over each rollout batch")
    whiten_rewards: bool = _f(False, "whiten the per-token rewards (mean kept) before GAE")
    kl_coef: float = _f(0.05, "weight of the KL penalty in the per-token reward")
    kl_estimator: str = _f("k1", "k1 (log p/q, unbiased, may be negative) | k3 (lower variance, >= 0)")
    cliprange: float = _f(0.2, "policy ratio clip epsilon")
    vf_coef: float = _f(0.1, "weight of the value loss")
    cliprange_value: float = _f(0.2, "value clip epsilon around the rollout's values")
    gamma: float = _f(1.0, "discount factor")
    lam: float = _f(0.95, "GAE lambda")

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        for key in ("num_mini_batches", "local_rollout_forward_batch_size", "response_length", "num_ppo_epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{key} must be an int >= 1, got {value!r}")
        if self.total_episodes is not None and self.total_episodes < 1:
            raise ValueError(f"{name}.total_episodes must be >= 1 or None, got {self.total_episodes}")
        if self.stop_token is not None and self.stop_token_id is not None:
            raise ValueError(f"{name}: set stop_token or stop_token_id, not both")
        if self.stop_token not in (None, "eos"):
            raise ValueError(f"{name}.stop_token must be 'eos' or None, got {self.stop_token!r}")
        if not self.temperature > 0:
            raise ValueError(f"{name}.temperature must be > 0, got {self.temperature}")
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ValueError(f"{name}.missing_eos_penalty must be >= 0 or None, got {self.missing_eos_penalty}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"{name}.kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        for key in ("cliprange", "cliprange_value", "vf_coef", "kl_coef"):
            if getattr(self, key) < 0:
                raise ValueError(f"{name}.{key} must be >= 0, got {getattr(self, key)}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"{name}.gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        local = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if local % self.num_mini_batches:
            raise ValueError(
                f"{name}: per_device_train_batch_size * gradient_accumulation_steps ({local}) must be "
                f"divisible by num_mini_batches ({self.num_mini_batches})"
            )
        if (local // self.num_mini_batches) % self.per_device_train_batch_size:
            raise ValueError(
                f"{name}: gradient_accumulation_steps ({self.gradient_accumulation_steps}) must be "
                f"divisible by num_mini_batches ({self.num_mini_batches}) so that each mini-batch is "
                f"whole micro-batches of per_device_train_batch_size"
            )
        if local < 2:
            raise ValueError(
                f"{name}: per_device_train_batch_size * gradient_accumulation_steps must be >= 2 "
                f"(advantage whitening needs two tokens), got {local}"
            )
        if self.max_length is not None and self.max_length <= self.response_length:
            raise ValueError(
                f"{name}.max_length ({self.max_length}) bounds prompt + response and must exceed "
                f"response_length ({self.response_length})"
            )


class PolicyAndValue(nn.Module):
    """The two trained models in one module: one optimizer, one checkpoint (``policy.*``, ``value_model.*``)."""

    def __init__(self, policy: nn.Module, value_model: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model


class PPOTrainer:
    """PPO with a value model, a frozen reference and a reward model (TRL 1.12's argument order).

    ``PPOTrainer(args, processing_class, model, ref_model, reward_model, train_dataset, value_model)``.
    ``train_dataset``: records with ``prompt`` (a string or a conversation,
    rendered with ``add_generation_prompt``) or pre-tokenized ``input_ids``;
    prompts longer than ``max_length - response_length`` are dropped.
    ``train()`` logs TRL's ``objective/*``, ``policy/*``, ``loss/*``, ``val/*``,
    ``eps``, ``lr``, ``episode`` once per rollout batch (one "step").
    One process only (several ranks raise). With ``ema_decay`` the EMA covers the
    policy and the value model and is updated after every mini-batch step.
    """

    def __init__(
        self,
        args: PPOConfig,
        processing_class,
        model: nn.Module,
        ref_model: nn.Module | None,
        reward_model: nn.Module,
        train_dataset,
        value_model: nn.Module,
        eval_dataset=None,
    ) -> None:
        if not isinstance(args, PPOConfig):
            raise TypeError(f"args must be a PPOConfig, got {type(args).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (the policy), got {type(model).__name__}")
        if ref_model is model:
            raise ValueError("ref_model must not be the policy itself: pass a copy, or None to copy the policy")
        if reward_model is None or value_model is None:
            raise ValueError("reward_model and value_model are required (scalar-head models)")
        check_scalar_model(reward_model, "reward_model")
        check_scalar_model(value_model, "value_model")
        if eval_dataset is not None:
            raise ValueError("eval_dataset: PPOTrainer has no evaluation loop; pass None")
        if data_parallel.data_parallel_world() > 1:
            raise NotImplementedError("PPOTrainer runs in one process; WORLD_SIZE > 1 is not supported yet")
        check_processing_class(processing_class)
        self.args, self.processing_class = args, processing_class
        pad = getattr(processing_class, "pad_token_id", None)
        self.pad_token_id = processing_class.eos_token_id if pad is None else pad
        self.stop_token_id = processing_class.eos_token_id if args.stop_token == "eos" else args.stop_token_id
        torch.manual_seed(args.seed)
        for m in (model, ref_model, reward_model, value_model):
            if m is not None:
                disable_dropout(m)
        device = next(model.parameters()).device
        ref = copy.deepcopy(model) if ref_model is None else ref_model
        self.ref_model = freeze_reference(ref.to(device), args)
        self.reward_model = freeze_reference(reward_model.to(device), args)
        self.model = PolicyAndValue(model, value_model.to(device))
        self.train_examples = self._prepare(train_dataset)
        if len(self.train_examples) < self.local_batch_size:
            raise ValueError(
                f"train_dataset has {len(self.train_examples)} usable prompts, fewer than one rollout "
                f"batch (per_device_train_batch_size * gradient_accumulation_steps = "
                f"{self.local_batch_size})"
            )
        self.state = TrainerState()
        self.optimizer = self.lr_scheduler = None

    # -- sizes ----------------------------------------------------------------
    @property
    def local_batch_size(self) -> int:
        """Rollouts per update (TRL's ``local_batch_size``)."""
        return self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps

    @property
    def policy(self) -> nn.Module:
        return self.model.policy

    @property
    def value_model(self) -> nn.Module:
        return self.model.value_model

    def total_steps(self) -> int:
        """Updates (rollout batches) to run: ``max_steps``, else ceil(total_episodes / batch)."""
        if self.args.max_steps > 0:
            return self.args.max_steps
        episodes = self.args.total_episodes or int(self.args.num_train_epochs * len(self.train_examples))
        return max(1, math.ceil(episodes / self.local_batch_size))

    # -- data -----------------------------------------------------------------
    def _prepare(self, dataset) -> list[list[int]]:
        if dataset is None:
            raise ValueError("train_dataset is required: records with a 'prompt' (or tokenized 'input_ids')")
        limit = None if self.args.max_length is None else self.args.max_length - self.args.response_length
        prompts = []
        for i, record in enumerate(dataset):
            if not isinstance(record, dict) or not ("prompt" in record or "input_ids" in record):
                raise ValueError(f"train_dataset record {i}: missing field 'prompt' (or tokenized 'input_ids')")
            if "input_ids" in record:
                ids = list(record["input_ids"])
            elif isinstance(record["prompt"], str):
                ids = encode_text(self.processing_class, record["prompt"])
            elif isinstance(record["prompt"], list):
                ids, _ = encode_chat(self.processing_class, record["prompt"], add_generation_prompt=True)
            else:
                raise ValueError(
                    f"train_dataset record {i}: field 'prompt' must be a string or a list of "
                    f"messages, got {type(record['prompt']).__name__}"
                )
            if not ids:
                raise ValueError(f"train_dataset record {i}: the prompt tokenizes to no tokens")
            if limit is None or len(ids) <= limit:
                prompts.append(ids)
        return prompts

    def rollout_prompts(self, update: int) -> list[list[int]]:
        """The prompts of update ``update``: seeded shuffle per epoch, the last partial batch dropped (as TRL)."""
        n, bs = len(self.train_examples), self.local_batch_size
        per_epoch = n // bs
        epoch, j = divmod(update, per_epoch)
        order = list(range(n))
        if self.args.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.args.seed + epoch)).tolist()
        return [self.train_examples[i] for i in order[j * bs : (j + 1) * bs]]

    def collate_prompts(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and their mask (B, P), on the policy's device."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        device = next(self.policy.parameters()).device
        return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)

    def minibatch_order(self, update: int, epoch: int) -> torch.Tensor:
        """The row permutation of PPO epoch ``epoch`` of update ``update`` (a function of the seed: resumable)."""
        gen = torch.Generator().manual_seed(self.args.seed * 1_000_003 + update * 1_009 + epoch)
        return torch.randperm(self.local_batch_size, generator=gen)

    # -- rollout --------------------------------------------------------------
    @torch.no_grad()
    def generate(self, queries: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        """Sampled responses (B, response_length), batched with a KV cache; pad after the end of generation."""
        args, policy = self.args, self.policy
        stops = () if self.stop_token_id is None else (self.stop_token_id,)
        from shardkit.models import GPT
        from shardkit.models.fast_decode import DecodeSnapshot

        # A shardkit GPT samples from a DecodeSnapshot: its weights read once per rollout batch into a decoding
        # layout (fused matmuls, no per-token module overhead); same contract and samples as ``generate``.
        snapshot = DecodeSnapshot(policy) if isinstance(policy, GPT) else None
        chunks = []
        for start in range(0, len(queries), args.local_rollout_forward_batch_size):
            q = queries[start : start + args.local_rollout_forward_batch_size]
            m = query_mask[start : start + args.local_rollout_forward_batch_size]
            if snapshot is not None:
                seq = snapshot.generate(
                    q,
                    attention_mask=m,
                    max_new_tokens=args.response_length,
                    temperature=args.temperature,
                    stop_tokens=stops,
                    pad_token_id=self.pad_token_id,
                )
            elif hasattr(policy, "config") and hasattr(policy.config, "num_kv_heads"):  # other shardkit GPT types
                from shardkit.models.generation import generate

                seq = generate(
                    policy,
                    q,
                    attention_mask=m,
                    max_new_tokens=args.response_length,
                    temperature=args.temperature,
                    stop_tokens=stops,
                    pad_token_id=self.pad_token_id,
                )
            else:
                seq = self._hf_generate(q, m)
            resp = seq[:, q.shape[1] :]
            if resp.shape[1] < args.response_length:
                fill = resp.new_full((len(resp), args.response_length - resp.shape[1]), self.pad_token_id)
                resp = torch.cat([resp, fill], dim=1)
            chunks.append(resp)
        return torch.cat(chunks)

    def _hf_generate(self, q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        from transformers import GenerationConfig

        policy, args = self.policy, self.args
        config = GenerationConfig(
            max_new_tokens=args.response_length,
            min_new_tokens=0,
            do_sample=True,
            temperature=args.temperature,
            top_k=0,
            top_p=1.0,
            eos_token_id=self.stop_token_id,
            pad_token_id=self.pad_token_id,
        )
        # As TRL: the model's own generation config must not add an EOS that the run does not stop at.
        saved = policy.generation_config.eos_token_id
        policy.generation_config.eos_token_id = self.stop_token_id
        try:
            return policy.generate(input_ids=q, attention_mask=m, generation_config=config)
        finally:
            policy.generation_config.eos_token_id = saved

    def _logprobs(self, model: nn.Module, ids, mask, pos, responses, context: int):
        """Log-probs (B, R) of the response tokens under ``model`` at the sampling temperature, and the log-softmax."""
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
        logsm = (logits[:, context - 1 : -1].float() / self.args.temperature).log_softmax(-1)  # (B, R, V)
        return logsm.gather(-1, responses[..., None])[..., 0], logsm

    @torch.no_grad()
    def make_experience(
        self, queries: torch.Tensor, query_mask: torch.Tensor, responses: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Everything an update needs from a rollout: log-probs, values, scores, rewards, advantages, returns.

        queries, query_mask: (B, P) left-padded; responses: (B, R) as
        sampled (cut after the first stop token here). Tensors are (B, R)
        unless noted; ``context_length`` is P.
        """
        args = self.args
        responses, response_mask = truncate_after_stop(responses, self.stop_token_id, self.pad_token_id)
        context = queries.shape[1]
        ids = torch.cat([queries, responses], dim=1)  # (B, P+R)
        mask = torch.cat([query_mask, response_mask], dim=1)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("logprobs", "ref_logprobs", "values", "scores")}
        last = response_mask.sum(1) - 1 + context  # (B,) index of the last real token
        step = args.local_rollout_forward_batch_size
        for s in range(0, len(ids), step):
            sl = slice(s, s + step)
            lp, _ = self._logprobs(self.policy, ids[sl], mask[sl], pos[sl], responses[sl], context)
            ref_lp, _ = self._logprobs(self.ref_model, ids[sl], mask[sl], pos[sl], responses[sl], context)
            values = position_scores(self.value_model, ids[sl], mask[sl], pos[sl], "value_model")
            rewards = position_scores(self.reward_model, ids[sl], mask[sl], pos[sl], "reward_model")
            parts["logprobs"].append(lp)
            parts["ref_logprobs"].append(ref_lp)
            parts["values"].append(values[:, context - 1 : -1])
            parts["scores"].append(rewards[torch.arange(len(rewards), device=rewards.device), last[sl]])
        exp = {k: torch.cat(v) for k, v in parts.items()}
        rmask = response_mask.float()
        scores = exp["scores"]
        has_eos = ((responses == self.processing_class.eos_token_id) & (response_mask > 0)).any(1)
        if args.missing_eos_penalty is not None:
            scores = scores - args.missing_eos_penalty * (~has_eos).float()
        logprobs, ref_logprobs = exp["logprobs"] * rmask, exp["ref_logprobs"] * rmask
        kl = kl_estimate(logprobs, ref_logprobs, args.kl_estimator) * rmask
        rewards, non_score = token_rewards(kl, scores, rmask, args.kl_coef)
        if args.whiten_rewards:
            rewards = masked_whiten(rewards, rmask, shift_mean=False) * rmask
        values = exp["values"] * rmask
        advantages, returns = gae(rewards, values, args.gamma, args.lam)
        advantages = masked_whiten(advantages, rmask) * rmask
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": pos,
            "responses": responses,
            "response_mask": rmask,
            "logprobs": logprobs,
            "ref_logprobs": ref_logprobs,
            "values": values,
            "scores": scores,
            "kl": kl,
            "non_score_rewards": non_score,
            "rewards": rewards,
            "advantages": advantages,
            "returns": returns,
            "has_eos": has_eos,
            "context_length": torch.tensor(context),
        }

    # -- update ---------------------------------------------------------------
    def micro_batch_loss(self, exp: dict[str, torch.Tensor], rows: torch.Tensor):
        """The loss of rows ``rows`` of ``exp``: policy loss + vf_coef * value loss; and its statistics."""
        args, context = self.args, int(exp["context_length"])
        ids, mask, pos = exp["input_ids"][rows], exp["attention_mask"][rows], exp["position_ids"][rows]
        rmask = exp["response_mask"][rows]
        new_logprobs, logsm = self._logprobs(self.policy, ids, mask, pos, exp["responses"][rows], context)
        vpred = position_scores(self.value_model, ids, mask, pos, "value_model")[:, context - 1 : -1]
        pg_loss, pg = policy_loss(
            new_logprobs * rmask, exp["logprobs"][rows], exp["advantages"][rows], rmask, args.cliprange
        )
        vf_loss, vf_clipfrac = value_loss(
            vpred * rmask, exp["values"][rows], exp["returns"][rows], rmask, args.cliprange_value
        )
        with torch.no_grad():
            entropy = masked_mean(-(logsm.exp() * logsm).sum(-1), rmask)
        stats = {
            "pg_loss": pg_loss.detach(),
            "vf_loss": vf_loss.detach(),
            "vf_clipfrac": vf_clipfrac,
            "pg_clipfrac": pg["clipfrac"],
            "approxkl": pg["approxkl"],
            "ratio": pg["ratio"],
            "entropy": entropy,
        }
        return pg_loss + args.vf_coef * vf_loss, stats

    def ppo_update(self, exp: dict[str, torch.Tensor], update: int) -> dict[str, torch.Tensor]:
        """``num_ppo_epochs`` epochs of mini-batch steps on one experience batch; stats (epochs, mini, micro)."""
        args = self.args
        mini = self.local_batch_size // args.num_mini_batches
        micro = args.per_device_train_batch_size
        n_micro = mini // micro
        params = [p for p in self.model.parameters() if p.requires_grad]
        device = exp["advantages"].device
        stats: dict[str, torch.Tensor] = {}
        for epoch in range(args.num_ppo_epochs):
            order = self.minibatch_order(update, epoch).to(device)
            for m in range(args.num_mini_batches):
                rows = order[m * mini : (m + 1) * mini]
                for k in range(n_micro):
                    loss, s = self.micro_batch_loss(exp, rows[k * micro : (k + 1) * micro])
                    (loss / n_micro).backward()
                    for key, value in s.items():
                        if key not in stats:
                            stats[key] = torch.zeros(args.num_ppo_epochs, args.num_mini_batches, n_micro, device=device)
                        stats[key][epoch, m, k] = value
                data_parallel.clip_and_norm(self.model, params, args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if getattr(self, "ema", None) is not None:
                    self.ema.update()
        return stats

    # -- loop -----------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | None = None) -> TrainerState:
        """Run ``total_steps()`` updates; returns the state with its ``log_history``."""
        args = self.args
        total = self.total_steps()
        self.model, self.optimizer, self.lr_scheduler = prepare_model_and_optimizer(self.model, args, total)
        self.ema = ema.EMA.for_trainer(self)  # of the policy and the value model
        if resume_from_checkpoint is not None:
            checkpoint.load(self, resume_from_checkpoint)
        log = MetricsLog(args, total, initial=self.state.global_step, history=self.state.log_history)
        try:
            while self.state.global_step < total:
                started = time.perf_counter()
                update = self.state.global_step
                queries, query_mask = self.collate_prompts(self.rollout_prompts(update))
                responses = self.generate(queries, query_mask)
                exp = self.make_experience(queries, query_mask, responses)
                stats = self.ppo_update(exp, update)
                lr = self.lr_scheduler.get_last_lr()[0]
                self.lr_scheduler.step()
                self.state.global_step += 1
                self.state.num_tokens += int(exp["attention_mask"].sum())
                self.state.train_seconds += time.perf_counter() - started
                done = self.state.global_step
                if done % args.logging_steps == 0 or done == total:
                    entry = {
                        **self.rollout_metrics(exp, stats),
                        "lr": lr,
                        "episode": done * self.local_batch_size,
                        "eps": int(done * self.local_batch_size / max(self.state.train_seconds, 1e-9)),
                        "epoch": done * self.local_batch_size / len(self.train_examples),
                        "step": done,
                    }
                    self.state.log_history.append(entry)
                    log.write(entry)
                if args.save_steps and done % args.save_steps == 0 and done != total:
                    checkpoint.save(self)
                log.advance()
            checkpoint.save(self)
            if self.ema is not None:
                self.ema.save_model(os.path.join(args.output_dir, "model_ema.safetensors"))
        finally:
            log.close()
        return self.state

    @torch.no_grad()
    def rollout_metrics(self, exp: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> dict[str, float]:
        """TRL's PPO log entry of one update (``objective/kl`` is a per-sequence sum, so k1 can be negative)."""
        non_score = exp["non_score_rewards"].sum(1).mean()
        out = {
            "objective/kl": exp["kl"].sum(1).mean(),
            "objective/entropy": (-exp["logprobs"]).sum(1).mean(),
            "objective/non_score_reward": non_score,
            "objective/rlhf_reward": non_score + exp["scores"].mean(),
            "objective/scores": exp["scores"].mean(),
            "policy/approxkl_avg": stats["approxkl"].mean(),
            "policy/clipfrac_avg": stats["pg_clipfrac"].mean(),
            "loss/policy_avg": stats["pg_loss"].mean(),
            "loss/value_avg": stats["vf_loss"].mean(),
            "val/clipfrac_avg": stats["vf_clipfrac"].mean(),
            "policy/entropy_avg": stats["entropy"].mean(),
            "val/ratio": stats["ratio"].mean(),
            "val/ratio_var": stats["ratio"].var() if stats["ratio"].numel() > 1 else torch.zeros(()),
            "val/num_eos_tokens": (
                (exp["responses"] == self.processing_class.eos_token_id) & (exp["response_mask"] > 0)
            ).sum(),
        }
        return {k: (int(v) if k == "val/num_eos_tokens" else float(v)) for k, v in out.items()}

    # -- checkpoint hooks (shardkit.trainers.checkpoint) -------------------------
    def extra_checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass
