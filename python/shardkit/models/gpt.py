"""``GPT``: a Llama-style decoder (RMSNorm, RoPE, SwiGLU, GQA, SDPA attention).

The numerics follow Hugging Face's ``LlamaForCausalLM`` (RMSNorm in fp32,
rotate-half RoPE), so weights copied from one (``GPT.from_hf_llama``) give the
same logits. The forward signature is the subset of HF's that the trainers use
(``input_ids``, ``attention_mask``, ``position_ids``), so a trainer treats this
model and an HF causal LM alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shardkit.models.attention_mask import build_attention_mask
from shardkit.models.config import GPTConfig
from shardkit.models.kv_cache import KVCache


@dataclass
class CausalLMOutput:
    """What ``GPT.forward`` returns: HF-style attribute names."""

    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # mean next-token NLL when labels were given


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 whatever the activation dtype: bf16 squares lose too much.
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables of rotate-half RoPE, computed per call from position ids."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inv_freq(None), persistent=False)

    def _inv_freq(self, device) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        return 1.0 / (self.theta**exponents)

    def reset_parameters(self) -> None:
        """Recompute the table (after ``to_empty`` from the meta device, where it holds no values)."""
        with torch.no_grad():
            self.inv_freq.copy_(self._inv_freq(self.inv_freq.device))

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: (B, T) -> cos, sin: (B, 1, T, head_dim)
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :].float()
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, d
        self.q_proj = nn.Linear(h, config.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, config.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, config.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(config.num_heads * d, h, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | None) -> torch.Tensor:
        b, t, _ = x.shape
        # (B, T, H*D) -> (B, H, T, D). Head counts come from the shapes: under tensor
        # parallelism each rank holds num_heads / tp query heads (and kv heads alike).
        q = self.q_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, Hkv, L+T, D)
        if k.shape[1] != q.shape[1]:
            # GQA: each KV head serves num_heads // num_kv_heads query heads.
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, cache) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    """Llama-style causal language model.

    ``GPT(GPTConfig(...))`` or ``GPT.from_preset("tiny")``. Build large presets
    without memory with ``with torch.device("meta"): GPT.from_preset("7b")``.
    Parameter names match HF Llama's without the ``model.`` prefix.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.reset_parameters()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPT":
        """A freshly initialised model of the named preset (see ``shardkit.models.PRESETS``)."""
        return cls(GPTConfig.from_preset(name, **overrides))

    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) linear/embedding weights, ones for norms (as HF Llama)."""
        if self.embed_tokens.weight.is_meta:
            return
        for module in self.modules():
            self.init_weights(module)

    def init_weights(self, module: nn.Module) -> None:
        """Initialise the parameters and buffers ``module`` itself holds, as ``reset_parameters`` does.

        The ``param_init_fn`` for a model built on the meta device::

            with torch.device("meta"):
                model = GPT(config)
            fsdp.shard(model, units=[Block], param_init_fn=model.init_weights)
        """
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (RMSNorm, RotaryEmbedding)):
            module.reset_parameters()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KVCache | None = None,
        use_cache: bool | None = None,
    ) -> CausalLMOutput:
        """Logits for ``input_ids`` (B, T).

        ``attention_mask`` (B, T): 1 for real tokens, 0 for padding. For a
        packed batch pass ``position_ids`` that restart at 0 at every document:
        attention then stays inside each document. With ``labels`` (B, T,
        -100 = ignored) the output also carries the mean next-token loss.
        ``cache`` continues a generation (see ``generate``); ``use_cache`` is
        accepted for HF call compatibility and ignored (pass a ``cache``).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        past = 0 if cache is None else cache.length
        if past + t > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {past + t} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        packed = position_ids is not None  # default positions hold one document per row: nothing to look for
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=input_ids.device).expand(b, t)
        x = self.embed_tokens(input_ids)  # (B, T, H)
        cos, sin = self.rotary(position_ids, x.dtype)
        mask = build_attention_mask(attention_mask, position_ids, past, cache, find_documents=packed)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(t)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(logits=logits, loss=loss)

    def generate(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """Sample a continuation with a KV cache; see ``shardkit.models.generation.generate``."""
        from shardkit.models.generation import generate

        return generate(self, input_ids, **kwargs)

    @classmethod
    def from_hf_llama(cls, hf_model: nn.Module) -> "GPT":
        """A GPT with the config and a copy of the weights of an HF ``LlamaForCausalLM``."""
        c = hf_model.config
        if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
            raise ValueError("from_hf_llama: attention_bias/mlp_bias Llamas are not supported")
        # Newer transformers keep theta in rope_parameters (also exposed as rope_scaling).
        rope = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"from_hf_llama: rope_type {rope.get('rope_type')!r} is not supported")
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        if head_dim * c.num_attention_heads != c.hidden_size:
            raise ValueError("from_hf_llama: head_dim * num_attention_heads must equal hidden_size")
        rope_theta = getattr(c, "rope_theta", None) or rope.get("rope_theta", 10000.0)
        config = GPTConfig(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
            num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
            num_kv_heads=c.num_key_value_heads or c.num_attention_heads,
            max_position_embeddings=c.max_position_embeddings, rope_theta=float(rope_theta),
            rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=bool(c.tie_word_embeddings),
        )
        with torch.device("meta"):
            model = cls(config)
        state = {k.removeprefix("model."): v for k, v in hf_model.state_dict().items()}
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        model.to_empty(device=next(hf_model.parameters()).device)
        model.rotary.inv_freq.copy_(RotaryEmbedding(config.head_dim, config.rope_theta).inv_freq)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"from_hf_llama: missing {missing}, unexpected {unexpected}")
        if config.tie_word_embeddings:
            model.lm_head.weight = model.embed_tokens.weight
        return model.to(next(hf_model.parameters()).dtype)
