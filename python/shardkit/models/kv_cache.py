"""``KVCache``: preallocated per-layer keys and values for incremental decoding."""

from __future__ import annotations

import torch


class KVCache:
    """Keys/values of every layer, (B, Hkv, max_len, D) each, filled left to right.

    ``padding`` (B, L) records which cached positions are real tokens, so a
    left-padded batch keeps ignoring its pad tokens while it decodes.
    """

    def __init__(self, config, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        if max_len > config.max_position_embeddings:
            raise ValueError(f"max_len {max_len} exceeds max_position_embeddings {config.max_position_embeddings}")
        shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        self.max_len = max_len
        self.length = 0
        self.padding: torch.Tensor | None = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (B, Hkv, T, D); return everything cached so far (B, Hkv, L+T, D)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def record_padding(self, valid: torch.Tensor) -> None:
        """Append the real-token flags (B, T) of the positions being added."""
        self.padding = valid if self.padding is None else torch.cat([self.padding, valid], dim=1)

    def advance(self, steps: int) -> None:
        if self.padding is not None and self.padding.shape[1] < self.length + steps:
            pad = self.length + steps - self.padding.shape[1]
            self.padding = torch.cat([self.padding, self.padding.new_ones(self.padding.shape[0], pad)], dim=1)
        self.length += steps
