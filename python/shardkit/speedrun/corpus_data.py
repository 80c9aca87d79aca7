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
