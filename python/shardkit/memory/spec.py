"""The shape of a Llama-style decoder, and its parameter counts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace
from typing import Any


@dataclass(frozen=True, kw_only=True)
class DecoderSpec:
    """Shape of a Llama-style decoder (pre-norm, GQA attention, SwiGLU MLP, no biases)."""

    vocab: int  # vocabulary size
    hidden: int  # model width
    layers: int  # number of transformer blocks
    heads: int  # attention (query) heads
    kv_heads: int  # key/value heads (== heads without grouped-query attention)
    intermediate: int  # SwiGLU inner width
    tie_embeddings: bool = False  # the LM head shares the embedding matrix

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "tie_embeddings":
                if not isinstance(value, bool):
                    raise TypeError(f"tie_embeddings: expected a bool, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field.name}: expected a positive int, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden: expected a multiple of heads={self.heads}, got {self.hidden}")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads: expected a divisor of heads={self.heads}, got {self.kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_hidden(self) -> int:
        """Width of the key (or value) projection: kv_heads * head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def block_params(self) -> int:
        """Parameters of one block: q, k, v, o, gate, up, down and two RMSNorm weights."""
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_hidden
        mlp = 3 * self.hidden * self.intermediate
        return attention + mlp + 2 * self.hidden

    @property
    def root_params(self) -> int:
        """Parameters outside the blocks: embedding, final norm, LM head unless tied."""
        head = 0 if self.tie_embeddings else self.vocab * self.hidden
        return self.vocab * self.hidden + self.hidden + head

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.root_params

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, config: Any) -> DecoderSpec:
        """Read a Hugging Face ``LlamaConfig``-like object (``vocab_size``, ``hidden_size``, ...)."""
        try:
            return cls(
                vocab=config.vocab_size,
                hidden=config.hidden_size,
                layers=config.num_hidden_layers,
                heads=config.num_attention_heads,
                kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                intermediate=config.intermediate_size,
                tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            )
        except AttributeError as exc:
            raise TypeError(f"config: expected a Llama-style config with vocab_size, hidden_size, ...: {exc}") from None


def load_hf_config(path: str) -> DecoderSpec:
    """Read a Hugging Face ``config.json`` of a Llama-style model (plain JSON, no code runs)."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except OSError as exc:
        raise ValueError(f"config: cannot read {path!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config: {path!r} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config: expected a JSON object in {path!r}, got {type(raw).__name__}")
    return DecoderSpec.from_hf_config(SimpleNamespace(**raw))


# Published shapes, for the CLI's --preset and quick what-ifs.
PRESETS: dict[str, DecoderSpec] = {
    "llama2-7b": DecoderSpec(vocab=32000, hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008),
    "llama2-13b": DecoderSpec(vocab=32000, hidden=5120, layers=40, heads=40, kv_heads=40, intermediate=13824),
    "llama3-8b": DecoderSpec(vocab=128256, hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336),
    "llama3-70b": DecoderSpec(vocab=128256, hidden=8192, layers=80, heads=64, kv_heads=8, intermediate=28672),
    "smollm2-135m": DecoderSpec(
        vocab=49152, hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, tie_embeddings=True
    ),
}
