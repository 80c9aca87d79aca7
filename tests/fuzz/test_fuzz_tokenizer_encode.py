"""Fuzz encode/decode: round trips on any text or bytes, native == reference, custom patterns.

The contract: ``decode(encode(s)) == s`` for every str without lone
surrogates (with them: each becomes U+FFFD, as in tiktoken);
``decode_bytes(encode_bytes(b)) == b`` for all bytes; the native encoder gives
the ids of the pure-Python reference; a custom split pattern is either
refused with a ValueError or encodes every text (ValueError allowed), never
hangs and never raises another exception type.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardkit.tokenizer import BPETokenizer
from shardkit.tokenizer.reference import encode_reference
from tests.fuzz.fuzzlib import fuzz, run_in_child

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog. I'm here, you're there; we'll see 12345 6789.",
    "Call me Ishmael.  Some years ago -- never mind how long precisely -- having little money\n\n",
    "你好，世界。天下大势，分久必合，合久必分。 Ünïcödé ñ é\u0301 😀👍🏽 \t\r\n ",
    "def f(x):\n    return x ** 2  # comment\r\n\tif a != b: pass",
] * 4
# A custom pattern (not a named one, so it is split in Python) that matches
# every character: letters, numbers, spaces, anything else (surrogates too).
CUSTOM = r"""\p{L}+|\p{N}{1,3}|\s+|[^\p{L}\p{N}\s]+"""

# Texts: every code point but the surrogates, with the characters that the
# patterns treat specially made likely.
INTERESTING = "aZ0 \t\r\n'sllvere_-.,!?\u00a0\u3000\u0301é你😀\x00\x7f\ufeff\U0010ffff"
chars = st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(INTERESTING))
texts = st.text(chars, max_size=200)
specials = st.sampled_from(SPECIALS)
texts_with_specials = st.lists(st.one_of(texts, specials), max_size=6).map("".join)


@pytest.fixture(scope="module")
def tokenizers():
    out = {}
    for pattern in ("gpt4", "gpt2", "o200k", CUSTOM):
        out[pattern] = BPETokenizer.train_from_iterator(CORPUS, 420, pattern=pattern, special_tokens=SPECIALS)
    return out


PATTERNS = ["gpt4", "gpt2", "o200k", CUSTOM]


@pytest.mark.parametrize("pattern", PATTERNS, ids=["gpt4", "gpt2", "o200k", "custom"])
@fuzz
@given(text=texts)
def test_text_round_trip_and_reference_parity(tokenizers, pattern, text):
    tok = tokenizers[pattern]
    ids = tok.encode(text, disallowed_special=())
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.encode_ordinary(text) == ids
    # The native encoder agrees with the reference (the spec), id for id.
    ranks = {t: i for i, t in enumerate(tok.tokens)}
    assert encode_reference(tok.pattern, ranks, text.encode("utf-8")) == ids


@pytest.mark.parametrize("pattern", PATTERNS, ids=["gpt4", "gpt2", "o200k", "custom"])
@fuzz
@given(data=st.binary(max_size=300))
def test_bytes_round_trip(tokenizers, pattern, data):
    tok = tokenizers[pattern]
    ids = tok.encode_bytes(data)
    assert tok.decode_bytes(ids) == data
    ranks = {t: i for i, t in enumerate(tok.tokens)}
    assert encode_reference(tok.pattern, ranks, data) == ids


@fuzz
@given(text=texts_with_specials)
def test_special_tokens(tokenizers, text):
    tok = tokenizers["gpt4"]
    ids = tok.encode(text, allowed_special="all")
    assert tok.decode(ids) == text
    present = [s for s in SPECIALS if s in text]
    if present:
        with pytest.raises(ValueError, match="disallowed"):
            tok.encode(text)
    else:
        assert tok.encode(text) == tok.encode_ordinary(text)
    assert tok.encode_batch([text, text[::-1]], allowed_special="all", disallowed_special=()) == [
        ids, tok.encode(text[::-1], allowed_special="all", disallowed_special=())]


@fuzz
@given(text=st.text(st.one_of(chars, st.characters(whitelist_categories=("Cs",))), max_size=60))
def test_lone_surrogates_become_replacement_characters(tokenizers, text):
    tok = tokenizers["gpt4"]
    expected = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert tok.decode(tok.encode(text)) == expected


@fuzz
@given(ids=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=8))
def test_decode_rejects_unknown_ids_with_value_error(tokenizers, ids):
    tok = tokenizers["gpt4"]
    valid = [i for i in ids if 0 <= i < tok.vocab_size]
    if len(valid) == len(ids):
        assert tok.decode_bytes(ids) == b"".join(tok.token_bytes(i) for i in ids)
    else:
        with pytest.raises(ValueError, match="unknown token id"):
            tok.decode_bytes(ids)


@pytest.mark.native  # the reference path raises ValueError already
def test_decode_id_beyond_int64_is_a_value_error(tokenizers):
    # Minimal input: decode([2**63]) raises pybind11's "incompatible function
    # arguments" TypeError from the native path (the reference raises ValueError).
    with pytest.raises(ValueError, match="unknown token id"):
        tokenizers["gpt4"].decode([2**63])


def test_train_vocab_size_beyond_int64_is_a_value_error():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train_from_iterator(["hello world"], 2**70)


@pytest.mark.native  # the reference path raises ValueError already
def test_special_id_beyond_int64_is_a_value_error():
    base = [bytes([b]) for b in range(256)]
    with pytest.raises(ValueError, match="special_tokens"):
        BPETokenizer(base, special_tokens={"<x>": 2**70})


# ---- custom split patterns ------------------------------------------------------

ATOMS = ["a", "b", " ", r"\s", r"\S", r"\w", r"\d", r"\p{L}", r"\p{N}", ".", "[ab]", "[^a]", r"\n", "(?i:ab)"]
QUANTIFIERS = ["", "+", "*", "?", "{1,3}", "++", "*?"]


regex_trees = st.recursive(
    st.builds(lambda a, q: a + q, st.sampled_from(ATOMS), st.sampled_from(QUANTIFIERS)),
    lambda inner: st.one_of(
        st.builds(lambda xs: "".join(xs), st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda xs: "|".join(xs), st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda x, q: f"(?:{x}){q}", inner, st.sampled_from(QUANTIFIERS)),
        st.builds(lambda x, q: f"({x}){q}", inner, st.sampled_from(QUANTIFIERS)),
    ),
    max_leaves=6,
)
# Random garbage too: unbalanced brackets, bad escapes, lookarounds.
raw_patterns = st.text(st.sampled_from("ab()[]{}|*+?\\^$.:<>=!-,0123456789pLN sSwWdD"), min_size=1, max_size=20)
pattern_texts = st.lists(st.sampled_from("ab \n1!é你"), max_size=40).map("".join) | st.builds(
    lambda c, n, tail: c * n + tail, st.sampled_from("ab 1"), st.integers(0, 40), st.sampled_from(["", "!", "\n", "c"]))


def _backtracks(pattern: str, text: str) -> bool:
    """Whether the ``regex`` module alone needs over 0.1 s for this pattern on this short text.

    (Its timeout fires late, after about 0.3 s.) On at most 60 characters that
    is exponential backtracking: a few more characters and it runs for hours.
    """
    import regex

    try:
        regex.compile(pattern).findall(text, timeout=0.1)
    except TimeoutError:
        return True
    except regex.error:
        return False
    return False


def _has_capture_groups(pattern: str) -> bool:
    import regex

    try:
        return regex.compile(pattern).groups > 0
    except regex.error:
        return False


def _encode_with_custom_pattern(pattern: str, text: str):
    try:
        tok = BPETokenizer([bytes([b]) for b in range(256)], pattern=pattern)
    except ValueError:
        return "refused"
    try:
        ids = tok.encode(text)
    except ValueError:
        return "value-error"
    assert tok.decode(ids) == text, (pattern, text, ids)
    return "ok"


@fuzz
@given(pattern=st.one_of(regex_trees, raw_patterns), text=pattern_texts)
def test_custom_patterns_refuse_or_work(pattern, text):
    # A hang in the regex engine cannot be interrupted in-process: a child runs each example.
    run_in_child(_encode_with_custom_pattern, (pattern, text), timeout=10)


def test_pattern_with_two_capture_groups():
    # Minimal input: pattern "(a)|(b)", text "a": findall yields tuples of
    # groups, and encode fails with AttributeError: 'tuple' object has no attribute 'encode'.
    assert _encode_with_custom_pattern("(a)|(b)", "a") in ("refused", "ok")


def test_pattern_with_one_capture_group_keeps_every_byte():
    # Minimal input: pattern "(a)b|b", text "ab": findall yields the group "a",
    # the "b" is lost, and the chunk offsets no longer cover the text.
    assert _encode_with_custom_pattern("(a)b|b", "ab") in ("refused", "ok")


def test_backtracking_pattern_does_not_hang():
    # Minimal input: pattern "(?:a|a)+$|." on the text "a" * 30 + "!": the
    # nested alternation backtracks 2**30 times in the regex module (minutes;
    # each further "a" doubles it). Expected: refused, or a ValueError quickly.
    pattern, text = "(?:a|a)+$|.", "a" * 30 + "!"
    assert _backtracks(pattern, text)  # the input is a real hazard
    run_in_child(_encode_with_custom_pattern, (pattern, text), timeout=3)


@pytest.mark.parametrize("name", ["gpt5", "cl100k_base"])
def test_unknown_pattern_name_is_refused(name):
    with pytest.raises(ValueError, match="pattern"):
        BPETokenizer([bytes([b]) for b in range(256)], pattern=name)


def test_reference_encoder_does_not_drop_unmatched_text():
    # Minimal input: pattern "0", text "a". The native path raises ValueError
    # ("offsets: expected to start at 0 and end at len(data)"); the reference
    # (the fallback without _C) returns [] and "a" is silently lost.
    ranks = {bytes([b]): b for b in range(256)}
    try:
        ids = encode_reference("0", ranks, b"a")
    except ValueError:
        return
    assert ids == [ord("a")]
