"""Evaluating a stage's model in one process: perplexity, arithmetic exact match, samples."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from shardkit.speedrun.arithmetic import Problem, exact_match


def load_model(path: Path, config: dict, vocab_size: int):
    """The GPT saved at ``path`` (the gathered weights of a stage), fp32, in eval mode."""
    from safetensors.torch import load_file

    from shardkit.speedrun.worker import build_model

    model = build_model(config, vocab_size, seed=0)
    weights = load_file(path)
    weights.setdefault("lm_head.weight", weights.get("embed_tokens.weight"))
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    return model.eval()


@torch.no_grad()
def perplexity(model, ids: list[int], seq_len: int, max_windows: int) -> float:
    """exp of the mean next-token loss over non-overlapping windows of held-out tokens."""
    windows = min(max_windows, (len(ids) - 1) // seq_len)
    if windows < 1:
        raise ValueError(f"perplexity needs more than {seq_len} held-out tokens, got {len(ids)}")
    total, count = 0.0, 0
    for w in range(windows):
        chunk = torch.tensor(ids[w * seq_len : (w + 1) * seq_len + 1])[None]  # (1, T+1)
        logits = model(chunk[:, :-1]).logits.float()  # (1, T, V)
        total += float(torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum"))
        count += seq_len
    return math.exp(total / count)


def _left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def _completions(tokenizer, prompt_rows: list[list[int]], out: torch.Tensor, stops: set[int]) -> list[str]:
    texts = []
    width = max(len(r) for r in prompt_rows)
    for row in out[:, width:].tolist():
        kept = []
        for token in row:
            if token in stops:
                break
            kept.append(token)
        texts.append(tokenizer.decode(kept))
    return texts


def _stop_ids(tokenizer) -> set[int]:
    specials = tokenizer.bpe.special_tokens
    return {specials[name] for name in ("<|im_end|>", "<|endoftext|>") if name in specials}


@torch.no_grad()
def answer(model, tokenizer, problems: list[Problem], max_new_tokens: int, batch_size: int = 64,
           desc: str = "answers") -> list[str]:
    """The model's greedy answer to each problem, asked in the chat format."""
    stops = _stop_ids(tokenizer)
    answers: list[str] = []
    for i in tqdm(range(0, len(problems), batch_size), desc=desc, leave=False):
        rows = [tokenizer.apply_chat_template(p.prompt(), add_generation_prompt=True)
                for p in problems[i : i + batch_size]]
        ids, mask = _left_padded(rows, tokenizer.pad_token_id)
        out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, temperature=0.0,
                             stop_tokens=sorted(stops), pad_token_id=tokenizer.pad_token_id)
        answers.extend(_completions(tokenizer, rows, out, stops))
    return answers


@torch.no_grad()
def samples(model, tokenizer, prompts: list[str], settings: dict, seed: int) -> list[str]:
    """Sampled continuations of text prompts (temperature and top-k from ``[eval]``)."""
    gen = torch.Generator().manual_seed(seed)
    stops = _stop_ids(tokenizer)
    out = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer.bpe.encode_ordinary(prompt)])  # (1, T)
        generated = model.generate(ids, max_new_tokens=settings["sample_tokens"], temperature=settings["temperature"],
                                   top_k=settings["top_k"], stop_tokens=sorted(stops), generator=gen)
        out.append(prompt + _completions(tokenizer, [ids[0].tolist()], generated, stops)[0])
    return out


def evaluate_stage(model, tokenizer, held_out_ids: list[int], test: list[Problem], config: dict,
                   stage: str) -> dict:
    """Every figure the report shows for one stage's model."""
    settings = config["eval"]
    predictions = answer(model, tokenizer, test, settings["max_new_tokens"], desc=f"eval {stage}")
    prompts = ["It was", "The American people", "Call me"][: settings["num_samples"]]
    shown = test[: settings["num_samples"]]
    return {
        "perplexity": perplexity(model, held_out_ids, config["data"]["seq_len"], settings["perplexity_windows"]),
        "exact_match": exact_match(predictions, test),
        "test_answers": predictions,
        "text_samples": samples(model, tokenizer, prompts, settings, config["run"]["seed"]),
        "arithmetic_samples": [{"question": p.question, "answer": p.answer, "model": a}
                               for p, a in zip(shown, predictions)],
    }
