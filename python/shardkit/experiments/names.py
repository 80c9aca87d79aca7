"""Fictitious names and things, drawn reproducibly from a ``random.Random``.

Names are built from syllables, so none is a real person a pretrained model
(or a reader) could know, and every draw is unique within a call.
"""

from __future__ import annotations

import random

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "st",
    "th",
    "tr",
]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ia", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "x"]


def word(rng: random.Random, syllables: int) -> str:
    """A capitalised made-up word of ``syllables`` syllables."""
    return "".join(
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        for _ in range(syllables)
    ).capitalize()


def unique_words(
    rng: random.Random,
    n: int,
    syllables: tuple[int, int] = (2, 3),
    avoid: set[str] = (),
) -> list[str]:
    """``n`` distinct made-up words (none in ``avoid``)."""
    seen, out = set(avoid), []
    while len(out) < n:
        w = word(rng, rng.randint(*syllables))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def unique_pairs(
    rng: random.Random, n: int, first: list[str], last: list[str]
) -> list[tuple[str, str]]:
    """``n`` distinct (first, last) combinations drawn from the two pools."""
    if n > len(first) * len(last):
        raise ValueError(
            f"n: {n} unique names need pools of more than {len(first)} x {len(last)}"
        )
    seen, out = set(), []
    while len(out) < n:
        pair = (rng.choice(first), rng.choice(last))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out
