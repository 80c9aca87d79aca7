"""Fuzz the tokenizer file formats: our JSON (both layouts), GPT-2 vocab.json +
merges.txt, and tiktoken-like encodings.

The contract: a file either loads into a tokenizer that encodes and decodes, or
``load`` raises a ValueError whose message names the file (an unreadable file:
OSError). Never another exception type, a RecursionError or a crash.
"""

from __future__ import annotations

import json
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardkit.tokenizer import BPETokenizer
from shardkit.tokenizer.formats import bytes_to_unicode
from tests.fuzz.fuzzlib import fuzz, time_limit

CORPUS = ["hello world, hello there! 12345 héllo wörld 你好你好", "the cat sat on the mat\n\n\tthe end"] * 8
SPECIALS = ["<|endoftext|>", "<|im_end|>"]
SAMPLE = "hello wörld 你好 the cat 123!\n"


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train_from_iterator(CORPUS, 300, special_tokens=SPECIALS)


def _docs(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tok.json"
    tok.save(path)
    trained = json.loads(path.read_text())  # merges-only layout
    BPETokenizer(tok.tokens, special_tokens=tok.special_tokens).save(path)  # no merges given
    listed = json.loads(path.read_text())  # explicit "tokens" layout
    return trained, listed


@pytest.fixture(scope="module")
def docs(tok, tmp_path_factory):
    return _docs(tok, tmp_path_factory)


# Any JSON value, including the awkward ones: huge and negative ints, floats
# that JSON writes as 1e308 or NaN, lone surrogates, nested containers.
# No ints in [2**20, 2**32 - 1): before the fix in csrc/cpu/bpe_encode.cpp a
# special token id there made the native decode table that long (2**31 ids:
# 64 GiB), and a stale build must not take the machine down. The fix has its
# own test: tests/tokenizer/test_bpe_special_ids.py.
SAFE_INTS = st.one_of(
    st.integers(min_value=-1000, max_value=2**20),
    st.integers(min_value=2**32 - 1, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-1000),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    SAFE_INTS,
    st.sampled_from([0, 1, 255, 256, 257, 2**32 - 1, 2**62, 2**63, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["gpt4", "gpt2", "o200k", "shardkit-bpe", "", "\ud800", "AAAA", "=", "(", "<|x|>"]),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@st.composite
def mutated_docs(draw, base_docs):
    """A valid document with a few fields replaced, removed, added or edited in place."""
    doc = json.loads(json.dumps(draw(st.sampled_from(base_docs))))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["set", "delete", "edit-list", "edit-nested"]))
        key = draw(st.sampled_from(sorted(doc) + ["tokens", "merges", "extra"]))
        if action == "delete":
            doc.pop(key, None)
        elif action == "set" or not isinstance(doc.get(key), (list, dict)) or not doc[key]:
            doc[key] = draw(json_values)
        elif isinstance(doc[key], list):
            i = draw(st.integers(0, len(doc[key]) - 1))
            if action == "edit-nested" and isinstance(doc[key][i], list) and doc[key][i]:
                j = draw(st.integers(0, len(doc[key][i]) - 1))
                doc[key][i][j] = draw(json_values)
            else:
                doc[key][i] = draw(json_values)
        else:
            sub = draw(st.sampled_from(sorted(doc[key]) + ["<|new|>"]))
            doc[key][sub] = draw(json_values)
    return doc


def _check_load(path):
    """Load ``path``: a working tokenizer, or a ValueError naming the file."""
    try:
        with time_limit(20, f"loading {path}"):
            loaded = BPETokenizer.load(path)
    except ValueError as exc:
        assert str(path) in str(exc), f"the error does not name the file: {exc!r}"
        return None
    try:
        ids = loaded.encode(SAMPLE)
    except ValueError:
        return loaded  # a custom pattern that does not cover the text: a clear error
    assert loaded.decode(ids) == SAMPLE
    return loaded


def _writes_surrogates(doc) -> bool:
    return "\\ud8" in json.dumps(doc) or "\\udc" in json.dumps(doc) or "\\udb" in json.dumps(doc)


@fuzz
@given(data=st.data())
def test_load_mutated_documents(tmp_path, docs, data):
    doc = data.draw(mutated_docs(list(docs)))
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    _check_load(path)


@fuzz
@given(data=st.binary(max_size=400))
def test_load_arbitrary_bytes(tmp_path, data):
    path = tmp_path / "tok.json"
    path.write_bytes(data)
    _check_load(path)


@fuzz
@given(data=st.data())
def test_load_byte_level_mutations(tmp_path, tok, data):
    path = tmp_path / "tok.json"
    tok.save(path)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del raw[at : at + data.draw(st.integers(1, 16))]
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"[", b"{", b'"', b"\\", b"9" * 40]))
        else:
            del raw[at:]
        if not raw:
            raw = bytearray(b"{")
    path.write_bytes(bytes(raw))
    _check_load(path)


def test_load_deeply_nested_json(tmp_path):
    # Minimal input: a file holding "[" * 100000 (any nesting past the
    # interpreter's recursion limit): json.loads raises RecursionError.
    path = tmp_path / "tok.json"
    path.write_text("[" * 100_000)
    with pytest.raises(ValueError, match="tokenizer file"):
        BPETokenizer.load(path)


def test_load_integer_with_too_many_digits(tmp_path, docs):
    # Minimal input: the saved file with "version": 9999...9 (4301+ digits).
    # Python refuses int('9' * 4301): json.loads raises a plain ValueError
    # ("Exceeds the limit (4300 digits)...") that load_json lets through
    # without naming the file (it only rewraps JSONDecodeError).
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(docs[0]).replace('"version": 1', '"version": ' + "9" * 5000))
    _check_load(path)


