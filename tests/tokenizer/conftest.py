"""Shared corpora for the tokenizer tests: the bundled texts, as documents."""

import pytest

from shardkit import corpus


def _paragraphs(name: str) -> list[str]:
    text = corpus.open_text(name).read()
    return [p for p in text.split("\n\n") if p]


@pytest.fixture(scope="session")
def english_docs() -> list[str]:
    """About 2.3 MB of English (Moby-Dick and State of the Union), one paragraph per document."""
    return _paragraphs("moby_dick") + _paragraphs("sotu_1990_2021")


@pytest.fixture(scope="session")
def chinese_docs() -> list[str]:
    """About 1 MB of classical Chinese, one line per document."""
    return corpus.open_text("chinese_classics").read().splitlines()


@pytest.fixture(scope="session")
def small_tokenizer(english_docs, chinese_docs):
    """A 2000-id tokenizer with the chat special tokens, trained on a slice of both languages."""
    from shardkit.tokenizer import CHAT_SPECIAL_TOKENS, BPETokenizer

    return BPETokenizer.train_from_iterator(english_docs[:3000] + chinese_docs[:3000], 2000, special_tokens=CHAT_SPECIAL_TOKENS)
