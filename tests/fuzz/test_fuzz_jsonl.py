"""Fuzz the dataset readers: ``read_jsonl`` / ``load_records`` on arbitrary files and records.

The contract (shardkit.data.records): every record comes back checked, or a
``DataFormatError`` names the file and the line; never another exception type,
a RecursionError or a crash.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardkit.data import KIND_FIELDS, DataFormatError, check_record, load_records, read_jsonl
from tests.fuzz.fuzzlib import fuzz, time_limit

KINDS = sorted(KIND_FIELDS) + [tuple(sorted(KIND_FIELDS))]
FIELDS = sorted({f for fields in KIND_FIELDS.values() for f in fields}) + ["role", "content", "other"]

leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                   st.sampled_from(["", "user", "assistant", "\ud800"]))
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=8)}),
                    max_size=3)
values = st.recursive(leaves | messages, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3), max_leaves=8)
records = st.dictionaries(st.sampled_from(FIELDS), values, max_size=5) | values


def _read(path, kind):
    try:
        with time_limit(20, f"read_jsonl {path}"):
            out = read_jsonl(path, kind)
    except DataFormatError as exc:
        assert str(path) in str(exc), f"the error does not name the file: {exc!r}"
        return None
    assert out and all(isinstance(r, dict) for r in out)
    return out


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@fuzz
@given(data=st.binary(max_size=300), kind=st.sampled_from(KINDS))
def test_arbitrary_bytes(tmp_path, data, kind):
    path = tmp_path / "data.jsonl"
    path.write_bytes(data)
    _read(path, kind)


@fuzz
@given(lines=st.lists(records, min_size=0, max_size=5), blanks=st.booleans(), kind=st.sampled_from(KINDS))
def test_generated_records(tmp_path, lines, blanks, kind):
    text = "\n".join(json.dumps(r) for r in lines) + ("\n\n  \n" if blanks else "")
    path = tmp_path / "data.jsonl"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    out = _read(path, kind)
    if out is not None:
        assert out == [r for r in lines]  # every record, unchanged and in order
        # The same records as a list give the same answer.
        assert load_records(list(lines), kind) == out
    else:
        with pytest.raises(DataFormatError):
            load_records(list(lines), kind)


@fuzz
@given(record=records, kind=st.sampled_from(KINDS))
def test_check_record(record, kind):
    try:
        out = check_record(record, kind, "row 0")
    except DataFormatError as exc:
        assert "row 0" in str(exc)
        return
    assert out == record


def test_non_utf8_file(tmp_path):
    # Minimal input: a file holding the single byte b"\xff" (kind "text"):
    # read_jsonl raises UnicodeDecodeError, naming neither the file nor the line.
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xff")
    with pytest.raises(DataFormatError, match="data.jsonl line 1"):
        read_jsonl(path, "text")


def test_deeply_nested_line(tmp_path):
    # Minimal input: one line "[" * 100000: json.loads raises RecursionError.
    path = tmp_path / "data.jsonl"
    path.write_text("[" * 100_000 + "\n")
    with pytest.raises(DataFormatError, match="line 1"):
        read_jsonl(path, "text")
