"""Offline toy pieces for tests, benchmarks and smoke runs: no download, built in code.

``char_tokenizer()`` is a character-level ``PreTrainedTokenizerFast`` with a
chat template (``{% generation %}`` marks the assistant turns), and
``toy_records(kind, n)`` makes small random datasets of every kind. They need
``transformers`` and ``tokenizers``.
"""

from __future__ import annotations

import random
import string

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>{% generation %}{{ m['content'] }}<eos>{% endgeneration %}"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CHARS = string.ascii_lowercase + " .,?!"
SPECIALS = ["<pad>", "<eos>", "<bos>", "<|user|>", "<|assistant|>", "<|system|>", "<unk>"]


def char_tokenizer(pad_is_eos: bool = True):
    """A character-level HF tokenizer (lowercase letters and ``" .,?!"``) with a chat template."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(CHARS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
                                  pad_token="<eos>" if pad_is_eos else "<pad>",
                                  additional_special_tokens=SPECIALS[3:6])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _words(rng: random.Random, n: int, max_word: int) -> str:
    return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, max_word)))
                    for _ in range(n))


def toy_records(kind: str, n: int, seed: int = 0, conversational: bool = False, max_words: int = 4,
                max_word: int = 5) -> list[dict]:
    """``n`` random records of a dataset kind (see ``shardkit.data.KIND_FIELDS``)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, a, b = (_words(rng, rng.randint(1, max_words), max_word) for _ in range(3))
        if conversational:
            p = [{"role": "user", "content": prompt}]
            ca, cb = [{"role": "assistant", "content": a}], [{"role": "assistant", "content": b}]
        else:
            p, ca, cb = prompt + "?", " " + a, " " + b
        if kind == "text":
            out.append({"text": prompt + " " + a})
        elif kind == "prompt_completion":
            out.append({"prompt": p, "completion": ca})
        elif kind == "messages":
            out.append({"messages": p + ca})
        elif kind == "preference":
            out.append({"prompt": p, "chosen": ca, "rejected": cb})
        elif kind == "unpaired_preference":
            out.append({"prompt": p, "completion": ca, "label": i % 3 != 0})
        else:
            raise ValueError(f"unknown dataset kind {kind!r}")
    return out
