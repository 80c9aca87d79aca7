"""Sampling with a KV cache: temperature, top-k, top-p and stop tokens."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from shardkit.models.kv_cache import KVCache


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus. logits: (B, V)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def check_generate_args(input_ids: torch.Tensor, max_new_tokens, temperature: float, top_k, top_p) -> None:
    """ValueError naming the argument when a ``generate`` call's arguments are out of range."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty (batch, seq) tensor, got shape {tuple(input_ids.shape)}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be a positive int or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def generate(
    model,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: int | Iterable[int] = (),
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue ``input_ids`` (B, T) by up to ``max_new_tokens``; returns (B, T + n).

    Prompts of different lengths are left-padded, with ``attention_mask`` (B, T)
    marking real tokens. ``temperature=0`` is greedy. A row stops after it
    emits one of ``stop_tokens``; its later positions hold ``pad_token_id``
    (default: the first stop token), and generation ends when all rows stopped.
    """
    check_generate_args(input_ids, max_new_tokens, temperature, top_k, top_p)
    if isinstance(stop_tokens, int):
        stop_tokens = (stop_tokens,)
    stops = torch.tensor(sorted(set(int(s) for s in stop_tokens)), dtype=torch.long, device=input_ids.device)
    if pad_token_id is None:
        pad_token_id = int(stops[0]) if len(stops) else 0
    b, t = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding shifts positions
    dtype = next(model.parameters()).dtype
    cache = KVCache(model.config, b, t + max_new_tokens, dtype, input_ids.device)
    out = input_ids
    if max_new_tokens == 0:
        return out
    logits = model(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache).logits[:, -1]
    next_pos = position_ids[:, -1:] + 1  # (B, 1)
    done = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        token = _sample(logits.float(), temperature, top_k, top_p, generator)  # (B,)
        token = torch.where(done, torch.full_like(token, pad_token_id), token)
        out = torch.cat([out, token[:, None]], dim=1)
        done = done | torch.isin(token, stops)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits = model(token[:, None], attention_mask=torch.ones_like(token[:, None]),
                       position_ids=next_pos, cache=cache).logits[:, -1]
        next_pos = next_pos + 1
    return out


def _sample(logits: torch.Tensor, temperature: float, top_k, top_p, generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
