"""The native splitters agree byte for byte with the Python `regex` module."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardkit import _native
from shardkit.tokenizer.patterns import NAMED_PATTERNS, split_bytes_reference

pytestmark = pytest.mark.native

PATTERNS = sorted(NAMED_PATTERNS)

# Characters that exercise every branch: letters of each case class, marks,
# digits and other numbers, every kind of space, contractions, emoji.
TRICKY = list("abcXYZ'\n\r\t 0123456789.,!?/-_sdmtlverSDMTLVER") + [
    "中", "文", "。", "😀", "👍🏽", "é", "ſ", "\u0301", "\u00a0", "\u2028", "\u3000", "\u0085", "\x0b", "\x1c",
    "Ⅻ", "ǅ", "ʰ", "٣", "²", "ß", "İ", "K", "Ω", "ﬁ", "\u200d", "\ufeff", "Σ", "ς",
]


def native_split(code: int, data: bytes) -> list[bytes]:
    out, start = [], 0
    for end in _native.C.bpe_split(code, data):
        out.append(data[start:end])
        start = end
    return out


def check(name: str, data: bytes) -> None:
    text, code = NAMED_PATTERNS[name]
    assert native_split(code, data) == split_bytes_reference(text, data), data


@pytest.mark.parametrize("name", PATTERNS)
@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TRICKY), max_size=40).map("".join))
def test_tricky_text_matches_regex(name, text):
    check(name, text.encode("utf-8"))


@pytest.mark.parametrize("name", PATTERNS)
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_match_regex(name, data):
    # Invalid UTF-8 becomes lone surrogates on the regex side (surrogateescape).
    check(name, data)


@pytest.mark.parametrize("name", PATTERNS)
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_unicode_matches_regex(name, text):
    check(name, text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("name", PATTERNS)
def test_real_text_matches_regex(name, english_docs, chinese_docs):
    mixed = "\n".join(english_docs[:300]) + "\n\n" + "\n".join(chinese_docs[:1500])
    mixed += "\nCafé naïve résumé — 東京タワー 😀👍🏽 x² ½ Ⅻ I'M HE'LL we'Ve 12345678 \r\n\r\n   \t end  "
    check(name, mixed.encode("utf-8"))


@pytest.mark.parametrize("name", PATTERNS)
def test_invalid_utf8_is_kept_byte_exact(name):
    data = b"ab\xff\xfe cd\xe4\xb8 \xed\xa0\x80x\xf0\x9f\x98 \xc0\xaf'\x80s 1\x802"
    check(name, data)
    assert b"".join(native_split(NAMED_PATTERNS[name][1], data)) == data


def test_chinese_runs_stay_one_chunk_under_gpt4():
    # \p{L}+ swallows a whole clause of Han characters: the case that blows up
    # memory in some trainers; it must still be one chunk here.
    clause = "子曰学而时习之不亦说乎有朋自远方来不亦乐乎" * 50
    chunks = native_split(0, clause.encode())
    assert chunks == [clause.encode()]


def test_unknown_pattern_code_raises():
    with pytest.raises(ValueError, match="pattern"):
        _native.C.bpe_split(7, b"abc")
