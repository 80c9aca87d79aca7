"""A small Llama-style decoder whose saved activations the estimator counts.

The activation formula in :mod:`shardkit.memory.activations` itemizes what
torch autograd saves for exactly this architecture (pre-norm RMSNorm,
grouped-query attention with rotary embeddings and the fused SDPA kernel,
SwiGLU MLP, untied LM head, fp32 loss). Tests and ``benchmarks/bench_memory``
build it to compare the estimate with what autograd really holds; it is not a
training model (the project's GPT lives in ``shardkit.models``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shardkit.memory.spec import DecoderSpec


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    # x: (B, H, S, D) -> (-x2, x1) halves swapped, as in Llama's RoPE.
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryEmbedding(nn.Module):
    """cos/sin tables as non-persistent buffers, so they are not activations."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (S, D/2)
        emb = torch.cat((angles, angles), dim=-1)  # (S, D)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, H, S, D); the tables broadcast over B and H.
        seq = x.shape[-2]
        return x * self.cos[:seq] + _rotate_half(x) * self.sin[:seq]


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, spec: DecoderSpec, max_seq_len: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kv_heads, spec.head_dim
        hidden, kv_hidden = spec.hidden, spec.kv_heads * spec.head_dim
        self.attn_norm = nn.RMSNorm(hidden, eps=1e-5)
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, kv_hidden, bias=False)
        self.v_proj = nn.Linear(hidden, kv_hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)
        self.rope = RotaryEmbedding(spec.head_dim, max_seq_len)
        self.mlp_norm = nn.RMSNorm(hidden, eps=1e-5)
        self.gate_proj = nn.Linear(hidden, spec.intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, spec.intermediate, bias=False)
        self.down_proj = nn.Linear(spec.intermediate, hidden, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, S, hidden)
        batch, seq, hidden = x.shape
        normed = self.attn_norm(x)
        q = self.q_proj(normed).view(batch, seq, self.heads, self.head_dim).transpose(1, 2)  # (B, H, S, D)
        k = self.k_proj(normed).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, D)
        v = self.v_proj(normed).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rope(q), self.rope(k)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv_heads != self.heads)
        attn = attn.transpose(1, 2).reshape(batch, seq, hidden)  # (B, S, hidden)
        h = x + self.dropout(self.o_proj(attn))
        normed = self.mlp_norm(h)
        mlp = self.down_proj(F.silu(self.gate_proj(normed)) * self.up_proj(normed))  # (B, S, hidden)
        return h + self.dropout(mlp)


class ReferenceDecoder(nn.Module):
    """Embedding, ``spec.layers`` blocks in ``self.layers``, final norm, untied head.

    ``forward(input_ids, labels)`` returns the mean next-token cross entropy,
    computed in fp32 whatever the parameter dtype.
    """

    def __init__(self, spec: DecoderSpec, max_seq_len: int = 2048, dropout: float = 0.0):
        super().__init__()
        if spec.tie_embeddings:
            raise ValueError("spec.tie_embeddings: the reference decoder has an untied head, expected False")
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab, spec.hidden)
        self.layers = nn.ModuleList(DecoderBlock(spec, max_seq_len, dropout) for _ in range(spec.layers))
        self.norm = nn.RMSNorm(spec.hidden, eps=1e-5)
        self.lm_head = nn.Linear(spec.hidden, spec.vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # input_ids, labels: (B, S) int64
        x = self.embed(input_ids)  # (B, S, hidden)
        for block in self.layers:
            x = block(x)
        logits = self.lm_head(self.norm(x))  # (B, S, vocab)
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
