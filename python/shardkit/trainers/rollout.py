"""Rollouts for GRPO: prompts to completions (ours, HF's or a ``rollout_func``), completions to rewards.

``rollout_func(prompts, trainer) -> dict`` follows TRL 1.16's contract: it
receives one prompt per completion (each prompt ``num_generations`` times in
a row), once per generation batch, and returns unpadded id lists
``prompt_ids`` and ``completion_ids`` and ``logprobs`` (one entry per
completion); any other key is a per-completion list (or one value for all)
handed to the reward functions by name.

Reward functions are callables ``f(prompts=, completions=, completion_ids=,
**columns, trainer_state=, log_extra=, log_metric=) -> list[float | None]``
(None: does not apply to that completion) or sequence-classification models
with a scalar head, which score ``prompt + completion``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn

from shardkit.data.tokenize import encode_chat, encode_text

ROLLOUT_KEYS = ("prompt_ids", "completion_ids", "logprobs")


def is_conversational(prompt) -> bool:
    return isinstance(prompt, list)


def tokenize_prompts(tokenizer, prompts: list) -> list[list[int]]:
    """Token ids of each prompt: conversations with the generation prompt, strings as they are."""
    if is_conversational(prompts[0]):
        return [encode_chat(tokenizer, p, add_generation_prompt=True)[0] for p in prompts]
    return [encode_text(tokenizer, p) for p in prompts]


def left_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) (B, T) with each row right-aligned."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def right_pad(rows: list[list], pad, device, dtype=torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, mask) (B, T) with each row left-aligned."""
    width = max(1, max(len(r) for r in rows))
    values = torch.full((len(rows), width), pad, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            values[i, :len(r)] = torch.tensor(list(r), dtype=dtype)
            mask[i, :len(r)] = 1
    return values.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def cut_at_eos(completions: torch.Tensor, eos_ids: list[int]) -> list[list[int]]:
    """Each row of generated ids (B, N) up to and including its first EOS."""
    is_eos = torch.isin(completions, torch.tensor(eos_ids, device=completions.device))
    has = is_eos.any(dim=1)
    first = torch.where(has, is_eos.int().argmax(dim=1), torch.full_like(has, completions.shape[1], dtype=torch.long))
    rows = completions.cpu().tolist()
    return [row[:n + 1] if h else row for row, n, h in zip(rows, first.tolist(), has.tolist())]


@torch.no_grad()
def sample_completions(model, prompt_ids: list[list[int]], *, max_new_tokens: int, temperature: float, top_p: float,
                       top_k: int, eos_ids: list[int], pad_id: int) -> list[list[int]]:
    """Sample one completion per prompt, all rows in one batched, KV-cached generation.

    A shardkit ``GPT`` decodes from a ``DecodeSnapshot`` (weights read, or
    gathered when sharded, once per call); any other model uses its HF ``generate``. Completions end after their first EOS or at ``max_new_tokens``.
    """
    from shardkit.models import GPT

    device = next(model.parameters()).device
    ids, mask = left_pad(prompt_ids, pad_id, device)
    if isinstance(model, GPT):
        from shardkit.models.fast_decode import DecodeSnapshot

        limit = model.config.max_position_embeddings
        if ids.shape[1] + max_new_tokens > limit:
            raise ValueError(f"max_completion_length: the longest prompt ({ids.shape[1]} tokens) plus "
                             f"{max_new_tokens} new tokens exceeds the model's max_position_embeddings ({limit})")
        # Weights read (gathered, when sharded) once for the whole generation batch, in a decoding layout.
        out = DecodeSnapshot(model).generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                             temperature=temperature, top_k=top_k or None,
                                             top_p=None if top_p >= 1.0 else top_p, stop_tokens=eos_ids,
                                             pad_token_id=pad_id)
    else:
        if not hasattr(model, "generate"):
            raise TypeError(f"model {type(model).__name__} has no generate(); pass a rollout_func")
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                             top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
                             pad_token_id=pad_id, use_cache=True)
    return cut_at_eos(out[:, ids.shape[1]:], eos_ids)


