"""Hostile split patterns: refused from files unless trusted, checked at load, time-limited when run."""

import json
import time

import pytest

from shardkit.tokenizer import BPETokenizer, GPT4_PATTERN
from shardkit.tokenizer.splitter import PatternTimeoutError, time_limit

BYTES = [bytes([b]) for b in range(256)]
# Nested quantifiers over alternatives that match the same text: the regex
# module tries every way of splitting a run of "a" before failing on "b".
CATASTROPHIC = r"(?:(?:a|a)+)+b|[\s\S]"
SAFE_CUSTOM = r"[A-Za-z]+|[0-9]+|\s+|[^A-Za-z0-9\s]+"


def write_tokenizer_file(tmp_path, pattern, name="tok.json"):
    """A valid tokenizer file whose pattern field is ``pattern`` (as a hostile file would carry it)."""
    path = tmp_path / name
    BPETokenizer(BYTES).save(path)
    doc = json.loads(path.read_text())
    doc["pattern"] = pattern
    path.write_text(json.dumps(doc))
    return path


def test_catastrophic_pattern_times_out_instead_of_running_for_minutes():
    tok = BPETokenizer(BYTES, pattern=CATASTROPHIC)  # the probe text has no long run of "a"
    started = time.perf_counter()
    with pytest.raises(PatternTimeoutError, match=r"pattern: .*took over 1\.0 s to split 29 characters"):
        tok.encode("a" * 29)  # over 30 s without the limit
    assert time.perf_counter() - started < 10
    # A TimeoutError, so callers can catch it as one.
    assert issubclass(PatternTimeoutError, TimeoutError)


def test_catastrophic_pattern_times_out_in_training_too():
    with pytest.raises(PatternTimeoutError, match="catastrophic backtracking"):
        BPETokenizer.train_from_iterator(["a" * 29], 300, pattern=CATASTROPHIC)


def test_time_limit_grows_with_the_text_so_long_texts_still_encode(english_docs):
    assert time_limit(0) == 1.0 and time_limit(10**6) == pytest.approx(11.0)
    text = "\n".join(english_docs)  # 2.3 MB in one call: far inside its limit
    tok = BPETokenizer.train_from_iterator(english_docs[:200], 400, pattern=SAFE_CUSTOM)
    assert tok.decode(tok.encode(text)) == text


def test_custom_pattern_from_a_file_is_refused_unless_trusted(tmp_path):
    path = write_tokenizer_file(tmp_path, CATASTROPHIC)
    with pytest.raises(ValueError, match=r"tok.json'.*not a built-in one.*trust_pattern=True"):
        BPETokenizer.load(path)
    trusted = BPETokenizer.load(path, trust_pattern=True)
    with pytest.raises(PatternTimeoutError):
        trusted.encode("a" * 29)
    with pytest.raises(TypeError, match="trust_pattern: expected bool"):
        BPETokenizer.load(path, trust_pattern="yes")


def test_builtin_patterns_load_without_trust(tmp_path):
    # By name or by exact text: both run natively, nothing to trust.
    for i, pattern in enumerate(["gpt2", GPT4_PATTERN]):
        tok = BPETokenizer.load(write_tokenizer_file(tmp_path, pattern, f"tok{i}.json"))
        assert tok.decode(tok.encode("Hello world")) == "Hello world"


def test_trusted_custom_pattern_round_trips(tmp_path, english_docs):
    tok = BPETokenizer.train_from_iterator(english_docs[:200], 400, pattern=SAFE_CUSTOM)
    tok.save(tmp_path / "custom.json")
    loaded = BPETokenizer.load(tmp_path / "custom.json", trust_pattern=True)
    assert loaded.pattern == SAFE_CUSTOM
    assert loaded.encode(english_docs[300]) == tok.encode(english_docs[300])


def test_capture_groups_raise_at_load(tmp_path):
    grouped = r"(\w+)|\s+|[^\w\s]+"
    with pytest.raises(ValueError, match=r"has 1 capture group\(s\); a split pattern must have none"):
        BPETokenizer(BYTES, pattern=grouped)
    path = write_tokenizer_file(tmp_path, grouped)
    with pytest.raises(ValueError, match="corrupted tokenizer file .*capture group"):
        BPETokenizer.load(path, trust_pattern=True)
    with pytest.raises(ValueError, match="capture group"):
        BPETokenizer.train_from_iterator(["some text"], 300, pattern=grouped)


def test_pattern_that_skips_characters_raises_at_load(tmp_path):
    letters_only = r"[A-Za-z]+|\s+"
    with pytest.raises(ValueError, match=r"does not match every character: '\\x00' \(U\+0000\) at position 0 of the "
                                         r"probe text"):
        BPETokenizer(BYTES, pattern=letters_only)
    path = write_tokenizer_file(tmp_path, letters_only)
    with pytest.raises(ValueError, match="corrupted tokenizer file .*does not match every character"):
        BPETokenizer.load(path, trust_pattern=True)


def test_gap_the_probe_cannot_see_is_caught_when_encoding_and_training():
    # Matches everything but DEVANAGARI KA, which the probe text lacks.
    all_but_ka = "[^\u0915]+"
    tok = BPETokenizer(BYTES, pattern=all_but_ka)
    assert tok.encode("abc") == [97, 98, 99]
    with pytest.raises(ValueError, match=r"'\u0915' \(U\+0915\) at position 2 of text is skipped"):
        tok.encode("ab\u0915cd")
    with pytest.raises(ValueError, match=r"position 1 of iterator\[1\] is skipped"):
        BPETokenizer.train_from_iterator(["fine", "a\u0915"], 300, pattern=all_but_ka)


@pytest.mark.parametrize("typo", ["gpt5", "GPT4", "o200k_base", "cl100k"])
def test_unknown_pattern_name_is_not_compiled_as_a_regex(typo, tmp_path):
    with pytest.raises(ValueError, match=f"pattern: unknown pattern name '{typo}'"):
        BPETokenizer(BYTES, pattern=typo)
    with pytest.raises(ValueError, match="unknown pattern name"):
        BPETokenizer.train_from_iterator(["hello"], 300, pattern=typo)
    with pytest.raises(ValueError, match="corrupted tokenizer file .*unknown pattern name"):
        BPETokenizer.load(write_tokenizer_file(tmp_path, typo), trust_pattern=True)
