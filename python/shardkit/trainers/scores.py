"""Scalar-head models (value and reward models): one number per position.

PPO's value model and reward model are "sequence-classification style": a
causal backbone with a scalar head. Two shapes are accepted:

- an HF ``AutoModelForSequenceClassification`` with ``num_labels=1``: its
  backbone (``getattr(model, model.base_model_prefix)``) runs and its ``score``
  head is applied at *every* position (HF's own forward would pool one
  position, picked by pad id, which breaks when pad equals EOS);
- any model whose ``forward(input_ids, attention_mask, position_ids)`` returns
  ``.logits`` of shape (B, T, 1), e.g. a ``shardkit.models.GPT`` whose
  ``lm_head`` is ``nn.Linear(hidden_size, 1)`` (see ``scalar_head_gpt``).

A model of neither shape raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import torch
from torch import nn


def scalar_head_gpt(model: nn.Module, bias: bool = False) -> nn.Module:
    """Turn a ``shardkit.models.GPT`` into a scalar model: its ``lm_head`` becomes ``Linear(hidden, 1)``.

    A tied head is untied (the embedding stays). The new head is initialised
    like the GPT's other linear layers. Returns the same model.
    """
    hidden = model.config.hidden_size
    ref = next(model.parameters())
    head = nn.Linear(hidden, 1, bias=bias, device=ref.device, dtype=ref.dtype)
    nn.init.normal_(head.weight, mean=0.0, std=model.config.initializer_range)
    if bias:
        nn.init.zeros_(head.bias)
    model.lm_head = head
    return model


def _hf_scalar_head(model: nn.Module) -> nn.Module | None:
    """The ``score`` head of an HF sequence-classification model, or None for other models."""
    score = getattr(model, "score", None)
    prefix = getattr(model, "base_model_prefix", None)
    if isinstance(score, nn.Module) and prefix and hasattr(model, prefix):
        return score
    return None


def check_scalar_model(model: nn.Module, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``model`` has a scalar head (a cheap, shape-only check)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module with a scalar head, got {type(model).__name__}")
    head = _hf_scalar_head(model)
    if head is None:
        head = getattr(model, "lm_head", None)
        if head is None:
            return  # some other scalar model: its forward's output shape is checked on first use
    out = getattr(head, "out_features", None)
    if out is None and getattr(head, "weight", None) is not None:
        out = head.weight.shape[0]
    if out != 1:
        raise ValueError(
            f"{name}: the head must be scalar (1 output per position, e.g. "
            f"AutoModelForSequenceClassification with num_labels=1 or scalar_head_gpt(gpt)), "
            f"got {out} outputs"
        )


def position_scores(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    name: str = "model",
) -> torch.Tensor:
    """The scalar output (B, T), fp32, of ``model`` at every position of ``input_ids`` (B, T)."""
    head = _hf_scalar_head(model)
    if head is not None:
        backbone = getattr(model, model.base_model_prefix)
        out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        values = head(hidden)  # (B, T, 1)
    else:
        values = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits
    if values.dim() != 3 or values.shape[-1] != 1:
        raise ValueError(f"{name}: the head must be scalar (output (batch, seq, 1)), got shape {tuple(values.shape)}")
    return values[..., 0].float()