def check_rollout(output, n: int) -> tuple[list[list[int]], list[list[int]], object, dict]:
    """Validate a ``rollout_func`` result for ``n`` completions; returns (prompt_ids, completion_ids, logprobs, extra)."""
    if not isinstance(output, dict):
        raise TypeError(f"rollout_func must return a dict with keys {list(ROLLOUT_KEYS)}, got {type(output).__name__}")
    missing = [k for k in ROLLOUT_KEYS if k not in output]
    if missing:
        raise ValueError(f"rollout_func result is missing keys {missing}; it must return {list(ROLLOUT_KEYS)} "
                         f"(one entry per completion) plus any extra per-completion fields")
    for key in ("prompt_ids", "completion_ids"):
        rows = output[key]
        if isinstance(rows, torch.Tensor) or not isinstance(rows, Sequence) or len(rows) != n:
            got = len(rows) if isinstance(rows, Sequence) else type(rows).__name__
            raise ValueError(f"rollout_func result {key!r} must be a list of {n} unpadded id lists (one per "
                             f"completion: each prompt num_generations times), got {got}")
        for i, row in enumerate(rows):
            if isinstance(row, torch.Tensor):
                row = row.tolist()
            if not isinstance(row, Sequence) or not all(isinstance(t, numbers.Integral) for t in row):
                raise ValueError(f"rollout_func result {key!r}[{i}] must be a list of token ids")
        if key == "prompt_ids" and any(len(r) == 0 for r in rows):
            raise ValueError("rollout_func result 'prompt_ids' has an empty prompt")
    logprobs = output["logprobs"]
    if logprobs is not None and (not isinstance(logprobs, Sequence) or len(logprobs) != n):
        raise ValueError(f"rollout_func result 'logprobs' must be None or a list of {n} per-token lists")
    extra = {k: v for k, v in output.items() if k not in ROLLOUT_KEYS}
    for key, value in extra.items():
        if isinstance(value, list) and len(value) != n:
            raise ValueError(f"rollout_func result {key!r} has {len(value)} values; per-completion fields need {n} "
                             "(a non-list value is shared by all completions)")
    to_list = (lambda r: r.tolist() if isinstance(r, torch.Tensor) else [int(t) for t in r])
    return ([to_list(r) for r in output["prompt_ids"]], [to_list(r) for r in output["completion_ids"]], logprobs,
            extra)


def reward_func_name(func) -> str:
    if isinstance(func, nn.Module):
        name = getattr(getattr(func, "config", None), "_name_or_path", "") or type(func).__name__
        return name.split("/")[-1]
    if isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def check_rewards(values, name: str, n: int) -> list[float]:
    """Rewards of one function as floats (None -> NaN: not applicable); raises on a wrong count, NaN or non-numbers."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"reward function {name!r} must return a list of {n} numbers (or None), "
                        f"got {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"reward function {name!r} returned {len(values)} rewards, expected {n} "
                         "(one per completion)")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(float("nan"))
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"reward function {name!r} returned a non-number at index {i}: {v!r} "
                            "(use None for 'does not apply')")
        if not math.isfinite(float(v)):
            raise ValueError(f"reward function {name!r} returned {v} at index {i}; rewards must be finite "
                             "(use None for 'does not apply')")
        out.append(float(v))
    return out


@torch.no_grad()
def model_rewards(model, tokenizer, prompts: list, completions: list) -> list[float]:
    """Scores of a sequence-classification reward model on ``prompt + completion`` (texts or conversations)."""
    from shardkit.trainers.reward import reward_scores

    if is_conversational(prompts[0]):
        rows = [encode_chat(tokenizer, p + c)[0] for p, c in zip(prompts, completions)]
    else:
        rows = [list(tokenizer(text=p + c, add_special_tokens=False)["input_ids"]) for p, c in zip(prompts, completions)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    ids, mask = right_pad(rows, pad, device)
    return reward_scores(model, ids, mask).float().cpu().tolist()


def compute_rewards(funcs: list, names: list[str], tokenizers: list, inputs: list[dict], prompts: list,
                    completions: list, completion_ids: list[list[int]], extras: dict[str, Callable]) -> torch.Tensor:
    """(N, F) rewards of every completion under every reward function; NaN where a function returned None."""
    n = len(prompts)
    keys = [k for k in inputs[0] if k not in ("prompt", "completion", "completion_ids")]
    columns = {k: [x.get(k) for x in inputs] for k in keys}
    out = torch.empty(n, len(funcs), dtype=torch.float32)
    for j, (func, name, tok) in enumerate(zip(funcs, names, tokenizers)):
        if isinstance(func, nn.Module):
            values = model_rewards(func, tok, prompts, completions)
        else:
            values = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns,
                          **extras)
        out[:, j] = torch.tensor(check_rewards(values, name, n), dtype=torch.float32)
    return out
