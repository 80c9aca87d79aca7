"""The attention mask of ``GPT.forward``: causal, padding and packed documents.

``None`` means "plain causal", which lets SDPA take its fast ``is_causal``
path; a boolean mask (B, 1, T, L+T), True = may attend, is built only when
padding, packing or a KV cache needs one.
"""

from __future__ import annotations

import torch

from shardkit.models.kv_cache import KVCache


def is_right_padded(mask: torch.Tensor) -> bool:
    """True when every row of ``mask`` (B, T) is ones followed by zeros (a sync if ``mask`` is on a device)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def document_ids(position_ids: torch.Tensor) -> torch.Tensor | None:
    """(B, T) document index per token of a packed batch, or None if nothing is packed.

    A document starts wherever the position id does not grow by one.
    """
    if position_ids.shape[1] < 2:
        return None
    starts = position_ids[:, 1:] != position_ids[:, :-1] + 1  # (B, T-1)
    if not bool(starts.any()):
        return None
    starts = torch.cat([torch.zeros_like(starts[:, :1]), starts], dim=1)
    return starts.long().cumsum(dim=1)


def build_attention_mask(
    attention_mask: torch.Tensor | None, position_ids: torch.Tensor, past: int, cache: KVCache | None,
    find_documents: bool = True,
) -> torch.Tensor | None:
    """The mask (see the module doc); ``find_documents=False`` skips looking for packed documents in
    ``position_ids`` (the caller made them 0..T-1: looking would cost a device sync per forward)."""
    b, t = position_ids.shape
    device = position_ids.device
    if attention_mask is not None:
        if attention_mask.shape != (b, past + t) and attention_mask.shape != (b, t):
            raise ValueError(f"attention_mask must be (batch, seq) = {(b, t)} (or {(b, past + t)} with a cache), "
                             f"got {tuple(attention_mask.shape)}")
        if cache is not None:
            cache.record_padding(attention_mask[:, -t:].bool())
        elif bool(attention_mask.all()):
            attention_mask = None
    docs = document_ids(position_ids) if cache is None and find_documents else None
    if attention_mask is None and docs is None and (cache is None or cache.padding is None) and past == 0:
        return None
    total = past + t
    q_pos = torch.arange(past, total, device=device)
    k_pos = torch.arange(total, device=device)
    mask = (k_pos[None, :] <= q_pos[:, None])[None].expand(b, t, total)  # (B, T, L+T) causal
    keys_valid = cache.padding if cache is not None else attention_mask
    if keys_valid is not None:
        mask = mask & keys_valid.bool()[:, None, :]
    if docs is not None:
        mask = mask & (docs[:, :, None] == docs[:, None, :])
    # A query that may see nothing (a left-pad token) would give NaN; let it see itself.
    mask = mask | (k_pos[None, :] == q_pos[:, None])[None]
    return mask[:, None]  # (B, 1, T, L+T)
