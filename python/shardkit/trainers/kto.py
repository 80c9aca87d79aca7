"""``KTOTrainer``: Kahneman-Tversky optimisation on unpaired (prompt, completion, label) data."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shardkit.data import collate_unpaired, unpaired_example
from shardkit.trainers import data_parallel
from shardkit.trainers.config import KTOConfig
from shardkit.trainers.logprobs import entropy_and_top1, forward_logits, token_logps
from shardkit.trainers.preference import PreferenceTrainer


def add_mismatched_completions(examples: list[dict], batch_size: int) -> None:
    """Give each example a ``KL_completion_ids``: the completion of the previous example of its batch.

    Batches are consecutive chunks of ``batch_size`` in dataset order, and the
    completions rotate by one inside each: (x1, yn), (x2, y1), ..., as TRL
    builds them. These mismatched pairs estimate the KL reference point z0.
    The trainer passes the global batch size (all ranks'), so N ranks pair
    the examples as one process does.
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


class KTOTrainer(PreferenceTrainer):
    """KTO, in TRL's shape: ``KTOTrainer(model, ref_model=None, args=KTOConfig(...), train_dataset=...,
    processing_class=tok)``.

    The reference point z0 = max(0, mean(logπ - logπ_ref)) over the mismatched
    prompt/completion pairs of the global micro-batch (all ranks), detached;
    the loss is the nan-mean of the weighted desirable and undesirable losses.
    Logs ``kl``, ``rewards/*``, ``logps/*``, ``logits/*`` and ``entropy`` as
    TRL does. The reference model is handled by ``PreferenceTrainer``.
    """

    config_class = KTOConfig
    dataset_kinds = ("unpaired_preference",)
    reference_keys = ("ref_logps", "ref_KL_logps")

    def __init__(self, model, ref_model=None, args: KTOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None) -> None:
        super().__init__(model, ref_model=ref_model, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class)

    def prepare_examples(self, records, split):
        if "prompt_ids" in records[0]:
            examples = [dict(r) for r in records]
        else:
            examples = [unpaired_example(self.processing_class, r, where=f"{split} example {i}")
                        for i, r in enumerate(records)]
        if self.args.max_length is not None:
            examples = [e for e in examples if len(e["prompt_ids"]) < self.args.max_length]
        bs = self.args.per_device_train_batch_size if split == "train" else self.args.per_device_eval_batch_size
        add_mismatched_completions(examples, bs * self.data_parallel_size())
        return examples

    def collate(self, examples):
        return collate_unpaired(examples, self.pad_token_id, self.args.max_length)

    @staticmethod
    def _seq_logps(model, batch, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = batch[f"{prefix}input_ids"].masked_fill(batch[f"{prefix}completion_mask"] == 0, -100)
        logits = forward_logits(model, batch, prefix)
        logps, mask, logsm = token_logps(logits, labels)
        return logps.sum(-1), mask, logsm, logits

    @torch.no_grad()
    def reference_values(self, ref, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs (B,) under ``ref`` of the matched and of the mismatched (KL) pairs."""
        return self._seq_logps(ref, batch)[0], self._seq_logps(ref, batch, "KL_")[0]

    def compute_loss(self, model, batch, num_items):
        args = self.args
        with torch.no_grad():
            kl_logps = self._seq_logps(model, batch, "KL_")[0]
        logps, mask, logsm, logits = self._seq_logps(model, batch)
        if "ref_logps" in batch:
            ref_logps, ref_kl_logps = batch["ref_logps"], batch["ref_KL_logps"]
        else:
            ref_logps, ref_kl_logps = self.reference_values(self.ref_model, batch)
        # z0 over the global micro-batch: this rank's sum and count, summed over the ranks. It stays a device
        # tensor (no host sync) unless the ranks must add theirs up.
        kl_sum = torch.stack([(kl_logps - ref_kl_logps).sum().double(), kl_logps.new_tensor(len(kl_logps)).double()])
        data_parallel.all_reduce_sum_(kl_sum, model)
        kl = (kl_sum[0] / kl_sum[1]).to(kl_logps.dtype).clamp(min=0)
        label = batch["label"]
        ratio = logps - ref_logps  # (B,)
        # kto_losses per example, selected by label with masks rather than boolean indexing (a host sync).
        chosen, rejected = kto_losses(ratio, ratio, kl, args.beta, args.desirable_weight,
                                      args.undesirable_weight).chunk(2)
        loss = torch.where(label, chosen, rejected).nanmean()
        self._record_metrics(batch, logits, mask, logsm, logps, label, ratio, kl)
        return loss

    @torch.no_grad()
    def _record_metrics(self, batch, logits, mask, logsm, logps, label, ratio, kl):
        """TRL's metrics as (sum, count) of this rank's rows; a side with no rows in the global
        micro-batch is left out of the mean, as TRL does. Device tensors throughout: no host sync."""
        beta = self.args.beta
        self.record("kl", kl)
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        entropy, _ = entropy_and_top1(logsm, labels)
        self.record("entropy", (entropy * mask).sum(), mask.sum(), if_empty=0.0)
        mean_logits = logits[:, :-1].float().mean(-1)  # (B, T-1)
        sides = (("chosen", label), ("rejected", ~label))
        for name, rows in sides:
            rows_mask = mask & rows[:, None]  # (B, T-1)
            self.record(f"logits/{name}", (mean_logits * rows_mask).sum(), rows_mask.sum())
        for name, rows in sides:
            self.record(f"rewards/{name}", torch.where(rows, beta * ratio, 0.0).nansum(), rows.sum())
            self.record(f"logps/{name}", torch.where(rows, logps, 0.0).nansum(), rows.sum())

    def derive_metrics(self, values):
        if "rewards/chosen" in values and "rewards/rejected" in values:
            return {"rewards/margins": values["rewards/chosen"] - values["rewards/rejected"]}
        return {}
