"""Training: exact merges vs rustbpe and vs the pure-Python reference loop."""

import os

import pytest

from shardkit import _native
from shardkit.tokenizer import BPETokenizer
from shardkit.tokenizer.patterns import GPT4_PATTERN
from shardkit.tokenizer.reference import count_words_reference, tokens_from_merges, train_reference

rustbpe = pytest.importorskip("rustbpe")

pytestmark = pytest.mark.native


def rustbpe_tokens(docs, vocab_size, pattern=None):
    r = rustbpe.Tokenizer()
    r.train_from_iterator(iter(docs), vocab_size, pattern=pattern)
    return [bytes(b) for b, _ in r.get_mergeable_ranks()]


@pytest.mark.parametrize("language", ["english", "chinese"])
def test_merges_equal_rustbpe_at_several_vocab_sizes(language, english_docs, chinese_docs):
    docs = english_docs if language == "english" else chinese_docs
    # Merges are made in order, so rustbpe's largest run holds every smaller one.
    expected = rustbpe_tokens(docs, 6000)
    for vocab_size in (300, 1500, 6000):
        tok = BPETokenizer.train_from_iterator(docs, vocab_size, threads=2)
        assert tok.tokens == expected[:vocab_size], vocab_size


@pytest.mark.parametrize("pattern", ["gpt2", "o200k"])
def test_merges_equal_rustbpe_with_other_patterns(pattern, english_docs):
    tok = BPETokenizer.train_from_iterator(english_docs[:4000], 1200, pattern=pattern)
    assert tok.tokens == rustbpe_tokens(english_docs[:4000], 1200, pattern=tok.pattern)


def test_custom_pattern_equals_rustbpe(english_docs):
    pattern = r"[A-Za-z]+|[0-9]+|\s+|[^A-Za-z0-9\s]+"
    tok = BPETokenizer.train_from_iterator(english_docs[:1500], 800, pattern=pattern)
    assert tok.pattern == pattern
    assert tok.tokens == rustbpe_tokens(english_docs[:1500], 800, pattern=pattern)


@pytest.mark.parametrize("language", ["english", "chinese"])
def test_merges_equal_python_reference(language, english_docs, chinese_docs):
    docs = english_docs[:60] if language == "english" else chinese_docs[:120]
    counts = count_words_reference(GPT4_PATTERN, [d.encode() for d in docs])
    expected = train_reference(dict(counts), 150)
    tok = BPETokenizer.train_from_iterator(docs, 256 + 150)
    assert tok.merges == expected
    assert tok.tokens == tokens_from_merges(expected)


def test_overlapping_pairs_match_reference():
    # Runs of one byte make overlapping pairs ("aaaa": (a,a) three times).
    docs = ["aaaa aaa aaaaaaa ab" * 3, "bbbbbb abab aaab", "a" * 33, "xyxyxyx yxyx"]
    counts = count_words_reference(GPT4_PATTERN, [d.encode() for d in docs])
    tok = BPETokenizer.train_from_iterator(docs, 256 + 40)
    assert tok.merges == train_reference(dict(counts), 40)


def test_file_and_threads_do_not_change_merges(tmp_path, english_docs):
    # The file is split among threads at safe boundaries: same chunks, same merges.
    path = tmp_path / "corpus.txt"
    text = "\n".join(english_docs)
    path.write_text(text, encoding="utf-8")
    assert os.path.getsize(path) > 2 << 20
    one = BPETokenizer.train(path, 2000, threads=1)
    two = BPETokenizer.train(path, 2000, threads=2)
    from_text = BPETokenizer.train_from_iterator([text], 2000, threads=2)
    assert one.tokens == two.tokens == from_text.tokens
    assert one.tokens == rustbpe_tokens([text], 2000)


def test_file_count_equals_document_count(tmp_path, chinese_docs):
    text = "\n".join(chinese_docs)
    path = tmp_path / "zh.txt"
    path.write_bytes(text.encode())
    by_file = _native.C.BpeWordCounter()
    by_file.count_file(0, str(path), 2)
    reference = count_words_reference(GPT4_PATTERN, [text.encode()])
    assert dict(by_file.items()) == dict(reference)
    assert by_file.total_bytes == len(text.encode())


def test_counts_are_64_bit():
    # Counts past 2^32 must neither wrap nor lose the order of pairs.
    counter = _native.C.BpeWordCounter()
    counter.add(b"ab", 3 << 32)
    counter.add(b"cd", (3 << 32) - 1)
    counter.add(b"cd", 2)  # now (3 << 32) + 1: ahead of "ab"
    merges = _native.C.bpe_train(counter, 2, 1)
    assert merges == [(ord("c"), ord("d")), (ord("a"), ord("b"))]
    assert counter.total_chunks == (6 << 32) + 1


def test_ties_go_to_the_smaller_pair():
    # Every pair occurs once: the order must be by (left id, right id).
    tok = BPETokenizer.train_from_iterator(["zy", "ba", "dc"], 259)
    assert tok.merges == [(ord("b"), ord("a")), (ord("d"), ord("c")), (ord("z"), ord("y"))]


def test_stops_when_no_pair_is_left_and_specials_follow():
    tok = BPETokenizer.train_from_iterator(["abab"], 1000, special_tokens=["<|end|>"])
    assert tok.merges == [(ord("a"), ord("b")), (256, 256)]
    assert tok.special_tokens == {"<|end|>": 258}
    assert tok.vocab_size == 259


def test_min_frequency_stops_merging(english_docs):
    tok = BPETokenizer.train_from_iterator(english_docs[:60], 5000, min_frequency=40)
    assert 256 < len(tok.tokens) < 5000
    # The reference stops at the same merge: the first whose count is below 40.
    counts = count_words_reference(GPT4_PATTERN, [d.encode() for d in english_docs[:60]])
    assert tok.merges == train_reference(dict(counts), 5000, min_frequency=40)


def test_progress_is_reported():
    seen = []
    counter = _native.C.BpeWordCounter()
    counter.count_documents(0, b"the cat sat on the mat with the hat", [0, 35], 1)
    _native.C.bpe_train(counter, 8, 1, lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (8, 8)


def test_chinese_training_has_bounded_memory(chinese_docs):
    # Whole clauses are single words; the trainer keeps one symbol array per
    # unique word, so its peak stays a small multiple of the text.
    import resource

    text = "".join(chinese_docs)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    BPETokenizer.train_from_iterator([text], 3000)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb * 1024 < 40 * len(text.encode())


@pytest.mark.parametrize(
    "unit",
    [
        "word\n \n-\n\n  \n.\n",  # newlines mostly followed by spaces or punctuation
        "\n.",  # no safe boundary anywhere: one thread takes it all
        "abc def\n",  # a boundary after every line
    ],
)
def test_threaded_file_split_finds_safe_boundaries(tmp_path, unit):
    path = tmp_path / "f.txt"
    data = (unit * ((3 << 20) // len(unit) + 1)).encode()
    path.write_bytes(data)
    counter = _native.C.BpeWordCounter()
    counter.count_file(0, str(path), 2)
    assert dict(counter.items()) == dict(count_words_reference(GPT4_PATTERN, [data]))
