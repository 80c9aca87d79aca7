"""``train(files)`` reads paths and ``train_from_iterator(texts)`` takes strings (the HF convention)."""

from pathlib import Path

import pytest

from shardkit.tokenizer import BPETokenizer
from shardkit.tokenizer.training import MAX_VOCAB_SIZE

TEXT = "the cat sat on the mat; the cat ate the rat. " * 20


def test_train_reads_str_and_pathlike_paths(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT, encoding="utf-8")
    b.write_text(TEXT.upper(), encoding="utf-8")
    from_texts = BPETokenizer.train_from_iterator([TEXT, TEXT.upper()], 300)
    # A list mixing str and PathLike, a lone str, and a tuple all name files.
    assert BPETokenizer.train([str(a), b], 300).tokens == from_texts.tokens
    assert BPETokenizer.train((a, str(b)), 300).tokens == from_texts.tokens
    assert BPETokenizer.train(str(a), 300).tokens == BPETokenizer.train_from_iterator([TEXT], 300).tokens


def test_a_string_given_to_train_is_a_path_not_text(tmp_path, monkeypatch):
    # The README's train(["corpus.txt"]) once trained on the 10 characters of
    # the name; it must read the file, or say that it is missing.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="corpus.txt"):
        BPETokenizer.train(["corpus.txt"], 300)
    Path("corpus.txt").write_text(TEXT, encoding="utf-8")
    tok = BPETokenizer.train(["corpus.txt"], 300)
    assert tok.tokens == BPETokenizer.train_from_iterator([TEXT], 300).tokens
    assert b"corpus" not in tok.tokens


def test_missing_file_among_several_is_named(tmp_path):
    present = tmp_path / "present.txt"
    present.write_text(TEXT, encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        BPETokenizer.train([present, tmp_path / "missing.txt"], 300)


def test_train_rejects_non_paths():
    with pytest.raises(TypeError, match=r"files\[1\]: expected a path .* got int"):
        BPETokenizer.train(["a.txt", 3], 300)
    with pytest.raises(TypeError, match="files: .* got bytes"):
        BPETokenizer.train(b"a.txt", 300)
    with pytest.raises(TypeError, match="files: .* got int"):
        BPETokenizer.train(7, 300)


def test_train_from_iterator_takes_generators_and_bytes():
    docs = [TEXT, TEXT.upper()]
    as_list = BPETokenizer.train_from_iterator(docs, 300)
    assert BPETokenizer.train_from_iterator((d for d in docs), 300).tokens == as_list.tokens
    assert BPETokenizer.train_from_iterator([d.encode() for d in docs], 300).tokens == as_list.tokens


def test_train_from_iterator_refuses_a_bare_string_or_path(tmp_path):
    # Iterating a str would train on its characters one by one.
    with pytest.raises(TypeError, match="iterator: .* got a single str"):
        BPETokenizer.train_from_iterator(TEXT, 300)
    with pytest.raises(TypeError, match="iterator: .* got a single PosixPath"):
        BPETokenizer.train_from_iterator(tmp_path / "x.txt", 300)


def test_vocab_size_upper_bound_is_named():
    for huge in (2**70, MAX_VOCAB_SIZE + 1):
        with pytest.raises(ValueError, match=r"vocab_size: expected an int in \[256, 2\*\*31 = 2147483648\], got"):
            BPETokenizer.train_from_iterator(["abab"], huge)
    with pytest.raises(ValueError, match=r"vocab_size: expected an int in \[258, 2\*\*31"):
        BPETokenizer.train_from_iterator(["abab"], 2**70, special_tokens=["<a>", "<b>"])


@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff", "\udc80"])
def test_lone_surrogate_in_training_text_names_document_and_position(surrogate):
    # \udc80 is what surrogateescape makes of byte 0x80: it must not silently
    # become that byte either.
    docs = ["fine text", "ab" + surrogate + "cd"]
    with pytest.raises(ValueError, match=r"iterator\[1\]: lone surrogate .* at character 2"):
        BPETokenizer.train_from_iterator(docs, 300)
    # The same text as bytes (what the message suggests) trains.
    fixed = [d.encode("utf-8", "replace") for d in docs]
    assert BPETokenizer.train_from_iterator(fixed, 300).vocab_size <= 300
