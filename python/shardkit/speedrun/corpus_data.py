"""The pretraining data of a speedrun: the bundled English texts, split and tokenized.

The last ``held_out`` fraction of every text (cut at a line break) is kept
for perplexity; the rest is tokenized, each text closed by EOS, and cut into
rows of ``seq_len`` tokens.
"""

from __future__ import annotations

from shardkit import corpus


def split_texts(names: list[str], held_out: float) -> tuple[list[str], list[str]]:
    """(training parts, held-out parts) of the named bundled texts."""
    unknown = sorted(set(names) - set(corpus.names()))
    if unknown:
        raise ValueError(f"[tokenizer] texts: unknown bundled texts {unknown}; expected some of {corpus.names()}")
    train, held = [], []
    for name in names:
        with corpus.open_text(name) as f:
            text = f.read()
        cut = text.rfind("\n", 0, int(len(text) * (1.0 - held_out)))
        cut = cut + 1 if cut > 0 else int(len(text) * (1.0 - held_out))
        train.append(text[:cut])
        held.append(text[cut:])
    return train, held


def token_stream(tokenizer, texts: list[str]) -> list[int]:
    """Every text encoded and closed by EOS, end to end."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.bpe.encode_ordinary(text))
        ids.append(tokenizer.eos_token_id)
    return ids


def pretrain_records(tokenizer, texts: list[str], seq_len: int) -> list[dict]:
    """``{"input_ids": [...]}`` rows of exactly ``seq_len`` tokens (the last partial row dropped)."""
    ids = token_stream(tokenizer, texts)
    return [{"input_ids": ids[i : i + seq_len]} for i in range(0, len(ids) - seq_len + 1, seq_len)]


def mixed_sft_records(tokenizer, arithmetic_records: list[dict], text_ids: list[int], text_fraction: float,
                      text_len: int, seed: int) -> list[dict]:
    """SFT rows: the arithmetic conversations (loss on the answers) mixed with pretraining text (loss on every token).

    Replaying some pretraining text keeps the model's prose (held-out perplexity) from being forgotten while it
    learns the task. ``text_fraction`` of the rows are ``text_len``-token windows of ``text_ids`` at seeded random
    offsets; rows are tokenized here (``input_ids`` and ``labels``, -100 where no loss falls) and shuffled together.
    Each row also says its ``kind`` ("arithmetic" or "text"), which the trainer ignores.
    """
    import random

    from shardkit.data import lm_example

    rows = []
    for i, r in enumerate(arithmetic_records):
        ex = lm_example(tokenizer, r, "prompt_completion", completion_only_loss=True, where=f"sft example {i}")
        rows.append({"input_ids": list(ex["input_ids"]), "labels": list(ex["labels"]), "kind": "arithmetic"})
    rng = random.Random(seed)
    n_text = round(len(rows) * text_fraction / (1.0 - text_fraction)) if text_fraction > 0 else 0
    if n_text and len(text_ids) <= text_len:
        raise ValueError(f"[data] sft_text_len: {text_len} tokens exceed the {len(text_ids)} training text tokens")
    for _ in range(n_text):
        start = rng.randrange(len(text_ids) - text_len)
        window = text_ids[start : start + text_len]
        rows.append({"input_ids": window, "labels": list(window), "kind": "text"})
    rng.shuffle(rows)
    return rows
