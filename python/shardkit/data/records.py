"""Reading and checking dataset records: JSONL files and Hugging Face ``datasets``.

Every record is a dict. Its *kind* says which fields it must have:

========================  ==============================================
``text``                  ``text`` (pretraining)
``prompt_completion``     ``prompt``, ``completion``
``messages``              ``messages`` (a conversation: role/content dicts)
``preference``            ``prompt``, ``chosen``, ``rejected``
``unpaired_preference``   ``prompt``, ``completion``, ``label`` (KTO)
========================  ==============================================

For prompt/completion, preference and KTO records, the text fields may be
strings or conversations (lists of role/content dicts), as in TRL.
A malformed record raises ``DataFormatError`` naming the file, the line and
the field; so do a line that is not UTF-8 and JSON nested too deeply to
parse. Message roles and contents must be strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired_preference": ("prompt", "completion", "label"),
}


class DataFormatError(ValueError):
    """A record is not what its dataset kind needs; the message says where and what."""


def _check_conversation(value: Any, where: str, field: str) -> None:
    if not isinstance(value, list) or not value:
        raise DataFormatError(f"{where}: field {field!r} must be a non-empty list of messages")
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise DataFormatError(f"{where}: field {field!r} message {i} must be a dict with 'role' and 'content'")
        # Checked here, where the file and line are known: a chat template
        # fails later on a non-string with no idea which record it came from.
        for key in ("role", "content"):
            if not isinstance(message[key], str):
                raise DataFormatError(f"{where}: field {field!r} message {i} {key!r} must be a string, "
                                      f"got {type(message[key]).__name__}")


def detect_kind(record: Any, kinds: tuple[str, ...], where: str) -> str:
    """The first of ``kinds`` whose leading field the record has (``prompt`` -> prompt/completion, ...)."""
    if isinstance(record, Mapping):
        for kind in kinds:
            if KIND_FIELDS[kind][0] in record:
                return kind
    expected = " or ".join(repr(KIND_FIELDS[k][0]) for k in kinds)
    raise DataFormatError(f"{where}: cannot tell the dataset kind: expected a field {expected}")


def check_record(record: Any, kind: str | tuple[str, ...], where: str) -> dict[str, Any]:
    """Validate one record of ``kind``; ``where`` (e.g. ``"data.jsonl line 3"``) goes in errors."""
    if isinstance(kind, tuple):
        kind = detect_kind(record, kind, where)
    if kind not in KIND_FIELDS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(KIND_FIELDS)}")
    if not isinstance(record, Mapping):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in KIND_FIELDS[kind]:
        if field not in record or record[field] is None:
            raise DataFormatError(f"{where}: missing field {field!r} (a {kind!r} record needs {list(KIND_FIELDS[kind])})")
    for field in KIND_FIELDS[kind]:
        value = record[field]
        if field == "label":
            if not isinstance(value, bool):
                raise DataFormatError(f"{where}: field 'label' must be true or false, got {value!r}")
        elif field == "messages" or isinstance(value, list):
            _check_conversation(value, where, field)
        elif not isinstance(value, str):
            raise DataFormatError(f"{where}: field {field!r} must be a string or a list of messages, "
                                  f"got {type(value).__name__}")
        elif field not in ("prompt",) and value == "":
            raise DataFormatError(f"{where}: field {field!r} is empty")
    return dict(record)


def read_jsonl(path: str | os.PathLike, kind: str | tuple[str, ...]) -> list[dict[str, Any]]:
    """All records of a JSONL file, each checked as ``kind``. Blank lines are skipped.

    With a tuple of kinds, the first record decides which one (``detect_kind``).
    """
    records = []
    # Bytes, decoded line by line, so that invalid UTF-8 is reported with its line.
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{os.fspath(path)} line {line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at byte column "
                                      f"{exc.start + 1}); JSONL files must be UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            except RecursionError:
                raise DataFormatError(f"{where}: JSON nested too deeply to read") from None
            if isinstance(kind, tuple):
                kind = detect_kind(record, kind, where)
            records.append(check_record(record, kind, where))
    if not records:
        raise DataFormatError(f"{os.fspath(path)}: no records")
    return records


def load_records(source: Any, kind: str | tuple[str, ...]) -> list[dict[str, Any]]:
    """Records from a JSONL path, a Hugging Face ``datasets.Dataset``, or a list of dicts.

    Every record is checked as ``kind`` (see the module docstring); with a
    tuple of kinds, the first record decides which one.
    """
    if isinstance(source, (str, os.PathLike)):
        return read_jsonl(source, kind)
    if not isinstance(source, Iterable):
        raise TypeError(f"dataset must be a JSONL path, a datasets.Dataset or a list of dicts, "
                        f"got {type(source).__name__}")
    name = type(source).__name__
    records = []
    for i, r in enumerate(source):
        if isinstance(kind, tuple):
            kind = detect_kind(r, kind, f"{name} row {i}")
        records.append(check_record(r, kind, f"{name} row {i}"))
    if not records:
        raise DataFormatError(f"{name}: no records")
    return records
