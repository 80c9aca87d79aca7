"""``GPTConfig`` and the named presets of ``shardkit.models.GPT``.

Presets go from "tiny" (trains in seconds on a CPU) to 7B-class shapes, which
are meant to be built on the meta device (for memory estimates) rather than
materialised on a laptop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(kw_only=True)
class GPTConfig:
    """Shape of a Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention)."""

    vocab_size: int = 32000  # number of token embeddings
    hidden_size: int = 256  # model width
    intermediate_size: int = 688  # SwiGLU inner width
    num_layers: int = 4  # decoder blocks
    num_heads: int = 4  # query heads
    num_kv_heads: int = 4  # key/value heads; must divide num_heads (GQA when smaller)
    max_position_embeddings: int = 2048  # longest sequence the RoPE tables and KV cache cover
    rope_theta: float = 10000.0  # RoPE base frequency
    rms_norm_eps: float = 1e-6  # RMSNorm epsilon
    tie_word_embeddings: bool = False  # share the input embedding and the output head
    initializer_range: float = 0.02  # std of the normal init of linear and embedding weights

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"GPTConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"GPTConfig.num_heads ({self.num_heads}) must be divisible by "
                             f"num_kv_heads ({self.num_kv_heads})")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"GPTConfig head size {self.hidden_size // self.num_heads} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def num_parameters(self) -> int:
        """Parameter count, computed from the shapes (no model needed)."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = h * h * 2 + h * kv * 2  # q, o, k, v
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h  # two RMSNorm weights
        embed = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return embed + head + self.num_layers * per_layer + h

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPTConfig":
        """The named preset (see ``PRESETS``), with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT preset {name!r}; expected one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, GPTConfig] = {
    # ~0.1M parameters: unit tests and CPU smoke runs.
    "tiny": GPTConfig(vocab_size=256, hidden_size=64, intermediate_size=176, num_layers=2,
                      num_heads=4, num_kv_heads=2, max_position_embeddings=512, tie_word_embeddings=True),
    # ~10M: CPU benchmarks.
    "small": GPTConfig(vocab_size=8192, hidden_size=256, intermediate_size=688, num_layers=6,
                       num_heads=8, num_kv_heads=4, max_position_embeddings=1024, tie_word_embeddings=True),
    # SmolLM2-135M shape.
    "135m": GPTConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                      num_heads=9, num_kv_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=True),
    # Llama-3.2-1B shape.
    "1b": GPTConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
                    num_heads=32, num_kv_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True),
    # Llama-2-7B shape (multi-head attention, untied head).
    "7b": GPTConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                    num_heads=32, num_kv_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5),
    # Llama-3-8B shape (GQA).
    "8b": GPTConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
                    num_heads=32, num_kv_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
                    rms_norm_eps=1e-5),
}
