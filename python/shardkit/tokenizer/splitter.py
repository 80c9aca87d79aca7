"""Running a custom split pattern in Python: checked once, time-limited on every call.

The built-in patterns (``gpt4``, ``gpt2``, ``o200k``) run in native code and
come here only when the native core is missing. Any other pattern is a regex
written by a user or read from a tokenizer file (which ``BPETokenizer.load``
accepts only with ``trust_pattern=True``), so it is handled as untrusted
input, and the text it splits may be hostile too:

* **At construction** it must compile, have no capture groups (``findall``
  would return the groups rather than the chunks), and split a probe text
  (all of ASCII, letters, marks, numbers, symbols and spaces of many scripts,
  emoji, invalid UTF-8) into pieces that cover every character. A pattern
  that skips characters would drop them from the ids, so it is refused.
* **On every call** the regex runs under the ``regex`` module's ``timeout=``,
  with a budget that grows linearly with the text (:func:`time_limit`). An
  ordinary pattern splits megabytes per second, far inside it; catastrophic
  backtracking grows exponentially and overruns it within a few dozen
  characters. Running out raises :class:`PatternTimeoutError` naming the
  pattern. The pieces are also checked to cover the text, since the probe
  cannot exercise every input: a gap raises ValueError naming the position.

The limit has a price: with ``timeout=`` the ``regex`` module checks the
clock as it matches, which makes splitting 3-5x slower (GPT-style patterns:
about 0.3 s per MB without, 1-2 s with, on a shared 2-core machine). That is
the cost of a custom pattern; the built-in ones do not pay it.
"""

from __future__ import annotations

import functools

from shardkit.tokenizer.patterns import compile_pattern

#: Seconds every call may take, whatever the text's length.
TIMEOUT_BASE_S = 1.0
#: Further seconds per million characters: a floor of 100 K characters per
#: second, 5-10x below what GPT-style patterns reach even with the timeout on.
TIMEOUT_PER_MCHAR_S = 10.0

# One character or more of each kind a pattern must cope with: every ASCII
# code, letters of each case class, marks, numbers, punctuation, symbols,
# spaces and line separators, format and private-use characters, astral
# emoji, and lone surrogates (how invalid UTF-8 bytes reach the regex).
_UNICODE_SAMPLE = (
    "éÉǅʰ中文あア한ДжΣςßİſﬁ"  # letters: Ll, Lu, Lt, Lm, Lo in several scripts
    "\u0301\u0903\u20dd"  # marks: Mn, Mc, Me
    "٣²½Ⅻ〇"  # numbers: Nd, No, Nl
    "。、—«»¿¡‰"  # punctuation
    "€∑©°^`"  # symbols
    "\u00a0\u2028\u2029\u3000\u0085\u200b\u200d\ufeff\ue000"  # spaces, separators, Cf, Co
    "😀👍🏽𝔘"  # astral
    "\udc80\udcff"  # invalid UTF-8 bytes under surrogateescape
)
PROBE_TEXT = (
    "".join(map(chr, range(128)))
    + "Hello, World! It's 12345 o'clock; we'll see.\r\n\tTabs\t and  spaces   \n\n"
    + _UNICODE_SAMPLE
    + " "
    + " ".join(_UNICODE_SAMPLE)
    + " 東京タワー Café naïve x² Ⅻ ab\udc80cd 1\udcff2 \n"
)


class PatternTimeoutError(TimeoutError):
    """A custom split pattern ran past its time limit (most likely catastrophic backtracking)."""


def time_limit(num_chars: int) -> float:
    """Seconds a custom pattern may take to split ``num_chars`` characters."""
    return TIMEOUT_BASE_S + TIMEOUT_PER_MCHAR_S * num_chars / 1e6


def _short(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")


class Splitter:
    """A custom split pattern, checked at construction and time-limited per call.

    Raises ValueError when the pattern does not compile, has capture groups,
    or leaves a character of the probe text unmatched.
    """

    def __init__(self, pattern: str):
        self.pattern = pattern
        self._compiled = compile_pattern(pattern)
        if self._compiled.groups:
            raise ValueError(
                f"pattern: {_short(pattern)} has {self._compiled.groups} capture group(s); a split pattern must "
                f"have none (write (?:...) for grouping)"
            )
        self.split_str(PROBE_TEXT, what="the probe text")

    def split_str(self, text: str, *, what: str = "text") -> list[str]:
        """The pieces of ``text``, which concatenate back to it exactly (empty pieces may occur).

        Raises PatternTimeoutError past :func:`time_limit`, and ValueError
        when the pattern leaves a character of ``text`` unmatched.
        """
        limit = time_limit(len(text))
        try:
            # findall is about 3x faster than a finditer loop. Its matches do
            # not overlap and come in order, so they cover the text exactly
            # when their lengths add up to it; only then is the slow search
            # for the gap needed.
            pieces = self._compiled.findall(text, timeout=limit)
            if sum(map(len, pieces)) != len(text):
                end = 0
                for m in self._compiled.finditer(text, timeout=limit):
                    if m.start() != end:
                        break
                    end = m.end()
                self._gap(text, end, what)
        except TimeoutError:
            raise PatternTimeoutError(
                f"pattern: {_short(self.pattern)} took over {limit:.1f} s to split {len(text)} characters "
                f"(catastrophic backtracking?); fix the pattern or use 'gpt4', 'gpt2' or 'o200k'"
            ) from None
        return pieces

    def _gap(self, text: str, at: int, what: str):
        char = text[at]
        raise ValueError(
            f"pattern: {_short(self.pattern)} does not match every character: {char!r} (U+{ord(char):04X}) at "
            f"position {at} of {what} is skipped, so it would be lost from the ids; add an alternative such as "
            r"'|[\s\S]' at the end"
        )

    def split_bytes(self, data: bytes, *, what: str = "text") -> list[bytes]:
        """``split_str`` on bytes: invalid UTF-8 travels as lone surrogates and comes back byte-exact."""
        text = data.decode("utf-8", "surrogateescape")
        return [piece.encode("utf-8", "surrogateescape") for piece in self.split_str(text, what=what)]


@functools.lru_cache(maxsize=16)
def splitter_for(pattern: str) -> Splitter:
    """The (cached) :class:`Splitter` of ``pattern``, for the paths that get only the pattern text."""
    return Splitter(pattern)
