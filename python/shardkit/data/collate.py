"""Batching tokenized examples into tensors. Padding is by length, never by id.

Every collator right-pads ``input_ids`` with ``pad_token_id`` and builds the
masks from each example's *length*, so a real EOS that equals the pad id is
still attended to and still trained on (trl#1623).
"""

from __future__ import annotations

from typing import Any

import torch


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _length_mask(rows: list[list[int]]) -> torch.Tensor:
    return _pad([[1] * len(r) for r in rows], 0)


def collate_lm(examples: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``labels`` (B, T) of SFT/pretraining examples."""
    ids = [e["input_ids"] for e in examples]
    return {"input_ids": _pad(ids, pad_token_id), "attention_mask": _length_mask(ids),
            "labels": _pad([e["labels"] for e in examples], -100)}


def collate_packed(examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Padding-free batch: all packed rows flattened into one (1, N) row.

    ``position_ids`` restart at 0 per document (from ``seq_lengths``) so that
    attention stays inside each document, and the first token of each document
    gets no label: predicting it from the previous document would be noise.
    """
    input_ids = torch.tensor([t for e in examples for t in e["input_ids"]], dtype=torch.long)[None]
    labels = torch.tensor([t for e in examples for t in e["labels"]], dtype=torch.long)[None]
    lengths = [n for e in examples for n in e.get("seq_lengths", [len(e["input_ids"])])]
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    labels[position_ids == 0] = -100
    return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}


def collate_preference(examples: list[dict[str, Any]], pad_token_id: int,
                       max_length: int | None) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, (2B, T): ``input_ids``, ``attention_mask``, ``completion_mask``.

    Precomputed ``ref_chosen_logps``/``ref_rejected_logps`` (B,) pass through.
    """
    ids, masks = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for e in examples:
            row = e["prompt_ids"] + e[key]
            mask = [0] * len(e["prompt_ids"]) + [1] * len(e[key])
            ids.append(row[:max_length] if max_length else row)
            masks.append(mask[:max_length] if max_length else mask)
    out = {"input_ids": _pad(ids, pad_token_id), "attention_mask": _length_mask(ids),
           "completion_mask": _pad(masks, 0)}
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        if key in examples[0]:
            out[key] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
    return out


def collate_unpaired(examples: list[dict[str, Any]], pad_token_id: int,
                     max_length: int | None) -> dict[str, torch.Tensor]:
    """KTO batch: the matched rows and, when present, the mismatched ``KL_`` rows, plus ``label`` (B,)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, key in (("", "completion_ids"), ("KL_", "KL_completion_ids")):
        if key not in examples[0]:
            continue
        ids = [(e["prompt_ids"] + e[key])[:max_length] if max_length else e["prompt_ids"] + e[key] for e in examples]
        masks = [([0] * len(e["prompt_ids"]) + [1] * len(e[key])) for e in examples]
        masks = [m[:max_length] if max_length else m for m in masks]
        out[f"{prefix}input_ids"] = _pad(ids, pad_token_id)
        out[f"{prefix}attention_mask"] = _length_mask(ids)
        out[f"{prefix}completion_mask"] = _pad(masks, 0)
    for key in ("ref_logps", "ref_KL_logps"):
        if key in examples[0]:
            out[key] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
    out["label"] = torch.tensor([e["label"] for e in examples], dtype=torch.bool)
    return out
