"""Bad input to training gets a clear exception naming the problem."""

import pytest

from shardkit.tokenizer import BPETokenizer

pytestmark = pytest.mark.native


def test_vocab_size_below_bytes_plus_specials():
    with pytest.raises(ValueError, match=r"vocab_size: expected at least 256 \+ 2 special tokens = 258, got 257"):
        BPETokenizer.train_from_iterator(["hello"], 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(TypeError, match="vocab_size"):
        BPETokenizer.train_from_iterator(["hello"], 300.0)


def test_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match="empty corpus"):
        BPETokenizer.train_from_iterator([], 300)
    with pytest.raises(ValueError, match="files: empty corpus"):
        BPETokenizer.train([], 300)
    with pytest.raises(ValueError, match="empty corpus"):
        BPETokenizer.train_from_iterator(["", ""], 300)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty corpus"):
        BPETokenizer.train(empty, 300)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        BPETokenizer.train(tmp_path / "absent.txt", 300)
    with pytest.raises(IsADirectoryError):
        BPETokenizer.train(tmp_path, 300)


def test_special_token_that_collides_with_a_learned_token():
    tok = BPETokenizer.train_from_iterator(["ab ab ab"] * 10, 260)
    learned = tok.tokens[256]
    with pytest.raises(ValueError, match="collides with the learned token 256"):
        BPETokenizer(tok.tokens, special_tokens={learned.decode(): len(tok.tokens)})
    # A single byte is a learned token too: "<" as a special token is refused.
    with pytest.raises(ValueError, match="collides"):
        BPETokenizer.train_from_iterator(["hello"], 300, special_tokens=["<"])


def test_bad_special_tokens_and_options():
    with pytest.raises(ValueError, match="duplicates"):
        BPETokenizer.train_from_iterator(["hello"], 300, special_tokens=["<a>", "<a>"])
    with pytest.raises(ValueError, match="non-empty str"):
        BPETokenizer.train_from_iterator(["hello"], 300, special_tokens=[""])
    with pytest.raises(TypeError, match="single string"):
        BPETokenizer.train_from_iterator(["hello"], 300, special_tokens="<a>")
    with pytest.raises(ValueError, match="min_frequency"):
        BPETokenizer.train_from_iterator(["hello"], 300, min_frequency=0)
    with pytest.raises(ValueError, match="threads"):
        BPETokenizer.train_from_iterator(["hello"], 300, threads=0)
    with pytest.raises(ValueError, match="pattern: invalid regex"):
        BPETokenizer.train_from_iterator(["hello"], 300, pattern="([unclosed")
    with pytest.raises(TypeError, match="iterator\\[1\\]: expected str or bytes, got int"):
        BPETokenizer.train_from_iterator(["ok", 42], 300)
    with pytest.raises(TypeError, match="iterator: expected an iterable"):
        BPETokenizer.train_from_iterator(42, 300)


def test_bad_token_tables():
    with pytest.raises(ValueError, match="single bytes"):
        BPETokenizer([b"a", b"b"])
    with pytest.raises(ValueError, match=r"tokens\[256\]"):
        BPETokenizer([bytes([b]) for b in range(256)] + [b""])
    base = [bytes([b]) for b in range(256)] + [b"ab"]
    with pytest.raises(ValueError, match="expected an int id from 257 to 2"):
        BPETokenizer(base, special_tokens={"<x>": 5})
    with pytest.raises(ValueError, match=r"merges\[0\]"):
        BPETokenizer(base, merges=[(ord("a"), ord("c"))])


def test_native_counter_rejects_non_positive_counts():
    from shardkit import _native

    counter = _native.C.BpeWordCounter()
    with pytest.raises(ValueError, match="count: expected >= 1"):
        counter.add(b"ab", 0)
    with pytest.raises(ValueError, match="offsets"):
        counter.count_documents(0, b"abc", [0, 5], 1)


def test_counter_shared_by_two_threads_is_an_error_not_a_race():
    import threading

    from shardkit import _native

    counter = _native.C.BpeWordCounter()
    data = b"word " * 400_000
    errors = []

    def fill():
        try:
            counter.count_documents(0, data, [0, len(data)], 1)
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=fill) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Whichever calls overlapped were refused; the others all counted fully.
    assert all("in use by another thread" in e for e in errors)
    once = _native.C.BpeWordCounter()
    once.count_documents(0, data, [0, len(data)], 1)
    assert counter.total_chunks == (4 - len(errors)) * once.total_chunks