def test_load_lone_surrogates(tmp_path, docs):
    # JSON may spell a lone surrogate (\ud800) in any string field.
    for field in ("pattern", "special_tokens", "chat_template"):
        doc = json.loads(json.dumps(docs[0]))
        if field == "pattern":
            doc[field] = "\ud800|\\p{L}+|\\p{N}+|\\s+|[^\\p{L}\\p{N}\\s]+"
        elif field == "special_tokens":
            doc[field] = {"<|\ud800|>": 300}
        else:
            doc[field] = {"start": "<\udc80", "end": "\ud800>", "roles": ["user", "\ud800"]}
        path = tmp_path / "tok.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        loaded = _check_load(path)
        if loaded is not None and field == "chat_template":
            try:
                loaded.render_chat([{"role": "user", "content": "hi"}])
            except ValueError:
                pass


# ---- GPT-2 vocab.json + merges.txt ---------------------------------------------------


def _gpt2_texts(tok) -> tuple[str, str]:
    table = bytes_to_unicode()
    uni = lambda b: "".join(table[x] for x in b)  # noqa: E731
    vocab = {uni(t): i for i, t in enumerate(tok.tokens)}
    vocab.update(tok.special_tokens)
    merges = ["#version: 0.2"] + [f"{uni(tok.tokens[a])} {uni(tok.tokens[b])}" for a, b in tok.merges]
    return json.dumps(vocab, ensure_ascii=False), "\n".join(merges) + "\n"


def _check_gpt2(tmp_path, vocab: bytes, merges: bytes):
    v, m = tmp_path / "vocab.json", tmp_path / "merges.txt"
    v.write_bytes(vocab)
    m.write_bytes(merges)
    try:
        with time_limit(20, "from_gpt2_files"):
            loaded = BPETokenizer.from_gpt2_files(v, m)
    except ValueError:
        # Not always naming the file: a special id past 2**32 - 2 gets the
        # native "special token id ...: expected an id from N to 2**32 - 2".
        return
    assert loaded.decode(loaded.encode(SAMPLE)) == SAMPLE


def test_gpt2_files_round_trip(tmp_path, tok):
    vocab, merges = _gpt2_texts(tok)
    loaded = BPETokenizer.from_gpt2_files(_write(tmp_path / "v.json", vocab), _write(tmp_path / "m.txt", merges))
    assert loaded.tokens == tok.tokens and loaded.merges == tok.merges


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@fuzz
@given(data=st.data())
def test_gpt2_mutated_files(tmp_path, tok, data):
    vocab_text, merges_text = _gpt2_texts(tok)
    vocab = json.loads(vocab_text)
    target = data.draw(st.sampled_from(["vocab-value", "vocab-key", "vocab-whole", "merges-line", "merges-bytes"]))
    if target == "vocab-value":
        vocab[data.draw(st.sampled_from(sorted(vocab)))] = data.draw(json_values)
    elif target == "vocab-key":
        vocab[data.draw(st.text(max_size=6))] = data.draw(st.integers(-5, 400) | st.sampled_from([2**32 - 1, 2**62]))
    elif target == "vocab-whole":
        vocab = data.draw(json_values)
    lines = merges_text.splitlines()
    if target == "merges-line":
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = data.draw(st.text(max_size=10))
    merges = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    if target == "merges-bytes":
        at = data.draw(st.integers(0, len(merges)))
        merges = merges[:at] + data.draw(st.binary(min_size=1, max_size=6)) + merges[at:]
    _check_gpt2(tmp_path, json.dumps(vocab).encode("utf-8", "surrogatepass"), merges)


@pytest.mark.native  # the reference path raises ValueError already
def test_gpt2_vocab_with_special_id_beyond_int64(tmp_path, tok):
    # Minimal input: vocab.json with one extra entry {"<x>": 2**70} (any id
    # >= 2**63): BpeEncoder raises pybind11's TypeError, not a ValueError.
    vocab_text, merges_text = _gpt2_texts(tok)
    vocab = json.loads(vocab_text)
    vocab["<x>"] = 2**70
    _check_gpt2(tmp_path, json.dumps(vocab).encode(), merges_text.encode())


def test_gpt2_vocab_deeply_nested(tmp_path, tok):
    _, merges_text = _gpt2_texts(tok)
    _check_gpt2(tmp_path, b"[" * 100_000, merges_text.encode())


# ---- tiktoken-like encodings -------------------------------------------------------


@fuzz
@given(ranks=st.dictionaries(st.binary(max_size=3) | st.text(max_size=2), st.integers(-3, 300) | json_leaves,
                             max_size=8),
       pattern=st.sampled_from(["gpt2", r"\s+|\S+", 3, None]),
       specials=st.dictionaries(st.text(max_size=4), st.integers(-3, 400), max_size=3))
def test_from_tiktoken_like_objects(ranks, pattern, specials):
    # Usually too small to hold every byte; with all 256 bytes, valid more often.
    full = {bytes([b]): b for b in range(256)}
    for k, v in ranks.items():
        full[k] = v
    for candidate in (ranks, full):
        enc = types.SimpleNamespace(_mergeable_ranks=candidate, _pat_str=pattern, _special_tokens=specials)
        try:
            loaded = BPETokenizer.from_tiktoken(enc)
        except (TypeError, ValueError):
            continue
        assert loaded.decode(loaded.encode(SAMPLE, disallowed_special=())) == SAMPLE
