"""Encoding and decoding: byte-exact round trips, tiktoken ids, special tokens."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardkit.tokenizer import BPETokenizer
from shardkit.tokenizer.reference import encode_reference

pytestmark = pytest.mark.native

tiktoken = pytest.importorskip("tiktoken")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_round_trip_on_random_bytes(small_tokenizer, data):
    ids = small_tokenizer.encode_bytes(data)
    assert small_tokenizer.decode_bytes(ids) == data
    ranks = {t: i for i, t in enumerate(small_tokenizer.tokens)}
    assert ids == encode_reference(small_tokenizer.pattern, ranks, data)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_on_random_text(small_tokenizer, text):
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert small_tokenizer.decode(small_tokenizer.encode(text, disallowed_special=())) == text


def test_ids_equal_tiktoken(small_tokenizer, english_docs, chinese_docs):
    enc = small_tokenizer.to_tiktoken()
    for doc in english_docs[5000:5400] + chinese_docs[5000:5400]:
        assert small_tokenizer.encode(doc) == enc.encode(doc)
    text = "\n\n".join(english_docs[-300:])
    assert small_tokenizer.encode(text) == enc.encode(text)


def test_long_chunks_take_the_heap_path_and_agree(small_tokenizer):
    # A chunk of 100+ bytes not in the vocabulary is merged with a heap
    # (tiktoken#195: "a" * 100000 must not be quadratic).
    enc = small_tokenizer.to_tiktoken()
    ranks = {t: i for i, t in enumerate(small_tokenizer.tokens)}
    for text in ["a" * 5000, "ab" * 999, "子曰学而时习之不亦说乎" * 40, "x" * 100, "y" * 99]:
        ids = small_tokenizer.encode(text)
        assert ids == enc.encode(text)
        assert ids == encode_reference(small_tokenizer.pattern, ranks, text.encode())
    assert small_tokenizer.decode(small_tokenizer.encode("a" * 100000)) == "a" * 100000


def test_encode_batch_equals_encode(small_tokenizer, english_docs, chinese_docs):
    docs = english_docs[:500] + chinese_docs[:500] + ["", "a"]
    assert small_tokenizer.encode_batch(docs, num_threads=2) == [small_tokenizer.encode(d) for d in docs]
    assert small_tokenizer.encode_batch(docs, num_threads=1) == [small_tokenizer.encode(d) for d in docs]


def test_special_tokens_like_tiktoken(small_tokenizer):
    enc = small_tokenizer.to_tiktoken()
    text = "hi<|im_start|>user\nyo<|im_end|>\n<|endoftext|>"
    # Default: any special token in the text is an error.
    with pytest.raises(ValueError, match="disallowed"):
        small_tokenizer.encode(text)
    with pytest.raises(ValueError):
        enc.encode(text)
    for allowed in ["all", {"<|im_start|>"}, {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}]:
        kwargs = {"allowed_special": allowed, "disallowed_special": ()}
        assert small_tokenizer.encode(text, **kwargs) == enc.encode(text, **kwargs)
    # Neither allowed nor disallowed: ordinary text.
    assert small_tokenizer.encode(text, disallowed_special=()) == small_tokenizer.encode_ordinary(text)
    ids = small_tokenizer.encode(text, allowed_special="all")
    assert small_tokenizer.special_tokens["<|im_end|>"] in ids
    assert small_tokenizer.decode(ids) == text
    # Only the disallowed ones raise.
    with pytest.raises(ValueError, match="<\\|endoftext\\|>"):
        small_tokenizer.encode(text, allowed_special={"<|im_start|>", "<|im_end|>"})
    with pytest.raises(ValueError, match="not special tokens"):
        small_tokenizer.encode("x", allowed_special={"<|nope|>"})


def test_decode_rejects_unknown_ids(small_tokenizer):
    with pytest.raises(ValueError, match="unknown token id"):
        small_tokenizer.decode([1, small_tokenizer.vocab_size + 5])
    with pytest.raises(ValueError, match="unknown token id"):
        small_tokenizer.decode([-1])


def test_bad_argument_types_raise(small_tokenizer):
    with pytest.raises(TypeError, match="text"):
        small_tokenizer.encode(b"bytes")
    with pytest.raises(TypeError, match="data"):
        small_tokenizer.encode_bytes("str")


def test_custom_pattern_encoding_matches_tiktoken(english_docs):
    tok = BPETokenizer.train_from_iterator(english_docs[:500], 700, pattern=r"[A-Za-z]+|[0-9]+|\s+|[^A-Za-z0-9\s]+")
    enc = tok.to_tiktoken()
    for doc in english_docs[600:700]:
        assert tok.encode(doc) == enc.encode(doc)
