"""Byte-level BPE tokenizer with native training and encoding.

``BPETokenizer.train(files, vocab_size, pattern="gpt4", ...)`` (paths) and
``BPETokenizer.train_from_iterator(texts, vocab_size, ...)`` (strings) learn merges with rustbpe's exact tie rules; ``encode``/``decode`` follow
tiktoken. See :mod:`shardkit.tokenizer.bpe`.
"""

from shardkit.tokenizer.bpe import BPETokenizer
from shardkit.tokenizer.chat import CHAT_SPECIAL_TOKENS, ChatEncoding, ChatTemplate
from shardkit.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN, NAMED_PATTERNS, O200K_PATTERN
from shardkit.tokenizer.processing import TrainerTokenizer
from shardkit.tokenizer.splitter import PatternTimeoutError

__all__ = [
    "BPETokenizer",
    "CHAT_SPECIAL_TOKENS",
    "ChatEncoding",
    "ChatTemplate",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "NAMED_PATTERNS",
    "O200K_PATTERN",
    "PatternTimeoutError",
    "TrainerTokenizer",
]
