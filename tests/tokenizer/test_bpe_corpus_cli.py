"""The bundled corpus and the ``shardkit tokenizer`` command line."""

import json

import pytest

from shardkit import corpus
from shardkit.cli import main
from shardkit.tokenizer import BPETokenizer


def test_bundled_corpus_is_there_and_documented():
    assert corpus.names() == ["chinese_classics", "moby_dick", "sotu_1990_2021"]
    with corpus.open_text("moby_dick") as f:
        assert f.read(200).startswith("CHAPTER 1. Loomings.")
    zh = corpus.read_bytes("chinese_classics").decode()
    assert "学而时习之" in zh
    sources = (corpus.paths()["moby_dick"].parent / "SOURCES.md").read_text()
    for name in corpus.names():
        assert f"{name}.txt.gz" in sources
    with pytest.raises(ValueError, match="name"):
        corpus.open_text("nope")


@pytest.mark.native
def test_cli_train_encode_stats(tmp_path, capsys, english_docs):
    src = tmp_path / "in.txt"
    src.write_text("\n\n".join(english_docs[:400]), encoding="utf-8")
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--input", str(src), "--vocab-size", "600", "--out", str(out),
                 "--no-progress"]) == 0
    tok = BPETokenizer.load(out / "shardkit.json")
    assert tok.vocab_size == 600 and "<|im_end|>" in tok.special_tokens
    assert (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists()
    capsys.readouterr()

    text_file = tmp_path / "t.txt"
    text_file.write_text("Call me Ishmael.<|im_end|>", encoding="utf-8")
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--input", str(text_file), "--allow-special"]) == 0
    ids = json.loads(capsys.readouterr().out)
    assert ids == tok.encode("Call me Ishmael.<|im_end|>", allowed_special="all")

    assert main(["tokenizer", "stats", "--tokenizer", str(out), "--input", str(src)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    total = lines[-1].split()
    n_tokens = len(tok.encode_bytes(src.read_bytes()))
    assert int(total[2].replace(",", "")) == n_tokens
    assert float(total[3]) == pytest.approx(src.stat().st_size / n_tokens, abs=1e-3)


@pytest.mark.native
def test_cli_custom_pattern_needs_trust_pattern(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("Call me Ishmael. Some years ago, never mind how long precisely. " * 20, encoding="utf-8")
    out = tmp_path / "tok"
    pattern = r"[A-Za-z]+|[0-9]+|\s+|[^A-Za-z0-9\s]+"
    assert main(["tokenizer", "train", "--input", str(src), "--vocab-size", "300", "--out", str(out),
                 "--pattern", pattern, "--no-progress"]) == 0
    with pytest.raises(ValueError, match="trust_pattern=True"):
        main(["tokenizer", "encode", "--tokenizer", str(out), "--input", str(src)])
    capsys.readouterr()
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--input", str(src), "--trust-pattern"]) == 0
    ids = json.loads(capsys.readouterr().out)
    assert ids == BPETokenizer.load(out / "shardkit.json", trust_pattern=True).encode(src.read_text())
    assert main(["tokenizer", "stats", "--tokenizer", str(out), "--input", str(src), "--trust-pattern"]) == 0
