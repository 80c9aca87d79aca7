"""Per-token log-probabilities of a causal LM, in fp32, for our GPT and HF models alike."""

from __future__ import annotations

import torch


def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits (B, T, V) of ``model`` on the model inputs of ``batch``.

    A padding-free (packed) batch carries ``position_ids`` and no attention
    mask; both our GPT and HF models then keep attention inside each document.
    """
    kwargs = {"input_ids": batch["input_ids"]}
    mask = batch.get("attention_mask")
    # Right padding needs no mask under causal attention: a real token only sees earlier positions, which are
    # all real. Dropping it lets SDPA take its is_causal path instead of a materialised (B, 1, T, T) mask.
    if mask is not None and not is_right_padded(mask):
        kwargs["attention_mask"] = mask
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
    return model(**kwargs, use_cache=False).logits


def is_right_padded(mask: torch.Tensor) -> bool:
    """True when every row of ``mask`` (B, T) is ones followed by zeros."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


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
