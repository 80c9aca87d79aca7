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
from shardkit.tokenizer.formats import check_special_names
from shardkit.tokenizer.splitter import splitter_for
from shardkit.tokenizer.reference import train_reference

# Documents are handed to the native counter in batches of about this many bytes.
BATCH_BYTES = 16 << 20

#: The largest vocabulary: ids are stored as uint32 natively and must fit an
#: int32 for torch's embedding indices; the native merge loop refuses 2**31 merges.
MAX_VOCAB_SIZE = 1 << 31


def check_train_options(vocab_size, special_tokens, min_frequency, threads, default_threads):
    """Validated ``(vocab_size, special_tokens list, min_frequency, threads)`` of a training call."""
    if isinstance(special_tokens, (str, bytes)):
        raise TypeError("special_tokens: expected a list of str, got a single string")
    special_tokens = list(special_tokens)
    check_special_names(special_tokens)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size: expected int, got {type(vocab_size).__name__}")
    low = 256 + len(special_tokens)
    if vocab_size < low:
        raise ValueError(
            f"vocab_size: expected at least 256 + {len(special_tokens)} special tokens = {low}, got {vocab_size}"
        )
    if vocab_size > MAX_VOCAB_SIZE:
        raise ValueError(f"vocab_size: expected an int in [{low}, 2**31 = {MAX_VOCAB_SIZE}], got {vocab_size}")
    if not isinstance(min_frequency, int) or isinstance(min_frequency, bool) or min_frequency < 1:
        raise ValueError(f"min_frequency: expected an int >= 1, got {min_frequency!r}")
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads: expected >= 1, got {threads}")
    return vocab_size, special_tokens, min_frequency, threads


def file_paths(files) -> list[Path]:
    """The paths of ``BPETokenizer.train(files)``: one path or an iterable of paths.

    Strings are always paths here (the Hugging Face convention): text to
    train on goes to ``train_from_iterator``. Every file is opened once up
    front, so a missing one raises ``FileNotFoundError`` naming it before any
    work starts.
    """
    if isinstance(files, (str, os.PathLike)):
        paths = [Path(files)]
    elif isinstance(files, (bytes, bytearray, memoryview)):
        raise TypeError("files: expected a path (str or os.PathLike) or a list of paths, got bytes; "
                        "to train on text use BPETokenizer.train_from_iterator")
    else:
        try:
            items = list(files)
        except TypeError:
            raise TypeError(
                f"files: expected a path (str or os.PathLike) or a list of paths, got {type(files).__name__}"
            ) from None
        for i, item in enumerate(items):
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(f"files[{i}]: expected a path (str or os.PathLike), got {type(item).__name__}; "
                                f"to train on text use BPETokenizer.train_from_iterator")
        paths = [Path(item) for item in items]
    if not paths:
        raise ValueError("files: empty corpus (no files given)")
    for i, path in enumerate(paths):
        # open() raises FileNotFoundError / IsADirectoryError / PermissionError
        # with the path in the message; a FIFO or device would pass it, hence
        # the regular-file check.
        try:
            with open(path, "rb"):
                pass
        except UnicodeEncodeError:
            raise ValueError(f"files[{i}]: {str(path)!r} cannot be a file name (it has a lone surrogate)") from None
        if not path.is_file():
            raise ValueError(f"files: {str(path)!r} is not a regular file")
    return paths


def check_documents(iterator) -> Iterable:
    """The iterable of ``train_from_iterator``: str or bytes documents, never a bare str or path."""
    if isinstance(iterator, (str, bytes, bytearray, memoryview, os.PathLike)):
        # A bare string would be iterated character by character: almost
        # certainly a path (or one document) passed to the wrong method.
        raise TypeError(
            f"iterator: expected an iterable of str or bytes documents, got a single {type(iterator).__name__}; "
            f"pass [text] for one document, or BPETokenizer.train(files) to read files"
        )
    try:
        iter(iterator)
    except TypeError:
        raise TypeError(
            f"iterator: expected an iterable of str or bytes documents, got {type(iterator).__name__}"
        ) from None
    return iterator


def _as_bytes(doc, index: int) -> bytes:
    if isinstance(doc, str):
        try:
            return doc.encode("utf-8")
        except UnicodeEncodeError as exc:
            # A lone surrogate has no UTF-8 form. Replacing it (as encode()
            # does) would train merges on bytes the text never had.
            raise ValueError(
                f"iterator[{index}]: lone surrogate {doc[exc.start]!r} at character {exc.start}; training text "
                f"must be valid Unicode (fix the text, or pass bytes, e.g. text.encode('utf-8', 'replace'))"
            ) from None
    if isinstance(doc, (bytes, bytearray, memoryview)):
        return bytes(doc)
    raise TypeError(f"iterator[{index}]: expected str or bytes, got {type(doc).__name__}")


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


def _labelled_documents(files, documents):
    """(bytes, how errors name it) of each file or document, read lazily."""
    if files is not None:
        return ((p.read_bytes(), f"file {str(p)!r}") for p in files)
    return ((_as_bytes(d, i), f"iterator[{i}]") for i, d in enumerate(documents))


def count_words(files, documents, pattern_text: str, native_code: int | None, threads: int, bar=None):
    """Count the chunks of the corpus; returns a native counter or a Counter (no native core)."""
    native = _native.C
    if native is None or native_code is None:
        # Split in Python: custom patterns, or any pattern without the native
        # core. The splitter is checked (groups, coverage) before any file is
        # read, and time-limited per document.
        splitter = splitter_for(pattern_text)
        local: Counter = Counter()
        for data, what in _labelled_documents(files, documents):
            local.update(splitter.split_bytes(data, what=what))
            if bar is not None:
                bar.update(len(data))
        if native is None:
            return local
        counter = native.BpeWordCounter()
        for chunk, count in local.items():
            counter.add(chunk, count)
        return counter
    counter = native.BpeWordCounter()
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
