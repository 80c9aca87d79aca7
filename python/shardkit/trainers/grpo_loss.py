"""The numerics of GRPO, as plain functions: group advantages, completion log-probs, the clipped loss.

Each follows TRL 1.16's definitions exactly (the parity tests run TRL's
trainer against ours); ``GRPOTrainer`` only moves data between them.
"""

from __future__ import annotations

import torch

from shardkit.trainers.logprobs import forward_logits


def nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Standard deviation ignoring NaNs, with Bessel's correction (NaN with fewer than 2 values)."""
    if dim is None:
        x, dim = x.reshape(-1), 0
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim)
    count = (~torch.isnan(x)).sum(dim=dim)
    var = torch.where(count > 1, var * count / (count - 1).clamp(min=1), torch.full_like(var, float("nan")))
    return var.sqrt()


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages (N,) and the std used to scale them (N,) from summed rewards (N,), grouped by prompt.

    Rows ``[g*G, (g+1)*G)`` are the G completions of prompt g. A NaN reward
    (no reward function scored the row) is left out of its group's mean and
    std, and the row's advantage is 0. ``scale_rewards``: ``group`` divides
    by the group's std, ``batch`` by the std of all rows, ``none`` not at all
    (the std is still returned, for ``frac_reward_zero_std``).
    """
    grouped = rewards.view(-1, num_generations)  # (P, G)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)  # (N,)
    if scale_rewards == "batch":
        std = nanstd(rewards).expand_as(rewards)
    else:
        std = nanstd(grouped, dim=1).repeat_interleave(num_generations)
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0), std


def completion_logps(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                     completion_mask: torch.Tensor, temperature: float, with_entropy: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (B, C) of the completion tokens at ``temperature``, fp32, 0 where masked; and entropies.

    prompt_ids/prompt_mask: (B, P), left-padded; completion_ids/completion_mask:
    (B, C), right-padded. The entropy (B, C) is that of the same
    temperature-scaled distribution.
    """
    p = prompt_ids.shape[1]
    batch = {"input_ids": torch.cat([prompt_ids, completion_ids], dim=1),
             "attention_mask": torch.cat([prompt_mask, completion_mask], dim=1)}
    logits = forward_logits(model, batch)[:, p - 1:-1]  # (B, C, V): position t predicts token t+1
    logsm = (logits.float() / temperature).log_softmax(-1)
    mask = completion_mask.bool()
    logps = logsm.gather(-1, completion_ids[..., None])[..., 0] * mask
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logsm.exp() * logsm).sum(-1) * mask
    return logps, entropy


def grpo_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                    ref_logps: torch.Tensor | None, *, beta: float, epsilon_low: float, epsilon_high: float,
                    use_bias_correction_kl: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token loss (B, C), the importance ratio (B, C) and the per-token k3 KL (B, C) or None.

    loss = -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A) + beta * KL, with
    r = exp(logp - old_logp) and KL = exp(ref - logp) - (ref - logp) - 1
    (times r when ``use_bias_correction_kl``).
    """
    ratio = torch.exp(logps - old_logps)
    adv = advantages[:, None]  # (B, 1)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta != 0.0:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        if use_bias_correction_kl:
            kl = kl * ratio
        loss = loss + beta * kl
    return loss, ratio, kl


def aggregate_loss(per_token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str, *, accumulation: int,
                   max_completion_length: int, dapo_tokens: float) -> torch.Tensor:
    """The micro-batch's loss, already scaled for gradient accumulation, as TRL normalises it.

    grpo: mean over rows of each row's token mean; bnpo: token mean of the
    micro-batch; dr_grpo: sum / (rows * max_completion_length); these three
    are then divided by ``accumulation``. dapo: sum / ``dapo_tokens`` (the
    loss tokens of one accumulated batch, counted over the generation batch).
    """
    total = per_token_loss * mask
    if loss_type == "grpo":
        return (total.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return total.sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return total.sum() / (per_token_loss.shape[0] * max_completion_length) / accumulation
    if loss_type == "dapo":
        return total.sum() / dapo_tokens
    raise ValueError(f"unknown GRPO loss_type {loss_type!r}")
