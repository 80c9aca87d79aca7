"""Fixtures of the trainer tests: the offline TRL recipe (ANCHORS.md).

A tiny ``LlamaForCausalLM`` built from a config, a character-level tokenizer
built in code and wrapped in ``PreTrainedTokenizerFast`` with a chat template
(``shardkit.trainers.toy``), and small datasets of every kind. No network.
"""

import pytest
import torch

from shardkit.trainers.toy import char_tokenizer as make_tokenizer  # noqa: F401  (re-exported to the tests)
from shardkit.trainers.toy import toy_records as make_records  # noqa: F401


def make_llama(vocab_size: int, seed: int = 0, tied: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tied, pad_token_id=None, bos_token_id=None, eos_token_id=1)
    return LlamaForCausalLM(cfg)


def make_gpt(vocab_size: int, seed: int = 0):
    """The shardkit GPT of the same shape as ``make_llama`` (tied embeddings), seeded."""
    from shardkit.models import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, max_position_embeddings=256, tie_word_embeddings=True))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, and the test machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
