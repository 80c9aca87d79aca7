"""``DPOTrainer``: direct preference optimisation (sigmoid, IPO, hinge, robust losses, plus an SFT term)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shardkit.data import collate_preference, preference_example
from shardkit.trainers.config import DPOConfig
from shardkit.trainers.logprobs import entropy_and_top1, forward_logits, token_logps
from shardkit.trainers.preference import PreferenceTrainer


def dpo_losses(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, chosen_len: torch.Tensor,
               rejected_len: torch.Tensor, beta: float, loss_type: str, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair DPO loss (B,) from the policy-minus-reference log-ratios (B,) of each side.

    IPO divides each side's ratio by its completion length (TRL's normalisation).
    """
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type == "ipo":
        ipo_delta = chosen_logratios / chosen_len.clamp(min=1.0) - rejected_logratios / rejected_len.clamp(min=1.0)
        return (ipo_delta - 1 / (2 * beta)) ** 2
    if loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    raise ValueError(f"unknown DPO loss_type {loss_type!r}")


class DPOTrainer(PreferenceTrainer):
    """Direct preference optimisation, in TRL's shape.

    ``DPOTrainer(model, ref_model=None, args=DPOConfig(...), train_dataset=..., processing_class=tok)``.
    Without ``ref_model`` a frozen copy of the initial model is the reference
    (sharded like the policy when several ranks train); with
    ``precompute_ref_log_probs=True`` the reference log-probs are computed
    once before training and no reference model is held during it. Chosen and
    rejected rows go through one forward (2B rows, chosen first); sequence
    log-probs are fp32 sums over completion tokens. Logs TRL's ``rewards/*``,
    ``logps/*``, ``logits/*``, ``entropy``, ``mean_token_accuracy``.
    """

    config_class = DPOConfig
    dataset_kinds = ("preference",)
    reference_keys = ("ref_chosen_logps", "ref_rejected_logps")

    def __init__(self, model, ref_model=None, args: DPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None) -> None:
        super().__init__(model, ref_model=ref_model, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class)

    def prepare_examples(self, records, split):
        if "prompt_ids" in records[0]:
            return [dict(r) for r in records]
        examples = [preference_example(self.processing_class, r, where=f"{split} example {i}")
                    for i, r in enumerate(records)]
        if self.args.max_length is not None:
            examples = [e for e in examples if len(e["prompt_ids"]) < self.args.max_length]
        return examples

    def collate(self, examples):
        return collate_preference(examples, self.pad_token_id, self.args.max_length)

    @torch.no_grad()
    def reference_values(self, ref, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs (B,) of the chosen and of the rejected rows under ``ref``."""
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        logps, _, _ = token_logps(forward_logits(ref, batch), labels)
        return logps.sum(-1).chunk(2)

    def compute_loss(self, model, batch, num_items):
        args = self.args
        completion_mask = batch["completion_mask"]
        labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
        logits = forward_logits(model, batch)  # (2B, T, V)
        logps_tok, mask, logsm = token_logps(logits, labels)  # (2B, T-1)
        chosen_logps, rejected_logps = logps_tok.sum(-1).chunk(2)
        if "ref_chosen_logps" in batch:
            ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.reference_values(self.ref_model, batch)
        chosen_ratio, rejected_ratio = chosen_logps - ref_chosen, rejected_logps - ref_rejected
        chosen_len, rejected_len = completion_mask.sum(-1).float().chunk(2)
        types = [args.loss_type] if isinstance(args.loss_type, str) else args.loss_type
        weights = args.loss_weights or [1.0] * len(types)
        loss = 0.0
        for loss_type, weight in zip(types, weights):
            if loss_type == "sft":
                # TRL's "sft" term: the mean NLL of this micro-batch's chosen completion tokens.
                chosen_tok, chosen_mask = logps_tok.chunk(2)[0], mask.chunk(2)[0]
                term = -(chosen_tok * chosen_mask).sum() / chosen_mask.sum().clamp(min=1)
            else:
                term = dpo_losses(chosen_ratio, rejected_ratio, chosen_len, rejected_len, args.beta, loss_type,
                                  args.label_smoothing).mean()
            loss = loss + weight * term
        self._record_metrics(logits, labels, mask, logsm, chosen_logps, rejected_logps, chosen_ratio, rejected_ratio)
        return loss

    @torch.no_grad()
    def _record_metrics(self, logits, labels, mask, logsm, chosen_logps, rejected_logps, chosen_ratio, rejected_ratio):
        """TRL's metrics as (sum, count) of this rank's rows: token-weighted or per pair (see ``trainers.metrics``)."""
        beta = self.args.beta
        entropy, top1 = entropy_and_top1(logsm, labels)
        # Sums and counts stay device tensors (masked sums, no boolean indexing): no host sync per micro-batch.
        self.record("entropy", (entropy * mask).sum(), mask.sum(), if_empty=0.0)
        chosen_mask, rejected_mask = mask.chunk(2)
        # logits/*: the mean over the vocabulary of each completion position's logits, averaged over positions.
        chosen_mean, rejected_mean = logits[:, :-1].float().mean(-1).chunk(2)  # (B, T-1) each
        n_chosen, n_rejected = chosen_mask.sum(), rejected_mask.sum()
        self.record("logits/chosen", (chosen_mean * chosen_mask).sum(), n_chosen, if_empty=0.0)
        self.record("logits/rejected", (rejected_mean * rejected_mask).sum(), n_rejected, if_empty=0.0)
        chosen_top1, _ = top1.chunk(2)
        self.record("mean_token_accuracy", (chosen_top1 & chosen_mask).sum(), n_chosen, if_empty=0.0)
        chosen_rewards, rejected_rewards = beta * chosen_ratio, beta * rejected_ratio
        pairs = len(chosen_rewards)
        self.record("rewards/chosen", chosen_rewards.sum(), pairs)
        self.record("rewards/rejected", rejected_rewards.sum(), pairs)
        self.record("rewards/accuracies", (chosen_rewards > rejected_rewards).sum(), pairs)
        self.record("rewards/margins", (chosen_rewards - rejected_rewards).sum(), pairs)
        self.record("logps/chosen", chosen_logps.sum(), pairs)
        self.record("logps/rejected", rejected_logps.sum(), pairs)
