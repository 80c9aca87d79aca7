"""``GPTForSequenceClassification``: a shardkit ``GPT`` backbone with a scalar (or N-label) score head.

The reward model of RLHF: the decoder runs as usual, and a bias-free linear
``score`` reads the final hidden state of each row's *last real token*
(the last position where ``attention_mask`` is 1; padding is found by length,
never by id, so a real EOS equal to the pad id is still read). This matches
HF's ``LlamaForSequenceClassification`` whenever the pad id occurs only in
padding, so weights copied from one (``from_hf``) give the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shardkit.models.attention_mask import build_attention_mask
from shardkit.models.gpt import GPT


@dataclass
class SequenceClassifierOutput:
    """HF-style output: ``logits`` (B, num_labels), one score row per sequence."""

    logits: torch.Tensor


class GPTForSequenceClassification(nn.Module):
    """A ``GPT`` whose LM head is replaced by a ``score`` head; ``num_labels=1`` is a reward model.

    ``GPTForSequenceClassification(GPT(config))`` starts a reward model from a
    (pre)trained LM: the backbone is shared, the LM head is left unused, and
    ``score`` starts at normal(0, initializer_range) as in HF.
    """

    def __init__(self, backbone: GPT, num_labels: int = 1) -> None:
        super().__init__()
        if not isinstance(backbone, GPT):
            raise TypeError(f"backbone must be a shardkit GPT, got {type(backbone).__name__}")
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
        self.model = backbone
        self.config = backbone.config
        self.num_labels = num_labels
        self.score = nn.Linear(backbone.config.hidden_size, num_labels, bias=False)
        dtype = backbone.embed_tokens.weight.dtype
        self.score.to(device=backbone.embed_tokens.weight.device, dtype=dtype)
        nn.init.normal_(self.score.weight, mean=0.0, std=backbone.config.initializer_range)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final normalised hidden states (B, T, H) of the backbone."""
        gpt = self.model
        b, t = input_ids.shape
        if t > gpt.config.max_position_embeddings:
            raise ValueError(f"sequence length {t} exceeds max_position_embeddings {gpt.config.max_position_embeddings}")
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device).expand(b, t)
        x = gpt.embed_tokens(input_ids)  # (B, T, H)
        cos, sin = gpt.rotary(position_ids, x.dtype)
        mask = build_attention_mask(attention_mask, position_ids, 0, None)
        for layer in gpt.layers:
            x = layer(x, cos, sin, mask, None)
        return gpt.norm(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, use_cache: bool | None = None) -> SequenceClassifierOutput:
        """Scores (B, num_labels) at each row's last real token. ``use_cache`` is accepted and ignored."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        if attention_mask is None:
            last = torch.full((b,), t - 1, dtype=torch.long, device=input_ids.device)
        else:
            # The last position whose mask is 1 (right or left padding alike).
            positions = torch.arange(t, device=input_ids.device).expand(b, t)
            last = (positions * attention_mask.long()).argmax(-1)  # (B,)
            # Right padding needs no mask under causal attention (a real token only sees real ones):
            # dropping it keeps SDPA's is_causal fast path.
            if bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
                attention_mask = None
        hidden = self.hidden_states(input_ids, attention_mask, position_ids)  # (B, T, H)
        pooled = hidden[torch.arange(b, device=hidden.device), last]  # (B, H)
        return SequenceClassifierOutput(logits=self.score(pooled))

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> GPTForSequenceClassification:
        """A copy of an HF ``LlamaForSequenceClassification`` (backbone and score weights)."""
        from transformers import LlamaConfig, LlamaForCausalLM

        if not hasattr(hf_model, "score") or not hasattr(hf_model, "model"):
            raise TypeError("from_hf expects an HF LlamaForSequenceClassification (with .model and .score)")
        cfg = LlamaConfig.from_dict(hf_model.config.to_dict())
        with torch.device("meta"):
            causal = LlamaForCausalLM(cfg)
        causal.model = hf_model.model
        causal.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            causal.lm_head.weight = hf_model.model.embed_tokens.weight
        out = cls(GPT.from_hf_llama(causal), num_labels=hf_model.score.out_features)
        with torch.no_grad():
            out.score.weight.copy_(hf_model.score.weight)
        return out
