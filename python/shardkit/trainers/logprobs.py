"""Per-token log-probabilities of a causal LM, in fp32, for our GPT and HF models alike."""

from __future__ import annotations

import torch

from shardkit.trainers.device import is_right_padded, mask_is_right_padded


def forward_logits(model, batch: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """Logits (B, T, V) of ``model`` on the model inputs ``{prefix}input_ids`` (and mask) of ``batch``.

    A padding-free (packed) batch carries ``position_ids`` and no attention
    mask; both our GPT and HF models then keep attention inside each document.
    """
    kwargs = {"input_ids": batch[f"{prefix}input_ids"]}
    mask = batch.get(f"{prefix}attention_mask")
    # Right padding needs no mask under causal attention: a real token only sees earlier positions, which are
    # all real. Dropping it lets SDPA take its is_causal path instead of a materialised (B, 1, T, T) mask.
    # A batch from ``move_batch`` knows this from its host copy: no device sync.
    if mask is not None and not mask_is_right_padded(batch, f"{prefix}attention_mask"):
        kwargs["attention_mask"] = mask
    if f"{prefix}position_ids" in batch:
        kwargs["position_ids"] = batch[f"{prefix}position_ids"]
    return model(**kwargs, use_cache=False).logits


__all__ = ["entropy_and_top1", "forward_logits", "is_right_padded", "token_logps"]


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token log-probs (B, T-1) in fp32, zero where the label is -100; plus the mask and log-softmax.

    logits: (B, T, V); labels: (B, T), aligned with the inputs (shifted here).
    """
    shifted = labels[:, 1:]
    mask = shifted != -100
    logsm = logits[:, :-1].float().log_softmax(-1)  # (B, T-1, V)
    picked = logsm.gather(-1, shifted.clamp(min=0)[..., None])[..., 0]
    return picked * mask, mask, logsm


def entropy_and_top1(logsm: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token entropy (B, T-1) and whether the label is the argmax, from a log-softmax (B, T-1, V)."""
    with torch.no_grad():
        entropy = -(logsm.exp() * logsm).sum(-1)
        top1 = logsm.argmax(-1) == labels[:, 1:]
    return entropy, top1
