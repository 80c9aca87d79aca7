"""``BPETokenizer``: a byte-level BPE like GPT-2/GPT-4, with native hot paths.

Ids 0-255 are the raw bytes, merge k is id 256 + k, and special tokens come
after the merges. Training breaks ties as rustbpe does (higher count, then the
smaller (left id, right id)), so merges can be compared with it exactly.
Encoding follows tiktoken (whole-chunk lookup, then byte-pair merging by
rank), special tokens included, so exported tokenizers give identical ids.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Sequence

from shardkit import _native
from shardkit.tokenizer import formats
from shardkit.tokenizer.chat import ChatEncoding, ChatTemplate, render_chat
from shardkit.tokenizer.patterns import resolve_pattern
from shardkit.tokenizer.reference import encode_reference, tokens_from_merges
from shardkit.tokenizer.splitter import Splitter
from shardkit.tokenizer.training import (
    check_documents,
    check_train_options,
    count_words,
    file_paths,
    run_merges,
    total_chunks,
)


def _default_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def _text_bytes(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__} (use encode_bytes for bytes)")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8: replace them with U+FFFD, as tiktoken does.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


class BPETokenizer:
    """A byte-level BPE tokenizer.

    Build one with :meth:`train` (files), :meth:`train_from_iterator` (texts), :meth:`load`, :meth:`from_tiktoken` or
    :meth:`from_gpt2_files`, or directly from its token table.

    Args:
        tokens: the bytes of every mergeable token, indexed by id (= rank).
            All 256 single bytes must be present.
        pattern: ``"gpt4"``, ``"gpt2"``, ``"o200k"`` (native splitters) or a custom
            ``regex`` pattern. A custom pattern must have no capture groups and
            match every character (checked here on a probe text, and on every
            text it splits); it runs in Python under a time limit linear in the
            text's length, past which encoding raises ``PatternTimeoutError``
            (see :mod:`shardkit.tokenizer.splitter`). A name-like string that
            is no known name (``"gpt5"``) raises "unknown pattern name".
        special_tokens: name -> id, every id at or after ``len(tokens)``.
        merges: the (left id, right id) pair of each token after the first
            256, when known (training and GPT-2 files give them).
        chat_template: how :meth:`render_chat` lays out messages.
    """

    def __init__(
        self,
        tokens: Sequence[bytes],
        *,
        pattern: str = "gpt4",
        special_tokens: dict[str, int] | None = None,
        merges: Sequence[tuple[int, int]] | None = None,
        chat_template: ChatTemplate | None = None,
    ):
        self._tokens = formats.check_tokens(tokens)
        self._pattern, self._native_code = resolve_pattern(pattern)
        # Custom patterns are checked here (groups, coverage), so a bad one fails at load, not at encode.
        self._splitter = Splitter(self._pattern) if self._native_code is None else None
        self._special = formats.check_special_tokens(special_tokens or {}, self._tokens)
        self._merges = formats.check_merges(merges, self._tokens) if merges is not None else None
        self.chat_template = chat_template or ChatTemplate()
        self._id_of_special = {name.encode("utf-8"): i for name, i in self._special.items()}
        self._special_regex: dict[frozenset, re.Pattern] = {}
        self._ranks: dict[bytes, int] | None = None
        self._encoder = None
        if _native.C is not None:
            specials = [(i, name.encode("utf-8")) for name, i in self._special.items()]
            self._encoder = _native.C.BpeEncoder(self._native_code or 0, self._tokens, specials)

    # ---- training --------------------------------------------------------

    @classmethod
    def train(
        cls,
        files,
        vocab_size: int,
        *,
        pattern: str = "gpt4",
        special_tokens: Sequence[str] = (),
        min_frequency: int = 1,
        threads: int | None = None,
        progress: bool = False,
    ) -> BPETokenizer:
        """Train on text files and return the tokenizer (Hugging Face's ``train(files)``).

        Args:
            files: a path or a list of paths (str or os.PathLike). Strings are
                always paths; to train on strings use :meth:`train_from_iterator`.
                Each file is memory-mapped and split whole, as one document.
                A missing file raises FileNotFoundError naming it.
            vocab_size: 256 bytes + merges + special tokens, at most
                ``MAX_VOCAB_SIZE`` (2**31, so every id fits int32). Training
                stops early when no pair is left (or none reaches min_frequency).
            pattern: the split pattern (see :mod:`shardkit.tokenizer.patterns`).
            special_tokens: names of special tokens, given ids after the merges.
            min_frequency: a pair occurring fewer times is never merged.
            threads: threads for splitting and counting (default: torch's).
            progress: show progress bars (bytes read, then merges).
        """
        options = check_train_options(vocab_size, special_tokens, min_frequency, threads, _default_threads)
        pattern_text, native_code = resolve_pattern(pattern)
        paths = file_paths(files)
        return cls._train(paths, None, pattern_text, native_code, options, progress)

    @classmethod
    def train_from_iterator(
        cls,
        iterator: Iterable[str | bytes],
        vocab_size: int,
        *,
        pattern: str = "gpt4",
        special_tokens: Sequence[str] = (),
        min_frequency: int = 1,
        threads: int | None = None,
        progress: bool = False,
    ) -> BPETokenizer:
        """Train on documents and return the tokenizer (Hugging Face's ``train_from_iterator``).

        Args:
            iterator: an iterable of str or bytes documents (a list, a
                generator, a ``datasets`` column), each split on its own. A
                str must be valid Unicode: a lone surrogate raises ValueError
                naming the document and the position. Bytes are taken as they
                are (invalid UTF-8 included).

        The other arguments are those of :meth:`train`.
        """
        options = check_train_options(vocab_size, special_tokens, min_frequency, threads, _default_threads)
        pattern_text, native_code = resolve_pattern(pattern)
        documents = check_documents(iterator)
        return cls._train(None, documents, pattern_text, native_code, options, progress)

    @classmethod
    def _train(cls, files, documents, pattern_text, native_code, options, progress) -> BPETokenizer:
        vocab_size, special_tokens, min_frequency, threads = options
        bar = None
        if progress:
            from tqdm import tqdm

            total = sum(p.stat().st_size for p in files) if files is not None else None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc="counting")
        try:
            counts = count_words(files, documents, pattern_text, native_code, threads, bar)
        finally:
            if bar is not None:
                bar.close()
        if total_chunks(counts) == 0:
            raise ValueError(f"{'files' if files is not None else 'iterator'}: empty corpus (no text to train on)")

        num_merges = vocab_size - 256 - len(special_tokens)
        on_progress = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=num_merges, unit="merge", desc="merging")

            def on_progress(done, _total):
                bar.update(done - bar.n)

        try:
            merges = run_merges(counts, num_merges, min_frequency, on_progress)
        finally:
            if progress:
                bar.close()
        tokens = tokens_from_merges(merges)
        specials = {name: len(tokens) + j for j, name in enumerate(special_tokens)}
        return cls(tokens, pattern=pattern_text, special_tokens=specials, merges=merges)

    # ---- properties --------------------------------------------------------

    @property
    def pattern(self) -> str:
        """The split pattern text."""
        return self._pattern

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token name -> id (a copy)."""
        return dict(self._special)

    @property
    def tokens(self) -> list[bytes]:
        """The mergeable tokens' bytes, indexed by id (a copy)."""
        return list(self._tokens)

    @property
    def merges(self) -> list[tuple[int, int]]:
        """(left id, right id) of every token after the first 256, in id order.

        Derived from the ranks (as HF's tiktoken converter does) when the
        tokenizer came without merges.
        """
        if self._merges is None:
            self._merges = formats.merges_from_ranks(self._tokens)
        return list(self._merges)

    @property
    def vocab_size(self) -> int:
        """Number of ids: mergeable tokens and special tokens (with any gap between)."""
        return max([len(self._tokens)] + [i + 1 for i in self._special.values()])

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (a special token's name for a special id)."""
        return self.decode_bytes([token_id])

    # ---- encoding --------------------------------------------------------

    def _ranks_dict(self) -> dict[bytes, int]:
        if self._ranks is None:
            self._ranks = {t: i for i, t in enumerate(self._tokens)}
        return self._ranks

    def _encode_ordinary_bytes(self, data: bytes) -> list[int]:
        if self._encoder is None:
            return encode_reference(self._pattern, self._ranks_dict(), data)
        if self._native_code is not None:
            return self._encoder.encode(data)
        offsets = [0]
        for chunk in self._splitter.split_bytes(data):
            offsets.append(offsets[-1] + len(chunk))
        return self._encoder.encode_chunks(data, offsets)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` with no special-token handling at all."""
        return self._encode_ordinary_bytes(_text_bytes(text))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Encode arbitrary bytes (no special tokens); ``decode_bytes`` gives them back exactly."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expected bytes, got {type(data).__name__}")
        return self._encode_ordinary_bytes(bytes(data))

    def _allowed(self, allowed_special, disallowed_special) -> tuple[set[str], set[str]]:
        names = set(self._special)
        if allowed_special == "all":
            allowed = names
        else:
            allowed = set(allowed_special)
            unknown = allowed - names
            if unknown:
                raise ValueError(f"allowed_special: {sorted(unknown)} are not special tokens of this tokenizer")
        if disallowed_special == "all":
            disallowed = names - allowed
        else:
            disallowed = set(disallowed_special)
        return allowed, disallowed

    def _check_disallowed(self, text: str, disallowed: set[str]) -> None:
        for name in disallowed:
            if name in text:
                raise ValueError(
                    f"text contains the special token {name!r}, which is disallowed. Pass "
                    f"allowed_special={{{name!r}}} (or 'all') to encode it as the special token, or "
                    f"disallowed_special=() to encode it as ordinary text."
                )

    def encode(
        self,
        text: str,
        *,
        allowed_special: Collection[str] | str = (),
        disallowed_special: Collection[str] | str = "all",
    ) -> list[int]:
        """Encode ``text`` to ids, with special tokens handled as tiktoken does.

        Special tokens in ``allowed_special`` (or all with ``"all"``) become
        their ids. Text matching a token in ``disallowed_special`` (by default
        every special token not allowed) raises a ValueError; a special token
        in neither set is encoded as ordinary text.
        """
        data = _text_bytes(text)
        allowed, disallowed = self._allowed(allowed_special, disallowed_special)
        if disallowed:
            self._check_disallowed(text, disallowed)
        if not allowed or not any(name in text for name in allowed):
            return self._encode_ordinary_bytes(data)
        ids: list[int] = []
        regex = self._special_split_regex(frozenset(allowed))
        start = 0
        for m in regex.finditer(data):
            ids.extend(self._encode_ordinary_bytes(data[start : m.start()]))
            ids.append(self._id_of_special[m.group()])
            start = m.end()
        ids.extend(self._encode_ordinary_bytes(data[start:]))
        return ids

    def _special_split_regex(self, allowed: frozenset) -> re.Pattern:
        compiled = self._special_regex.get(allowed)
        if compiled is None:
            # Longest first, so a special token that contains another wins.
            names = sorted(allowed, key=lambda s: (-len(s), s))
            compiled = re.compile(b"|".join(re.escape(n.encode("utf-8")) for n in names))
            self._special_regex[allowed] = compiled
        return compiled

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int | None = None,
        allowed_special: Collection[str] | str = (),
        disallowed_special: Collection[str] | str = "all",
    ) -> list[list[int]]:
        """Encode many texts; the native encoder runs on ``num_threads`` threads without the GIL."""
        texts = list(texts)
        allowed, disallowed = self._allowed(allowed_special, disallowed_special)
        plain = self._encoder is not None and self._native_code is not None
        if plain and allowed:
            plain = not any(name in t for t in texts for name in allowed)
        if not plain:
            return [self.encode(t, allowed_special=allowed, disallowed_special=disallowed) for t in texts]
        data = []
        for t in texts:
            if disallowed:
                self._check_disallowed(t, disallowed)
            data.append(_text_bytes(t))
        threads = _default_threads() if num_threads is None else int(num_threads)
        if threads < 1:
            raise ValueError(f"num_threads: expected >= 1, got {threads}")
        return self._encoder.encode_batch(data, threads)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The concatenated bytes of ``ids`` (special tokens as their names)."""
        ids = [int(i) for i in ids]
        if self._encoder is not None:
            if ids and not 0 <= min(ids) <= max(ids) < formats.MAX_TOKEN_ID:  # the native decoder takes int64
                k = next(k for k, i in enumerate(ids) if not 0 <= i < formats.MAX_TOKEN_ID)
                raise ValueError(f"ids[{k}]: unknown token id {ids[k]}")
            return self._encoder.decode(ids)
        out = bytearray()
        inverse = {i: n.encode("utf-8") for n, i in self._special.items()}
        for k, i in enumerate(ids):
            if 0 <= i < len(self._tokens):
                out += self._tokens[i]
            elif i in inverse:
                out += inverse[i]
            else:
                raise ValueError(f"ids[{k}]: unknown token id {i}")
        return bytes(out)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Decode ids to text; invalid UTF-8 is handled per ``errors`` (as bytes.decode)."""
        return self.decode_bytes(ids).decode("utf-8", errors)

    # ---- chat ------------------------------------------------------------

    def render_chat(self, messages: Sequence[dict], *, add_generation_prompt: bool = False) -> ChatEncoding:
        """Render chat messages to ids plus an assistant mask (1 on trained tokens).

        See :class:`shardkit.tokenizer.chat.ChatTemplate` for the layout.
        """
        return render_chat(self, self.chat_template, messages, add_generation_prompt=add_generation_prompt)

    # ---- formats ---------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: temp file, then rename)."""
        formats.save_json(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, trust_pattern: bool = False) -> BPETokenizer:
        """Read a tokenizer saved by :meth:`save`. Plain JSON: loading never runs code.

        Args:
            path: the JSON file.
            trust_pattern: accept a split pattern other than the built-in ones
                (gpt4, gpt2, o200k). Off by default: a custom pattern is a regex
                from the file that runs on every text you encode, and a hostile
                one can backtrack for minutes or split text in surprising
                ways. Even when trusted it is checked at load (no capture
                groups, every character matched) and runs under a time limit
                (see :mod:`shardkit.tokenizer.splitter`); pass True for files
                you wrote yourself or otherwise trust.
        """
        if not isinstance(trust_pattern, bool):
            raise TypeError(f"trust_pattern: expected bool, got {type(trust_pattern).__name__}")
        return formats.load_json(cls, path, trust_pattern)

    def save_hf(self, directory: str | os.PathLike) -> None:
        """Export Hugging Face ``tokenizer.json`` (+ ``tokenizer_config.json`` with the chat template)."""
        formats.save_hf(self, directory)

    def to_tiktoken(self, name: str = "shardkit"):
        """A ``tiktoken.Encoding`` with the same ranks, pattern and special tokens."""
        return formats.to_tiktoken(self, name)

    @classmethod
    def from_tiktoken(cls, encoding) -> BPETokenizer:
        """Import a ``tiktoken.Encoding`` (its ranks, pattern and special tokens)."""
        return formats.from_tiktoken(cls, encoding)

    @classmethod
    def from_gpt2_files(
        cls,
        vocab_json: str | os.PathLike,
        merges_txt: str | os.PathLike,
        *,
        pattern: str = "gpt2",
    ) -> BPETokenizer:
        """Load a GPT-2-style ``vocab.json`` + ``merges.txt``.

        Ids are kept: the 256 byte tokens and one per merge must hold ids
        0 .. 255 + merges (GPT-2's layout); entries past those, such as
        ``<|endoftext|>``, become special tokens.
        """
        return formats.load_gpt2_files(cls, vocab_json, merges_txt, pattern)

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self._tokens) - 256}, "
            f"special_tokens={len(self._special)}, pattern={self._pattern[:24]!r}...)"
        )
