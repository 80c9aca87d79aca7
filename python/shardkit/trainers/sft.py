"""``SFTTrainer`` and ``PretrainTrainer``: next-token loss on (masked) sequences."""

from __future__ import annotations

import torch

from shardkit.data import collate_lm, collate_packed, lm_example, pack_best_fit
from shardkit.trainers.base import BaseTrainer
from shardkit.trainers.config import PretrainConfig, SFTConfig
from shardkit.trainers.logprobs import entropy_and_top1, forward_logits, token_logps


class SFTTrainer(BaseTrainer):
    """Supervised fine-tuning, in TRL's shape.

    ``SFTTrainer(model, args=SFTConfig(...), train_dataset=..., processing_class=tokenizer)``.
    Data: ``text``, ``prompt``/``completion`` or ``messages`` records (JSONL
    path, HF dataset or list of dicts). The loss is the summed NLL of the
    trained tokens divided by the trained-token count of the whole accumulated
    batch. Logs ``loss``, ``grad_norm``, ``learning_rate``, ``num_tokens``,
    ``entropy`` and ``mean_token_accuracy`` as TRL defines them.
    """

    config_class = SFTConfig
    dataset_kinds = ("prompt_completion", "messages", "text")
    token_level_loss = True

    def prepare_examples(self, records: list[dict], split: str) -> list[dict]:
        args = self.args
        if "input_ids" in records[0]:
            examples = [{"input_ids": list(r["input_ids"]), "labels": list(r.get("labels", r["input_ids"]))}
                        for r in records]
        else:
            completion_only = getattr(args, "completion_only_loss", None)
            if completion_only is None:
                completion_only = self.dataset_kind == "prompt_completion"
            examples = [lm_example(self.processing_class, r, self.dataset_kind, completion_only_loss=completion_only,
                                   assistant_only_loss=getattr(args, "assistant_only_loss", False), where=f"{split} example {i}")
                        for i, r in enumerate(records)]
        if args.packing:
            if args.max_length is None:
                raise ValueError(f"{type(args).__name__}.packing needs max_length")
            return pack_best_fit(examples, args.max_length)
        if args.max_length is not None:
            examples = [{k: v[:args.max_length] for k, v in e.items()} for e in examples]
            examples = [e for e in examples if any(label != -100 for label in e["labels"])]
        return examples

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.args.packing:
            return collate_packed(examples)
        return collate_lm(examples, self.pad_token_id)

    def count_items(self, batches):
        return int(sum((b["labels"][:, 1:] != -100).sum() for b in batches))

    def count_tokens(self, batch):
        if self.args.packing:
            return int(batch["position_ids"].shape[1])
        return int(batch["attention_mask"].sum())

    def compute_loss(self, model, batch, num_items):
        logits = forward_logits(model, batch)
        logps, mask, logsm = token_logps(logits, batch["labels"])
        count = int(mask.sum()) if num_items is None else num_items
        loss = -logps.sum() / max(count, 1)
        entropy, top1 = entropy_and_top1(logsm, batch["labels"])
        valid = mask.sum()  # metrics stay device tensors: no host sync per micro-batch
        self.record("entropy", (entropy * mask).sum(), valid, if_empty=0.0)
        self.record("mean_token_accuracy", (top1 & mask).sum(), valid, if_empty=0.0)
        return loss


class PretrainTrainer(SFTTrainer):
    """Next-token pretraining on ``text`` records, packed by default (``PretrainConfig``)."""

    config_class = PretrainConfig
    dataset_kinds = ("text",)

    def prepare_examples(self, records, split):
        if "input_ids" not in records[0]:
            self.dataset_kind = "text"
        return super().prepare_examples(records, split)
