"""``KTOTrainer``: Kahneman-Tversky optimisation on unpaired (prompt, completion, label) data."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shardkit.data import collate_unpaired, unpaired_example
from shardkit.trainers.base import BaseTrainer, precomputed_tensors, restore_precomputed
from shardkit.trainers.config import KTOConfig
from shardkit.trainers.logprobs import entropy_and_top1, forward_logits, token_logps
from shardkit.trainers.setup import reference_model


def add_mismatched_completions(examples: list[dict], batch_size: int) -> None:
    """Give each example a ``KL_completion_ids``: the completion of the previous example of its batch.

    Batches are consecutive chunks of ``batch_size`` in dataset order, and the
    completions rotate by one inside each: (x1, yn), (x2, y1), ..., as TRL
    builds them. These mismatched pairs estimate the KL reference point z0.
    """
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        completions = [e["completion_ids"] for e in chunk]
        for e, kl in zip(chunk, completions[-1:] + completions[:-1]):
            e["KL_completion_ids"] = kl


def kto_losses(chosen_logratios, rejected_logratios, kl, beta, desirable_weight, undesirable_weight) -> torch.Tensor:
    """Weighted per-example KTO losses: desirable 1-σ(β(Δ-z0)), undesirable 1-σ(β(z0-Δ))."""
    chosen = 1 - F.sigmoid(beta * (chosen_logratios - kl))
    rejected = 1 - F.sigmoid(beta * (kl - rejected_logratios))
    return torch.cat([desirable_weight * chosen, undesirable_weight * rejected])


class KTOTrainer(BaseTrainer):
    """KTO, in TRL's shape: ``KTOTrainer(model, ref_model=None, args=KTOConfig(...), train_dataset=..., processing_class=tok)``.

    The reference point z0 = max(0, mean(logπ - logπ_ref)) over mismatched
    prompt/completion pairs, detached; the loss is the nan-mean of the weighted
    desirable and undesirable losses. Logs ``kl``, ``rewards/*``, ``logps/*``,
    ``logits/*`` and ``entropy`` as TRL does.
    """

    config_class = KTOConfig
    dataset_kinds = ("unpaired_preference",)

    def __init__(self, model, ref_model=None, args: KTOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None) -> None:
        super().__init__(model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class)
        self.ref_model = reference_model(model, ref_model, self.args)

    def prepare_examples(self, records, split):
        if "prompt_ids" in records[0]:
            examples = [dict(r) for r in records]
        else:
            examples = [unpaired_example(self.processing_class, r, where=f"{split} example {i}")
                        for i, r in enumerate(records)]
        if self.args.max_length is not None:
            examples = [e for e in examples if len(e["prompt_ids"]) < self.args.max_length]
        bs = self.args.per_device_train_batch_size if split == "train" else self.args.per_device_eval_batch_size
        add_mismatched_completions(examples, bs)
        return examples

    def collate(self, examples):
        return collate_unpaired(examples, self.pad_token_id, self.args.max_length)

    @staticmethod
    def _seq_logps(model, batch, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = {"input_ids": batch[f"{prefix}input_ids"], "attention_mask": batch[f"{prefix}attention_mask"]}
        labels = inputs["input_ids"].masked_fill(batch[f"{prefix}completion_mask"] == 0, -100)
        logits = forward_logits(model, inputs)
        logps, mask, logsm = token_logps(logits, labels)
        return logps.sum(-1), mask, logsm, logits

    @torch.no_grad()
    def _ref_seq_logps(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self._seq_logps(model, batch)[0], self._seq_logps(model, batch, "KL_")[0]

    def before_train(self) -> None:
        if not self.args.precompute_ref_log_probs:
            return
        ref = self.ref_model if self.ref_model is not None else self.model
        was_training = ref.training
        ref.eval()
        for examples in (self.train_examples, self.eval_examples or []):
            bs = self.args.per_device_train_batch_size
            for i in range(0, len(examples), bs):
                chunk = examples[i:i + bs]
                ref_logps, ref_kl = self._ref_seq_logps(ref, self.collate(chunk))
                for e, a, b in zip(chunk, ref_logps.tolist(), ref_kl.tolist()):
                    e["ref_logps"], e["ref_KL_logps"] = a, b
        ref.train(was_training)
        self.ref_model = None

    def extra_checkpoint_tensors(self):
        if not self.args.precompute_ref_log_probs:
            return {}
        return precomputed_tensors(self, ("ref_logps", "ref_KL_logps"))

    def load_extra_checkpoint_tensors(self, tensors):
        if self.args.precompute_ref_log_probs:
            restore_precomputed(self, tensors)
            self.ref_model = None

    def compute_loss(self, model, batch, num_items):
        args = self.args
        with torch.no_grad():
            kl_logps = self._seq_logps(model, batch, "KL_")[0]
        logps, mask, logsm, logits = self._seq_logps(model, batch)
        if "ref_logps" in batch:
            ref_logps, ref_kl_logps = batch["ref_logps"], batch["ref_KL_logps"]
        else:
            ref_logps, ref_kl_logps = self._ref_seq_logps(self.ref_model, batch)
        kl = (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
        label = batch["label"]
        chosen_ratio = logps[label] - ref_logps[label]
        rejected_ratio = logps[~label] - ref_logps[~label]
        loss = kto_losses(chosen_ratio, rejected_ratio, kl, args.beta, args.desirable_weight,
                          args.undesirable_weight).nanmean()
        self._record_metrics(batch, logits, mask, logsm, logps, label, chosen_ratio, rejected_ratio, kl)
        return loss

    @torch.no_grad()
    def _record_metrics(self, batch, logits, mask, logsm, logps, label, chosen_ratio, rejected_ratio, kl):
        beta = self.args.beta
        self.record("kl", float(kl))
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        entropy, _ = entropy_and_top1(logsm, labels)
        total = int(mask.sum())
        self.record("entropy", float((entropy * mask).sum()) / total if total else 0.0)
        mean_logits = logits[:, :-1].float().mean(-1)  # (B, T-1)
        for name, rows in (("chosen", label), ("rejected", ~label)):
            n_tokens = int(mask[rows].sum())
            if n_tokens:
                self.record(f"logits/{name}", float(mean_logits[rows][mask[rows]].sum()) / n_tokens)
        n_chosen, n_rejected = int(label.sum()), int((~label).sum())
        if n_chosen:
            self.record("rewards/chosen", float((beta * chosen_ratio).nansum()) / n_chosen)
            self.record("logps/chosen", float(logps[label].nansum()) / n_chosen)
        if n_rejected:
            self.record("rewards/rejected", float((beta * rejected_ratio).nansum()) / n_rejected)
            self.record("logps/rejected", float(logps[~label].nansum()) / n_rejected)
        if n_chosen and n_rejected:
            self.record("rewards/margins", self._metrics["rewards/chosen"][-1] - self._metrics["rewards/rejected"][-1])
