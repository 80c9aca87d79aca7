"""``GRPOTrainer``: group relative policy optimisation, call-compatible with TRL 1.16.

One *round*: take ``generation_batch_size // num_generations`` prompts,
sample ``num_generations`` completions of each (one batched, KV-cached
generation, or the ``rollout_func``), score them with every reward
function, turn the weighted reward sums into group-normalised advantages,
then train ``num_iterations`` times over the round's rows, split into
``steps_per_generation`` micro-batches. When the weights change between
generating and training on a row (``num_iterations`` > 1, or more micro-
batches per generation than per optimizer step), the log-probs at generation
time ("old") anchor the clipped ratio; otherwise the ratio is 1 in value
and the old log-probs are the current ones, detached (as TRL).

On several ranks each rank generates and trains a contiguous share of every
round; rewards are gathered so that groups are normalised over all ranks'
completions, and the reference model is sharded like the policy.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import torch
from torch import nn

from shardkit.data import DataFormatError
from shardkit.trainers import data_parallel
from shardkit.trainers.base import BaseTrainer
from shardkit.trainers.grpo_config import GRPOConfig
from shardkit.trainers.grpo_loss import (
    aggregate_loss,
    completion_logps,
    group_advantages,
    grpo_token_loss,
    nanstd,
)
from shardkit.trainers.reward import check_scalar_head
from shardkit.trainers.rollout import (
    check_rollout,
    compute_rewards,
    is_conversational,
    left_pad,
    reward_func_name,
    right_pad,
    sample_completions,
    tokenize_prompts,
)
from shardkit.trainers.setup import (
    disable_dropout,
    freeze_reference,
    shard_for_data_parallel,
)

RolloutFunc = Callable[[list, "GRPOTrainer"], dict]


class GRPOTrainer(BaseTrainer):
    """GRPO, in TRL's shape.

    ``GRPOTrainer(model, reward_funcs, args=GRPOConfig(...), train_dataset=..., processing_class=tok,
    rollout_func=None)``. ``train_dataset`` needs a ``prompt`` column (text
    or conversation); its other columns reach the reward functions by name.
    ``model`` is a shardkit ``GPT`` or an HF causal LM. Logs ``loss``,
    ``grad_norm`` (before clipping), ``reward``, ``reward_std``,
    ``frac_reward_zero_std``, ``rewards/<func>/mean|std``, ``kl`` (beta > 0),
    ``entropy``, ``clip_ratio/*`` and ``completions/*`` as TRL does.
    """

    config_class = GRPOConfig
    reuse_old_logps = True  # False: a separate forward for every slice's old log-probs, as TRL (tests compare)
    token_level_loss = True  # compute_loss returns TRL's fully scaled loss (see count_items)

    def __init__(self, model, reward_funcs=None, args: GRPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, reward_processing_classes=None, *,
                 rollout_func: RolloutFunc | None = None) -> None:
        if eval_dataset is not None:
            raise ValueError("GRPOTrainer: eval_dataset is not supported; evaluate the trained model separately")
        funcs = [] if reward_funcs is None else list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) \
            else [reward_funcs]
        if not funcs:
            raise ValueError("reward_funcs: give at least one reward function or reward model")
        for i, f in enumerate(funcs):
            if isinstance(f, str):
                raise TypeError(f"reward_funcs[{i}]: model ids are not loaded at run time (no network); pass the "
                                "model itself, e.g. AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)")
            if isinstance(f, nn.Module):
                check_scalar_head(f, f"reward_funcs[{i}]")
            elif not callable(f):
                raise TypeError(f"reward_funcs[{i}] must be a callable or a sequence-classification model, "
                                f"got {type(f).__name__}")
        if rollout_func is not None and not callable(rollout_func):
            raise TypeError(f"rollout_func must be callable as rollout_func(prompts, trainer), got "
                            f"{type(rollout_func).__name__}")
        super().__init__(model, args=args, train_dataset=train_dataset, processing_class=processing_class)
        args = self.args
        if args.reward_weights is not None and len(args.reward_weights) != len(funcs):
            raise ValueError(f"GRPOConfig.reward_weights has {len(args.reward_weights)} weights for "
                             f"{len(funcs)} reward functions")
        if reward_processing_classes is None:
            reward_processing_classes = [processing_class] * len(funcs)
        elif not isinstance(reward_processing_classes, (list, tuple)):
            reward_processing_classes = [reward_processing_classes] * len(funcs)
        if len(reward_processing_classes) != len(funcs):
            raise ValueError("reward_processing_classes must have one entry per reward function")
        self.reward_funcs = funcs
        self.reward_func_names = [reward_func_name(f) for f in funcs]
        self.reward_processing_classes = [t if t is not None else processing_class for t in reward_processing_classes]
        self.reward_weights = torch.tensor(args.reward_weights or [1.0] * len(funcs), dtype=torch.float32)
        self.rollout_func = rollout_func
        self.num_generations = args.num_generations
        eos = [self.processing_class.eos_token_id]
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for e in ([gen_eos] if isinstance(gen_eos, int) else gen_eos or []):
            if e not in eos:
                eos.append(e)
        self.eos_token_ids = eos
        if args.disable_dropout:
            disable_dropout(model)
        self.ref_model = None
        if args.beta != 0.0:
            from shardkit import fsdp

            if fsdp.is_sharded(model) or data_parallel.is_sharded(model):
                raise ValueError("GRPOConfig.beta > 0 needs a reference copy of the policy, and an already sharded "
                                 "model cannot be copied; shard after constructing the trainer or set beta=0")
            self.ref_model = freeze_reference(copy.deepcopy(model), args)
        self.prompts_per_round = args.generation_batch_size // args.num_generations
        self.rounds_per_epoch = len(self.train_examples) // self.prompts_per_round
        if self.rounds_per_epoch == 0:
            raise ValueError(f"train_dataset has {len(self.train_examples)} prompts; one generation batch needs "
                             f"{self.prompts_per_round} (generation_batch_size {args.generation_batch_size} / "
                             f"num_generations {args.num_generations})")
        self._round, self._buffer, self._orders = -1, [], []

    # -- data -----------------------------------------------------------------
    def _records(self, dataset):
        if isinstance(dataset, (str, os.PathLike)):
            import json

            with open(dataset, encoding="utf-8") as f:
                dataset = [json.loads(line) for line in f if line.strip()]
        name = type(dataset).__name__
        columns = getattr(dataset, "column_names", None)
        if columns is not None and "prompt" not in columns:
            raise DataFormatError(f"train_dataset has no 'prompt' column (columns: {columns}); GRPO needs prompts")
        records = []
        for i, r in enumerate(dataset):
            if not isinstance(r, dict) or r.get("prompt") is None:
                raise DataFormatError(f"train_dataset ({name}) row {i} has no 'prompt' field; GRPO needs prompts")
            if not isinstance(r["prompt"], (str, list)):
                raise DataFormatError(f"train_dataset ({name}) row {i}: 'prompt' must be a string or a list of "
                                      f"messages, got {type(r['prompt']).__name__}")
            records.append(dict(r))
        if not records:
            raise DataFormatError(f"train_dataset ({name}) has no records")
        return records

    def prepare_examples(self, records, split):
        return records

    @property
    def generate_every(self) -> int:
        return self.args.steps_per_generation * self.args.num_iterations

    @property
    def batches_per_epoch(self) -> int:
        return self.rounds_per_epoch * self.generate_every

    def _prompt_order(self, epoch: int) -> list[int]:
        """Prompt indices of an epoch: one seeded generator drawn once per epoch (TRL's RepeatSampler)."""
        n = len(self.train_examples)
        if not self.args.shuffle_dataset:
            return list(range(n))
        while len(self._orders) <= epoch:
            if not self._orders:
                self._gen = torch.Generator().manual_seed(self.args.seed)
            self._orders.append(torch.randperm(n, generator=self._gen).tolist())
        return self._orders[epoch]

    def micro_batch(self, index: int) -> dict:
        rnd, k = divmod(index, self.generate_every)
        if rnd != self._round:
            self._buffer, self._round = self._generate_round(rnd), rnd
        batch = dict(self._buffer[k % self.args.steps_per_generation])
        if k >= self.args.steps_per_generation:
            batch["num_tokens"] = 0  # a later pass over the same rows sees no new tokens
        return batch

    def count_items(self, batches):
        return 1  # unused: the loss is normalised inside compute_loss, as TRL does

    def count_tokens(self, batch):
        return int(batch["num_tokens"])

    # -- generation -----------------------------------------------------------
    def _generate_round(self, rnd: int) -> list[dict]:
        args, g = self.args, self.num_generations
        epoch, j = divmod(rnd, self.rounds_per_epoch)
        rows = self._prompt_order(epoch)[j * self.prompts_per_round:(j + 1) * self.prompts_per_round]
        inputs = [dict(self.train_examples[i]) for i in rows for _ in range(g)]  # copies: extras are merged in
        # Several ranks: each takes its contiguous share of the round's completions (a group may span ranks;
        # rewards are normalised over the gathered batch).
        world, rank = self._world(), data_parallel.rank()
        n_local = len(inputs) // world
        inputs = inputs[rank * n_local:(rank + 1) * n_local]
        prompts = [x["prompt"] for x in inputs]
        device = next(self.model.parameters()).device
        if self.rollout_func is not None:
            output = self.rollout_func(copy.deepcopy(prompts), self)
            prompt_ids, completion_ids, _, extra = check_rollout(output, len(prompts))
            for i, x in enumerate(inputs):
                for key, values in extra.items():
                    x[key] = values[i] if isinstance(values, list) else values
        else:
            prompt_ids = tokenize_prompts(self.processing_class, prompts)
            completion_ids = sample_completions(
                self.model, prompt_ids, max_new_tokens=args.max_completion_length, temperature=args.temperature,
                top_p=args.top_p, top_k=args.top_k, eos_ids=self.eos_token_ids, pad_id=self.pad_token_id)
        texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        completions = [[{"role": "assistant", "content": t}] for t in texts] if is_conversational(prompts[0]) \
            else texts
        stops = set(self.eos_token_ids) | {self.pad_token_id}
        truncated = torch.tensor([len(c) == 0 or c[-1] not in stops for c in completion_ids])
        lengths = torch.tensor([len(c) for c in completion_ids], dtype=torch.float64)
        self._record_completion_metrics(self._gather_rows(lengths).float(), self._gather_rows(truncated.double()) > 0)

        p_ids, p_mask = left_pad(prompt_ids, self.pad_token_id, device)
        c_ids, c_mask = right_pad(completion_ids, self.pad_token_id, device)
        if args.mask_truncated_completions:
            c_mask = c_mask * (~truncated).to(device)[:, None].long()
        num_items = data_parallel.sum_over_ranks(float(c_mask.sum()), self.model)
        ref_logps = None
        if self.ref_model is not None:
            ref_logps = self._chunked_logps(self.ref_model, p_ids, p_mask, c_ids, c_mask)

        extras = {"trainer_state": self.state, "log_extra": lambda column, values: None,
                  "log_metric": lambda name, value: self.record(name, float(value), 1.0)}
        per_func = compute_rewards(self.reward_funcs, self.reward_func_names, self.reward_processing_classes, inputs,
                                   prompts, completions, completion_ids, extras)  # (N, F)
        advantages = self._advantages(self._gather_rows(per_func))[rank * n_local:(rank + 1) * n_local].to(device)
        batch = {"prompt_ids": p_ids, "prompt_mask": p_mask, "completion_ids": c_ids, "completion_mask": c_mask,
                 "advantages": advantages}
        if ref_logps is not None:
            batch["ref_logps"] = ref_logps
        # Mix the rows over the round's micro-batches (seeded per round, so a resumed run sees the same split).
        n = len(prompts)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 100003 + rnd)).to(device)
        batch = {k: v[perm] for k, v in batch.items()}
        spg = args.steps_per_generation
        size = n // spg
        tokens = int(p_mask.sum()) + sum(len(c) for c in completion_ids)
        ga, start = args.gradient_accumulation_steps, rnd * self.generate_every
        out = []
        for s in range(spg):
            part = {k: v[s * size:(s + 1) * size] for k, v in batch.items()}
            part["num_items_in_batch"] = num_items
            part["num_tokens"] = tokens if s == 0 else 0
            # Old log-probs (TRL computes them when GA is not a multiple of the generation period): a slice first
            # trained in the generating step sees the generating weights, so its first pass supplies them (see
            # compute_loss) for free; only slices first trained after an optimizer step need a forward now.
            if ga % self.generate_every != 0 and ((start + s) // ga != start // ga or not self.reuse_old_logps):
                part["old_logps"] = self._chunked_logps(self.model, part["prompt_ids"], part["prompt_mask"],
                                                        part["completion_ids"], part["completion_mask"])
            part["slot"] = (rnd, s)
            out.append(part)
        return out

    @torch.no_grad()
    def _chunked_logps(self, model, p_ids, p_mask, c_ids, c_mask) -> torch.Tensor:
        """Completion log-probs (N, C) under ``model``, in chunks of per_device_train_batch_size rows."""
        bs = self.args.per_device_train_batch_size
        parts = [completion_logps(model, p_ids[i:i + bs], p_mask[i:i + bs], c_ids[i:i + bs], c_mask[i:i + bs],
                                  self.args.temperature)[0] for i in range(0, len(p_ids), bs)]
        return torch.cat(parts)

    def _world(self) -> int:
        return data_parallel.data_parallel_world() if data_parallel.is_sharded(self.model) else 1

    def _gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """This rank's rows (n, ...) placed in the round's (world * n, ...) tensor of all ranks (float64)."""
        world = self._world()
        if world == 1:
            return local.double()
        n = local.shape[0]
        out = torch.zeros((world * n, *local.shape[1:]), dtype=torch.float64)
        r = data_parallel.rank()
        out[r * n:(r + 1) * n] = local.double()
        return data_parallel.all_reduce_sum_(out, self.model)  # zeros elsewhere: the sum is a gather

    def _advantages(self, per_func: torch.Tensor) -> torch.Tensor:
        """Advantages (N,) from the (N, F) rewards of all ranks; records reward metrics as TRL names them."""
        per_func = per_func.float()
        weights = self.reward_weights
        unscorable = torch.isnan(per_func).all(dim=1)
        rewards = (per_func * weights[None]).nansum(dim=1)
        rewards[unscorable] = float("nan")
        advantages, std = group_advantages(rewards, self.num_generations, self.args.scale_rewards)
        for j, name in enumerate(self.reward_func_names):
            self.record(f"rewards/{name}/mean", float(torch.nanmean(per_func[:, j])))
            self.record(f"rewards/{name}/std", float(nanstd(per_func[:, j])))
        self.record("reward", float(torch.nanmean(rewards)))
        self.record("reward_std", float(nanstd(rewards)))
        self.record("frac_reward_zero_std", float(torch.isclose(std, torch.zeros_like(std)).float().mean()))
        return advantages

    def _record_completion_metrics(self, lengths: torch.Tensor, truncated: torch.Tensor) -> None:
        """Length statistics of the round's completions (all ranks'): every rank records the same values."""
        self.record("completions/mean_length", float(lengths.mean()))
        self.record("completions/min_length", float(lengths.min()))
        self.record("completions/max_length", float(lengths.max()))
        self.record("completions/clipped_ratio", float(truncated.float().mean()))
        done = lengths[~truncated]
        if done.numel() == 0:
            done = torch.zeros(1)
        self.record("completions/mean_terminated_length", float(done.mean()))
        self.record("completions/min_terminated_length", float(done.min()))
        self.record("completions/max_terminated_length", float(done.max()))

    # -- loss -----------------------------------------------------------------
    def compute_loss(self, model, batch, num_items):
        args = self.args
        mask = batch["completion_mask"].float()
        logps, entropy = completion_logps(model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                                          batch["completion_mask"], args.temperature, with_entropy=True)
        old = batch.get("old_logps")
        if old is None:  # the weights are those that generated these rows (see _generate_round)
            old = logps.detach()
            rnd, slot = batch["slot"]
            if rnd == self._round and args.gradient_accumulation_steps % self.generate_every != 0:
                self._buffer[slot]["old_logps"] = old  # later passes over this slice, after updates, use them
        eps_high = args.epsilon if args.epsilon_high is None else args.epsilon_high
        per_token, ratio, kl = grpo_token_loss(logps, old, batch["advantages"], batch.get("ref_logps"),
                                               beta=args.beta, epsilon_low=args.epsilon, epsilon_high=eps_high,
                                               use_bias_correction_kl=args.use_bias_correction_kl)
        world = data_parallel.data_parallel_world() if data_parallel.is_sharded(model) else 1
        # dapo: the generation batch's loss tokens per rank, rescaled to one accumulated batch.
        dapo_tokens = max(batch["num_items_in_batch"], 1.0) / world * args.gradient_accumulation_steps \
            / args.steps_per_generation
        loss = aggregate_loss(per_token, mask, args.loss_type, accumulation=args.gradient_accumulation_steps,
                              max_completion_length=args.max_completion_length, dapo_tokens=dapo_tokens)
        self._record_loss_metrics(mask, entropy, ratio.detach(), kl, batch["advantages"][:, None], eps_high)
        return loss / world  # BaseTrainer scales token-level losses by the world size

    @torch.no_grad()
    def _record_loss_metrics(self, mask, entropy, ratio, kl, adv, eps_high) -> None:
        count = mask.sum()
        values = [(entropy * mask).sum()]
        low = ((ratio < 1 - self.args.epsilon) & (adv < 0)).float()
        high = ((ratio > 1 + eps_high) & (adv > 0)).float()
        region = ((low + high) > 0).float()
        values += [(low * mask).sum(), (high * mask).sum(), (region * mask).sum()]
        if kl is not None:
            values.append((kl * mask).sum())
        seq = mask.sum(-1)
        low_seq, high_seq = (low * mask).sum(-1) / seq, (high * mask).sum(-1) / seq  # NaN for empty rows
        values += [torch.nan_to_num(low_seq, nan=float("inf")).min(), torch.nan_to_num(high_seq, nan=-float("inf")).max(),
                   count]
        host = torch.stack(values).tolist()  # one device-to-host transfer for all metrics
        n = host[-1]
        self.record("entropy", host[0], n, if_empty=0.0)
        self.record("clip_ratio/low_mean", host[1], n, if_empty=0.0)
        self.record("clip_ratio/high_mean", host[2], n, if_empty=0.0)
        self.record("clip_ratio/region_mean", host[3], n, if_empty=0.0)
        if kl is not None:
            self.record("kl", host[4], n, if_empty=0.0)
        low_min, high_max = host[-3], host[-2]
        if self._world() > 1:  # min/max over the ranks' rows: their own collectives
            lo, hi = torch.tensor([low_min], dtype=torch.float64), torch.tensor([high_max], dtype=torch.float64)
            data_parallel.all_reduce_(lo, "min", self.model)
            data_parallel.all_reduce_(hi, "max", self.model)
            low_min, high_max = float(lo), float(hi)
        if abs(low_min) != float("inf"):
            self.record("clip_ratio/low_min", low_min, 1.0)
        if abs(high_max) != float("inf"):
            self.record("clip_ratio/high_max", high_max, 1.0)

    def after_model_prepared(self) -> None:
        if data_parallel.data_parallel_world() > 1:
            from shardkit.models import GPT

            if self.rollout_func is None and not isinstance(self.model, GPT):
                raise ValueError("GRPOTrainer on several ranks samples with shardkit GPT models (their rollout "
                                 "gathers the weights once and runs no collective per token); for an HF model "
                                 "pass a rollout_func")
            if self.ref_model is not None:
                self.ref_model = shard_for_data_parallel(self.ref_model)
