"""``RewardTrainer`` and ``RewardConfig``: a Bradley-Terry reward model on preference pairs (TRL 1.16's shape).

Data: ``chosen``/``rejected`` records, with an optional ``prompt`` (prepended
to both, as TRL does) and an optional ``margin``; plain text (EOS appended)
or conversations (rendered with the chat template). Pairs where either side
is longer than ``max_length`` tokens are dropped, not truncated (TRL).

Model: an HF ``AutoModelForSequenceClassification`` with ``num_labels=1`` or
a ``shardkit.models.GPTForSequenceClassification``. The score of a sequence
is the head's output at its last non-pad token.

Loss of a micro-batch of B pairs, rewards r_c, r_r (B,)::

    -logsigmoid(r_c - r_r - margin).mean() + center_rewards_coefficient * mean((r_c + r_r) ** 2)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shardkit.data import DataFormatError
from shardkit.data.tokenize import encode_chat, encode_text, with_eos
from shardkit.trainers import data_parallel
from shardkit.trainers.base import BaseTrainer
from shardkit.trainers.config import TrainingConfig, _f
from shardkit.trainers.setup import disable_dropout


@dataclass(kw_only=True)
class RewardConfig(TrainingConfig):
    """Reward-model training on preference pairs (TRL's ``RewardConfig`` names and defaults)."""

    learning_rate: float = _f(1e-4, "peak learning rate (TRL's reward default)")
    center_rewards_coefficient: float | None = _f(None, "weight of mean((r_c + r_r)^2), pulling rewards to zero "
                                                  "mean (arXiv 2312.09244 eq. 2; 0.01 is typical); None = off")
    disable_dropout: bool = _f(True, "zero every dropout probability of the model")

    def __post_init__(self) -> None:
        super().__post_init__()
        c = self.center_rewards_coefficient
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or c < 0):
            raise ValueError(f"RewardConfig.center_rewards_coefficient must be a number >= 0 or None, got {c!r}")


def _check_pair(record, where: str) -> dict:
    if not isinstance(record, Mapping):
        raise DataFormatError(f"{where}: expected a dict, got {type(record).__name__}")
    for key in ("chosen", "rejected"):
        if key not in record or record[key] is None:
            raise DataFormatError(f"{where}: missing field {key!r} (a reward record needs 'chosen' and 'rejected', "
                                  "optionally 'prompt' and 'margin')")
    kinds = {key: isinstance(record[key], list) for key in ("prompt", "chosen", "rejected") if record.get(key) is not None}
    for key, is_chat in kinds.items():
        if not is_chat and not isinstance(record[key], str):
            raise DataFormatError(f"{where}: field {key!r} must be a string or a list of messages, "
                                  f"got {type(record[key]).__name__}")
    if len(set(kinds.values())) > 1:
        raise DataFormatError(f"{where}: 'prompt', 'chosen' and 'rejected' must be all strings or all conversations")
    margin = record.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        raise DataFormatError(f"{where}: field 'margin' must be a number, got {margin!r}")
    return dict(record)


def reward_example(tokenizer, record: dict) -> dict:
    """``chosen_ids``/``rejected_ids`` (and ``margin``) of one record, with TRL's rules."""
    prompt = record.get("prompt")
    out = {}
    for key in ("chosen", "rejected"):
        value = record[key]
        if isinstance(value, list):
            out[f"{key}_ids"] = encode_chat(tokenizer, (prompt or []) + value)[0]
        else:
            out[f"{key}_ids"] = encode_text(tokenizer, (prompt or "") + with_eos(value, tokenizer))
    if record.get("margin") is not None:
        out["margin"] = float(record["margin"])
    return out


