"""``DecodeSnapshot``: a decoding-only copy of a ``GPT``'s weights, for RL rollouts.

A rollout samples many tokens from weights that do not change until the next
optimizer step. So the weights are read *once per generation batch* into a
layout made for decoding, and every token of the batch reuses it:

* q/k/v projections fused into one matrix, gate/up into another: 4 matmuls
  per layer and token instead of 7, which is most of the cost of decoding
  small models, where each matmul is short;
* RoPE cos/sin as tables, looked up by position instead of recomputed;
* attention over the KV cache with SDPA's grouped-query mode, so the cache
  is never copied per head (``repeat_interleave``) at each step;
* logits only for the last position;
* a separate one-token step (``_step``) on 2-D (B, hidden) activations, with
  RoPE applied to q and k in one op as ``x * cos + roll(x) * sin_signed``:
  about a third fewer ops per layer than the general forward, bitwise the
  same values (a decode step of a small model is bound by op count).

Under ``shardkit.fsdp.shard()`` the full weights are gathered once, here,
rather than once per forward (per token) by the sharding hooks.

The numerics are GPT's (fp32 RMSNorm, rotate-half RoPE with the same
tables); ``tests/models/test_fast_decode.py`` checks the logits against
``GPT.forward`` with a KV cache. ``generate`` has the contract of
``shardkit.models.generation.generate``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from shardkit.models.generation import _sample, check_generate_args


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class DecodeSnapshot:
    """Frozen, fused weights of a ``GPT`` (sharded or not) and a KV-cached sampler over them."""

    @torch.no_grad()
    def __init__(self, model) -> None:
        from shardkit.models.gpt import GPT

        if not isinstance(model, GPT):
            raise TypeError(f"DecodeSnapshot needs a shardkit GPT, got {type(model).__name__}")
        cfg = self.config = model.config
        from shardkit import fsdp

        if fsdp.is_sharded(model):
            from shardkit.fsdp.full_state import full_state_dict

            state = full_state_dict(model, rank0_only=False)  # one gather per snapshot, every rank
        else:
            state = model.state_dict()
        w = {k: v.detach() for k, v in state.items()}
        self.embed = w["embed_tokens.weight"]
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self.lm_head = w.get("lm_head.weight", self.embed)
        self.norm = w["norm.weight"]
        self.layers = []
        for i in range(cfg.num_layers):
            p = f"layers.{i}."
            self.layers.append((
                w[p + "input_layernorm.weight"],
                torch.cat([w[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]),  # (H*D + 2*Hkv*D, hidden)
                w[p + "self_attn.o_proj.weight"],
                w[p + "post_attention_layernorm.weight"],
                torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]]),  # (2*I, hidden)
                w[p + "mlp.down_proj.weight"],
            ))
        # RoPE tables computed exactly as GPT's RotaryEmbedding does, once for every position.
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64,
                                                          device=self.device).float() / cfg.head_dim))
        pos = torch.arange(cfg.max_position_embeddings, device=self.device).float()
        freqs = pos[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # (P, D)
        self.cos, self.sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        # rotate_half(x) * sin == roll(x, D/2) * sin_signed exactly: (-a) * s == a * (-s) in IEEE arithmetic.
        half = cfg.head_dim // 2
        self.sin_signed = torch.cat([-self.sin[:, :half], self.sin[:, half:]], dim=-1)  # (P, D)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, keys: list, values: list, start: int,
                 mask: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, V) of the last of ``ids`` (B, T), whose k/v go to cache slots [start, start+T)."""
        if ids.shape[1] == 1:
            return self._step(ids[:, 0], positions[:, 0], keys, values, start, mask)
        return self._forward_any(ids, positions, keys, values, start, mask)

    def _forward_any(self, ids: torch.Tensor, positions: torch.Tensor, keys: list, values: list, start: int,
                     mask: torch.Tensor | None) -> torch.Tensor:
        """``_forward`` for any T (the prefill, and the reference ``_step`` is tested against)."""
        cfg = self.config
        b, t = ids.shape
        h, hkv, d, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_norm_eps
        end = start + t
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # (B, 1, T, D)
        x = F.embedding(ids, self.embed)  # (B, T, hidden)
        for i, (ln1, wqkv, wo, ln2, wgu, wdown) in enumerate(self.layers):
            qkv = _rms(x, ln1, eps) @ wqkv.T  # (B, T, (H + 2 Hkv) D)
            q, k, v = qkv.split([h * d, hkv * d, hkv * d], dim=-1)
            q = q.view(b, t, h, d).transpose(1, 2)
            k = k.view(b, t, hkv, d).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            keys[i][:, :, start:end] = k * cos + _rotate_half(k) * sin
            values[i][:, :, start:end] = v.view(b, t, hkv, d).transpose(1, 2)
            kk, vv = keys[i][:, :, :end], values[i][:, :, :end]
            if mask is None:
                out = F.scaled_dot_product_attention(q, kk, vv, is_causal=t > 1, enable_gqa=hkv != h)
            else:
                out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, enable_gqa=hkv != h)
            x = x + out.transpose(1, 2).reshape(b, t, h * d) @ wo.T
            gate, up = (_rms(x, ln2, eps) @ wgu.T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ wdown.T
        return _rms(x[:, -1], self.norm, eps) @ self.lm_head.T  # (B, V)

    def _step(self, token: torch.Tensor, position: torch.Tensor, keys: list, values: list, start: int,
              mask: torch.Tensor | None) -> torch.Tensor:
        """``_forward`` for one new token per row: token, position (B,); its k/v go to cache slot ``start``.

        The same arithmetic as ``_forward`` (same matmuls, same RoPE products
        and sums), in fewer ops: activations stay (B, hidden) and q, k get
        their rotation together.
        """
        cfg = self.config
        b = token.shape[0]
        h, hkv, d, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_norm_eps
        inter = cfg.intermediate_size
        cos, sin = self.cos[position][:, None], self.sin_signed[position][:, None]  # (B, 1, D)
        x = F.embedding(token, self.embed)  # (B, hidden)
        for i, (ln1, wqkv, wo, ln2, wgu, wdown) in enumerate(self.layers):
            qkv = F.linear(_rms(x, ln1, eps), wqkv)  # (B, (H + 2 Hkv) D)
            qk = qkv[:, :(h + hkv) * d].view(b, h + hkv, d)
            qk = qk * cos + qk.roll(d // 2, dims=-1) * sin  # RoPE of q and k heads at once
            keys[i][:, :, start] = qk[:, h:]
            values[i][:, :, start] = qkv[:, (h + hkv) * d:].view(b, hkv, d)
            kk, vv = keys[i][:, :, :start + 1], values[i][:, :, :start + 1]  # (B, Hkv, L, D)
            out = F.scaled_dot_product_attention(qk[:, :h, None], kk, vv, attn_mask=mask, enable_gqa=hkv != h)
            x = x + F.linear(out.view(b, h * d), wo)  # out: (B, H, 1, D)
            gate_up = F.linear(_rms(x, ln2, eps), wgu)  # (B, 2 I)
            x = x + F.linear(F.silu(gate_up[:, :inter]) * gate_up[:, inter:], wdown)
        return F.linear(_rms(x, self.norm, eps), self.lm_head)  # (B, V)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, *, max_new_tokens: int, attention_mask: torch.Tensor | None = None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 stop_tokens: int | Iterable[int] = (), pad_token_id: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue left-padded ``input_ids`` (B, T) by up to ``max_new_tokens``; returns (B, T + n).

        Same contract as ``shardkit.models.generation.generate``.
        """
        cfg = self.config
        check_generate_args(input_ids, max_new_tokens, temperature, top_k, top_p)
        b, t = input_ids.shape
        total = t + max_new_tokens
        if total > cfg.max_position_embeddings:
            raise ValueError(f"prompt ({t}) + max_new_tokens ({max_new_tokens}) exceeds max_position_embeddings "
                             f"{cfg.max_position_embeddings}")
        if isinstance(stop_tokens, int):
            stop_tokens = (stop_tokens,)
        device = input_ids.device
        stops = torch.tensor(sorted({int(s) for s in stop_tokens}), dtype=torch.long, device=device)
        if pad_token_id is None:
            pad_token_id = int(stops[0]) if len(stops) else 0
        if max_new_tokens == 0:
            return input_ids
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        valid = torch.ones(b, total, dtype=torch.bool, device=device)
        valid[:, :t] = attention_mask.bool()
        padded = not bool(valid.all())
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T): left padding shifts positions
        shape = (b, cfg.num_kv_heads, total, cfg.head_dim)
        keys = [torch.empty(shape, dtype=self.dtype, device=device) for _ in self.layers]
        values = [torch.empty(shape, dtype=self.dtype, device=device) for _ in self.layers]
        mask = None
        if padded:
            causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
            # (B, 1, T, T); a pad query may see itself, so no row is empty (GPT's rule).
            mask = (causal[None] & valid[:, None, :t]) | torch.eye(t, dtype=torch.bool, device=device)[None]
            mask = mask[:, None]
        logits = self._forward(input_ids, positions, keys, values, 0, mask)
        next_pos = positions[:, -1:] + 1  # (B, 1)
        out = torch.empty(b, total, dtype=input_ids.dtype, device=device)
        out[:, :t] = input_ids
        done = torch.zeros(b, dtype=torch.bool, device=device)
        # Without stop tokens no row ever finishes: skip the bookkeeping and the per-token host sync of
        # ``done.all()`` (on a GPU that sync would stall the launch queue at every token).
        has_stops = len(stops) > 0
        n = 0
        for step in range(max_new_tokens):
            token = _sample(logits.float(), temperature, top_k, top_p, generator)  # (B,)
            if has_stops:
                token = torch.where(done, torch.full_like(token, pad_token_id), token)
            out[:, t + step] = token
            n = step + 1
            if step == max_new_tokens - 1:
                break
            if has_stops:
                done = done | torch.isin(token, stops)
                if bool(done.all()):
                    break
            step_mask = valid[:, None, None, :t + step + 1] if padded else None  # (B, 1, 1, L)
            logits = self._forward(token[:, None], next_pos, keys, values, t + step, step_mask)
            next_pos = next_pos + 1
        return out[:, :t + n]
