"""Fixtures of the trainer tests: the offline TRL recipe (ANCHORS.md).

A tiny ``LlamaForCausalLM`` built from a config, a character-level tokenizer
built in code and wrapped in ``PreTrainedTokenizerFast`` with a chat template,
and small datasets of every kind, all made here (no network).
"""

import random
import string

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>{% generation %}{{ m['content'] }}<eos>{% endgeneration %}"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CHARS = string.ascii_lowercase + " .,?!"
SPECIALS = ["<pad>", "<eos>", "<bos>", "<|user|>", "<|assistant|>", "<|system|>", "<unk>"]


def make_tokenizer(pad_is_eos: bool = True):
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


def make_llama(vocab_size: int, seed: int = 0, tied: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tied, pad_token_id=None, bos_token_id=None, eos_token_id=1)
    return LlamaForCausalLM(cfg)


def _words(rng, n):
    return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 5))) for _ in range(n))


def make_records(kind: str, n: int, seed: int = 0, conversational: bool = False):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, a, b = _words(rng, rng.randint(1, 4)), _words(rng, rng.randint(1, 4)), _words(rng, rng.randint(1, 4))
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
    return out


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, and the test machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