def collate_pairs(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows (2B, T), right-padded; ``margin`` (B,) when the examples have one."""
    rows = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, :len(r)] = 1
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "margin" in examples[0]:
        out["margin"] = torch.tensor([e.get("margin", 0.0) for e in examples], dtype=torch.float32)
    return out


def reward_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar scores (B,) of a sequence-classification model; raises unless its head has one output."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    if logits.dim() != 2 or logits.shape[-1] != 1:
        raise ValueError(f"reward model must output one score per sequence (num_labels=1), got logits of shape "
                         f"{tuple(logits.shape)}")
    return logits[:, 0]


def check_scalar_head(model, what: str = "model") -> None:
    """Fail early when a sequence-classification model's head is not scalar (``num_labels`` != 1)."""
    n = getattr(model, "num_labels", None)
    if n is None:
        n = getattr(getattr(model, "config", None), "num_labels", None)
    if n is not None and n != 1:
        raise ValueError(f"{what}: a reward model needs a scalar head (num_labels=1), this one has num_labels={n}")
    if n is None and not hasattr(model, "score"):
        raise TypeError(f"{what}: expected a sequence-classification model with num_labels=1 (an HF "
                        "AutoModelForSequenceClassification or shardkit GPTForSequenceClassification), "
                        f"got {type(model).__name__}")


class RewardTrainer(BaseTrainer):
    """Reward-model training, in TRL's shape.

    ``RewardTrainer(model, args=RewardConfig(...), train_dataset=..., processing_class=tokenizer)``.
    Chosen and rejected rows go through one forward (2B rows, chosen first).
    Logs ``loss``, ``grad_norm``, ``accuracy`` (r_c > r_r), ``margin`` (mean
    r_c - r_r), ``mean_reward``, ``min_reward``, ``max_reward`` (over the 2B
    scores of each micro-batch, averaged over the micro-batches of a log).
    """

    config_class = RewardConfig

    def __init__(self, model, args: RewardConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None) -> None:
        check_scalar_head(model)
        if (args.disable_dropout if args is not None else True):
            disable_dropout(model)
        # HF heads find the last non-pad token by id: they must agree with the collator's pad id.
        config = getattr(model, "config", None)
        super().__init__(model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class)
        if config is not None and hasattr(config, "pad_token_id"):
            config.pad_token_id = self.pad_token_id

    def _records(self, dataset):
        if isinstance(dataset, list) and dataset and isinstance(dataset[0], dict) and "chosen_ids" in dataset[0]:
            return dataset
        if isinstance(dataset, (str, os.PathLike)):
            with open(dataset, encoding="utf-8") as f:
                dataset = [json.loads(line) for line in f if line.strip()]
        name = type(dataset).__name__
        records = [_check_pair(r, f"{name} row {i}") for i, r in enumerate(dataset)]
        if not records:
            raise DataFormatError(f"{name}: no records")
        return records

    def prepare_examples(self, records, split):
        if "chosen_ids" in records[0]:
            examples = [dict(r) for r in records]
        else:
            examples = [reward_example(self.processing_class, r) for r in records]
        if self.args.max_length is not None:
            n = self.args.max_length
            examples = [e for e in examples if len(e["chosen_ids"]) <= n and len(e["rejected_ids"]) <= n]
        return examples

    def collate(self, examples):
        return collate_pairs(examples, self.pad_token_id)

    def compute_loss(self, model, batch, num_items):
        rewards = reward_scores(model, batch["input_ids"], batch["attention_mask"])  # (2B,)
        chosen, rejected = rewards.chunk(2)
        diff = chosen - rejected
        margin = batch.get("margin")
        loss = -F.logsigmoid(diff if margin is None else diff - margin.to(diff)).mean()
        coef = self.args.center_rewards_coefficient
        if coef is not None:
            loss = loss + coef * torch.mean((chosen + rejected) ** 2)
        self._record_metrics(rewards.detach().float(), diff.detach().float())
        return loss

    def _record_metrics(self, rewards: torch.Tensor, diff: torch.Tensor) -> None:
        pairs = diff.numel()
        # One host transfer for all statistics; min/max are reduced over ranks with their own collectives.
        stats = torch.stack([rewards.sum(), (diff > 0).float().sum(), diff.sum(), rewards.min(), rewards.max()])
        low, high = stats[3:4].double(), stats[4:5].double()
        data_parallel.all_reduce_(low, "min", self.model)  # untouched when one process trains
        data_parallel.all_reduce_(high, "max", self.model)
        total, correct, margin = stats[:3].tolist()
        self.record("accuracy", correct, pairs)
        self.record("margin", margin, pairs)
        self.record("mean_reward", total, rewards.numel())
        # Already global: every rank adds the same value, so the reduced mean is that value.
        self.record("min_reward", float(low), 1.0)
        self.record("max_reward", float(high), 1.0)
