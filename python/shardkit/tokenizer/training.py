"""Pre-tokenization and counting for BPE training, and the merge loop call.

Files are memory-mapped and split natively on all threads; an iterator of
documents is batched into large buffers. Each document (and each file) is
split on its own, as rustbpe does with the strings it is given. Custom split
patterns are applied with the ``regex`` module and only the counting and the
merge loop run natively.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from shardkit import _native
from shardkit.tokenizer.patterns import compile_pattern
from shardkit.tokenizer.reference import count_words_reference, train_reference

# Documents are handed to the native counter in batches of about this many bytes.
BATCH_BYTES = 16 << 20


def _is_file_source(source) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return True
    return isinstance(source, (list, tuple)) and len(source) > 0 and all(isinstance(s, os.PathLike) for s in source)


def normalize_source(source) -> tuple[list[Path] | None, Iterable | None]:
    """Split a ``train`` source into (files, None) or (None, documents).

    A str or os.PathLike is one file; a list or tuple of os.PathLike is files;
    anything else iterable is documents (str or bytes).
    """
    if _is_file_source(source):
        paths = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(p) for p in source]
        for path in paths:
            # Opening here turns a missing or unreadable file into the usual
            # OSError naming it, before any work starts.
            with open(path, "rb"):
                pass
            if not path.is_file():
                raise ValueError(f"files: {str(path)!r} is not a regular file")
        return paths, None
    if isinstance(source, (bytes, bytearray)):
        raise TypeError("files_or_iterator: expected a path, a list of paths or an iterable of documents, got bytes")
    try:
        iter(source)
    except TypeError:
        raise TypeError(
            f"files_or_iterator: expected a path, a list of paths or an iterable of documents, got {type(source).__name__}"
        ) from None
    return None, source


def _as_bytes(doc, index: int) -> bytes:
    if isinstance(doc, str):
        return doc.encode("utf-8", "surrogateescape")
    if isinstance(doc, (bytes, bytearray, memoryview)):
        return bytes(doc)
    raise TypeError(f"documents[{index}]: expected str or bytes, got {type(doc).__name__}")


def _batches(documents: Iterable) -> Iterator[tuple[bytes, list[int]]]:
    parts: list[bytes] = []
    offsets = [0]
    for index, doc in enumerate(documents):
        data = _as_bytes(doc, index)
        parts.append(data)
        offsets.append(offsets[-1] + len(data))
        if offsets[-1] >= BATCH_BYTES:
            yield b"".join(parts), offsets
            parts, offsets = [], [0]
    if parts:
        yield b"".join(parts), offsets


def count_words(files, documents, pattern_text: str, native_code: int | None, threads: int, bar=None):
    """Count the chunks of the corpus; returns a native counter or a Counter (no native core)."""
    native = _native.C
    if native is None:
        docs = (p.read_bytes() for p in files) if files is not None else (_as_bytes(d, i) for i, d in enumerate(documents))
        return count_words_reference(pattern_text, docs)
    counter = native.BpeWordCounter()
    if native_code is None:
        compiled = compile_pattern(pattern_text)
        local: Counter = Counter()
        docs = (p.read_bytes() for p in files) if files is not None else (_as_bytes(d, i) for i, d in enumerate(documents))
        for data in docs:
            text = data.decode("utf-8", "surrogateescape")
            local.update(m.encode("utf-8", "surrogateescape") for m in compiled.findall(text))
            if bar is not None:
                bar.update(len(data))
        for chunk, count in local.items():
            counter.add(chunk, count)
        return counter
    if files is not None:
        for path in files:
            size = counter.count_file(native_code, str(path), threads)
            if bar is not None:
                bar.update(size)
    else:
        for data, offsets in _batches(documents):
            counter.count_documents(native_code, data, offsets, threads)
            if bar is not None:
                bar.update(len(data))
    return counter


def total_chunks(counts) -> int:
    return counts.total_chunks if not isinstance(counts, Counter) else sum(counts.values())


def run_merges(counts, num_merges: int, min_frequency: int, on_progress=None) -> list[tuple[int, int]]:
    """The merge loop over counted words (native, or the reference without ``_C``)."""
    if isinstance(counts, Counter):
        return train_reference(dict(counts), num_merges, min_frequency)
    return [tuple(p) for p in _native.C.bpe_train(counts, num_merges, min_frequency, on_progress)]
