"""Save/load JSON, Hugging Face export, tiktoken both ways, GPT-2 files."""

import json
import pickle

import pytest

from shardkit.tokenizer import BPETokenizer

pytestmark = pytest.mark.native


def test_save_load_round_trip(tmp_path, small_tokenizer, english_docs):
    path = tmp_path / "tok.json"
    small_tokenizer.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.tokens == small_tokenizer.tokens
    assert loaded.merges == small_tokenizer.merges
    assert loaded.special_tokens == small_tokenizer.special_tokens
    assert loaded.pattern == small_tokenizer.pattern
    doc = english_docs[42]
    assert loaded.encode(doc) == small_tokenizer.encode(doc)
    assert not [p for p in tmp_path.iterdir() if p.name != "tok.json"]  # no temp file left


def test_hf_tokenizers_gives_identical_ids(tmp_path, small_tokenizer, english_docs, chinese_docs):
    tokenizers = pytest.importorskip("tokenizers")
    small_tokenizer.save_hf(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    docs = english_docs[2000:2300] + chinese_docs[2000:2300] + ["I'M here 12345 \n\n  x", "😀👍🏽 e\u0301"]
    for doc in docs:
        assert hf.encode(doc, add_special_tokens=False).ids == small_tokenizer.encode(doc), doc
    chat = "<|im_start|>user\nhello<|im_end|>\n"
    assert hf.encode(chat).ids == small_tokenizer.encode(chat, allowed_special="all")
    assert hf.decode(small_tokenizer.encode(docs[0]), skip_special_tokens=False) == docs[0]


def test_gpt2_files_written_by_hf_load_back(tmp_path, small_tokenizer, english_docs):
    tokenizers = pytest.importorskip("tokenizers")
    small_tokenizer.save_hf(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    vocab_json, merges_txt = hf.model.save(str(tmp_path))  # HF writes the GPT-2 layout
    loaded = BPETokenizer.from_gpt2_files(vocab_json, merges_txt, pattern=small_tokenizer.pattern)
    assert loaded.tokens == small_tokenizer.tokens
    assert loaded.merges == small_tokenizer.merges
    for doc in english_docs[100:200]:
        assert loaded.encode(doc) == hf.encode(doc).ids


def test_tiktoken_export_and_import(small_tokenizer, english_docs):
    tiktoken = pytest.importorskip("tiktoken")
    enc = small_tokenizer.to_tiktoken("mine")
    assert isinstance(enc, tiktoken.Encoding)
    back = BPETokenizer.from_tiktoken(enc)
    assert back.tokens == small_tokenizer.tokens
    assert back.special_tokens == small_tokenizer.special_tokens
    assert back.merges == small_tokenizer.merges  # recovered from the ranks alone
    for doc in english_docs[:100]:
        assert back.encode(doc) == enc.encode(doc)


def test_tiktoken_import_with_scrambled_byte_ranks(english_docs):
    # Real tiktoken tables (cl100k, r50k) do not give byte b the id b.
    tiktoken = pytest.importorskip("tiktoken")
    base = BPETokenizer.train_from_iterator(english_docs[:300], 600)
    order = list(range(256))[::-1]
    ranks = {bytes([b]): r for r, b in enumerate(order)}
    for i, t in enumerate(base.tokens[256:]):
        ranks[t] = 256 + i
    enc = tiktoken.Encoding(name="scrambled", pat_str=base.pattern, mergeable_ranks=ranks,
                            special_tokens={"<|eot|>": 600})
    mine = BPETokenizer.from_tiktoken(enc)
    for doc in english_docs[300:400] + ["\x00\xff bytes"]:
        assert mine.encode(doc) == enc.encode(doc)
        assert mine.decode(mine.encode(doc)) == doc


def test_transformers_wraps_the_export_with_chat_template(tmp_path, small_tokenizer):
    transformers = pytest.importorskip("transformers")
    small_tokenizer.save_hf(tmp_path)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Call me Ishmael. 你好"},
        {"role": "assistant", "content": "\n\nAye, Ishmael!  "},
    ]
    ids = hf.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert ids == small_tokenizer.render_chat(messages).ids
    prompt = hf.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == small_tokenizer.chat_template.render_text(messages[:2], add_generation_prompt=True)


def test_corrupted_files_raise_clear_errors(tmp_path, small_tokenizer):
    good = tmp_path / "good.json"
    small_tokenizer.save(good)
    doc = json.loads(good.read_text())
    cases = {
        "not_json.json": b"{not json",
        "binary.json": bytes(range(256)),
        "wrong_format.json": json.dumps({"format": "other"}).encode(),
        "bad_merge.json": json.dumps({**doc, "merges": [[1, 9999]] + doc["merges"][1:]}).encode(),
        "merge_types.json": json.dumps({**doc, "merges": [["a", "b"]]}).encode(),
        "bad_special.json": json.dumps({**doc, "special_tokens": {"<|x|>": 3}}).encode(),
        "no_pattern.json": json.dumps({k: v for k, v in doc.items() if k != "pattern"}).encode(),
        "truncated.json": good.read_bytes()[: len(good.read_bytes()) // 2],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match="tokenizer file"):
            BPETokenizer.load(path)


def test_loading_never_unpickles(tmp_path):
    # A pickle that would run code when unpickled is just a corrupted file here.
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    path = tmp_path / "evil.json"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="corrupted tokenizer file"):
        BPETokenizer.load(path)


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError, match="cannot read tokenizer file"):
        BPETokenizer.load(tmp_path / "absent.json")


def test_deeply_nested_json_is_a_value_error_naming_the_file(tmp_path):
    # json raises RecursionError past about a thousand levels.
    deep = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep.json"
    path.write_bytes(deep)
    with pytest.raises(ValueError, match=r"corrupted tokenizer file .*deep\.json'.*nested too deeply"):
        BPETokenizer.load(path)
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab.write_bytes(b'{"a": ' + deep + b"}")
    merges.write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match=r"vocab_json .*vocab\.json'.*nested too deeply"):
        BPETokenizer.from_gpt2_files(vocab, merges)
