"""Named pre-tokenization split patterns (Python ``regex`` syntax).

``gpt4``, ``gpt2`` and ``o200k`` have hand-written native splitters that agree
byte for byte with the ``regex`` module on these exact texts (tests check it
on English, Chinese, mixed scripts, emoji and invalid UTF-8). Any other
pattern is a custom one: it is compiled with ``regex`` and split in Python,
checked and under a time limit (see :mod:`shardkit.tokenizer.splitter`).
"""

from __future__ import annotations

import re

GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

#: name -> (pattern text, code of the native splitter in shardkit._C)
NAMED_PATTERNS: dict[str, tuple[str, int]] = {
    "gpt4": (GPT4_PATTERN, 0),
    "gpt2": (GPT2_PATTERN, 1),
    "o200k": (O200K_PATTERN, 2),
}


# Text made only of these characters is meant as a name: as a regex it would
# match a fixed word (or "." any character but a newline), never every
# character, so reading it as a typo loses nothing.
_NAME_LIKE = re.compile(r"[A-Za-z0-9_.\-]+")


def resolve_pattern(pattern: str) -> tuple[str, int | None]:
    """Return ``(pattern text, native splitter code or None)`` for a name or a pattern text.

    A pattern text equal to a named one uses its native splitter too. A
    name-like string that is not a known name (``"gpt5"``) raises "unknown
    pattern name" rather than being compiled as a regex.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern: expected 'gpt4', 'gpt2', 'o200k' or a non-empty regex, got {pattern!r}")
    if pattern in NAMED_PATTERNS:
        return NAMED_PATTERNS[pattern]
    for text, code in NAMED_PATTERNS.values():
        if pattern == text:
            return text, code
    if _NAME_LIKE.fullmatch(pattern):
        raise ValueError(f"pattern: unknown pattern name {pattern!r}; expected one of {sorted(NAMED_PATTERNS)} "
                         f"or a regex")
    return pattern, None


def is_builtin_pattern(pattern: str) -> bool:
    """Whether ``pattern`` is a built-in name or the exact text of one (and so runs natively)."""
    return pattern in NAMED_PATTERNS or any(pattern == text for text, _ in NAMED_PATTERNS.values())


def compile_pattern(text: str):
    """Compile a split pattern with the ``regex`` module, with a clear error when it is invalid."""
    import regex

    try:
        return regex.compile(text)
    except regex.error as exc:
        raise ValueError(f"pattern: invalid regex {text!r}: {exc}") from None


def split_bytes_reference(text: str, data: bytes) -> list[bytes]:
    """Split ``data`` with the ``regex`` module: the spec the native splitters follow.

    Invalid UTF-8 bytes become lone surrogates (``surrogateescape``), which
    match no letter, number or space class, and come back as the same bytes.
    """
    compiled = compile_pattern(text)
    decoded = data.decode("utf-8", "surrogateescape")
    return [m.encode("utf-8", "surrogateescape") for m in compiled.findall(decoded)]
