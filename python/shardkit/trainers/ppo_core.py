"""The math of PPO for language models, as plain tensor functions (no models, no loop).

Shapes: B rollouts, R response positions. ``mask`` (B, R) is 1 on the
response tokens up to and including the stop token, 0 on the padding after
it. Every function is independent of the trainer, so tests check each one
and the trainer only composes them (``PPOTrainer.make_experience`` and
``PPOTrainer.micro_batch_loss``).
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over ``dim``, or over everything)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim) / mask.sum(dim)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries; Bessel-corrected when ``unbiased`` (as TRL)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.to(values.dtype).sum()
        # n == 1 divides by zero: the caller guarantees >= 2 tokens (checked once per batch, not per call).
        var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-8) over the masked entries; keeps the mean when not ``shift_mean``."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from sampled tokens' log-probs (J. Schulman's k1 / k3).

    k1 = log p - log q (unbiased, can be negative); k3 = (r - 1) - log r with
    r = q / p (unbiased, always >= 0, lower variance).
    """
    logr = ref_logprobs - logprobs
    if estimator == "k1":
        return -logr
    if estimator == "k3":
        return torch.expm1(logr) - logr
    raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {estimator!r}")


def token_rewards(
    kl: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (B, R) and the KL part alone: -kl_coef * kl on every token, plus the score on the last.

    The last token is the last masked position (the stop token when one was
    generated). TRL 1.12 adds the score one position later, on the first pad
    (trl#3750); here it lands on the action that earned it.
    """
    non_score = -kl_coef * kl * mask
    rewards = non_score.clone()
    last = mask.long().sum(1) - 1  # (B,)
    rewards[torch.arange(len(last), device=last.device), last] += scores
    return rewards, non_score


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response positions, backwards in time.

    rewards, values: (B, R), zero after each response's end, so the
    bootstrap value past the end is 0. Returns (advantages, returns) with
    returns = advantages + values (the value target).
    """
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    return advantages, advantages + values


def policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate: masked mean of max(-A r, -A clip(r, 1-eps, 1+eps)); plus its statistics."""
    logratio = new_logprobs - old_logprobs
    ratio = torch.exp(logratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": 0.5 * masked_mean(logratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    vpred: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 * masked mean of max((v - R)^2, (clip(v, v_old +- eps_v) - R)^2); plus its clip fraction."""
    vclipped = torch.clamp(vpred, old_values - cliprange_value, old_values + cliprange_value)
    losses1 = (vpred - returns) ** 2
    losses2 = (vclipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(losses1, losses2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((losses2 > losses1).float(), mask)
    return loss, clipfrac


def truncate_after_stop(
    responses: torch.Tensor, stop_token_id: int | None, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(responses with pad after the first stop token, mask (B, R) of the kept tokens, stop token included)."""
    if stop_token_id is None:
        return responses, torch.ones_like(responses)
    is_stop = responses == stop_token_id
    after = (is_stop.long().cumsum(1) - is_stop.long()) > 0  # strictly after the first stop token
    return responses.masked_fill(after, pad_token_id), (~after).long()
