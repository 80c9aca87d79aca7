"""The obvious BPE, in pure Python: the spec the native code is tested against.

``train_reference`` recounts every pair before each merge and takes the most
frequent one, ties to the smaller ``(left id, right id)`` (rustbpe's rule).
``encode_reference`` is tiktoken's byte-pair merge: the adjacent pair whose
concatenated bytes have the lowest rank merges first, leftmost on ties.
Both are slow; they also serve as the fallback when ``shardkit._C`` is absent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from shardkit.tokenizer.splitter import splitter_for


def count_words_reference(pattern_text: str, documents: Iterable[bytes]) -> Counter:
    """Count the chunks of each document under ``pattern_text`` (``regex`` module, checked and time-limited)."""
    splitter = splitter_for(pattern_text)
    counts: Counter = Counter()
    for doc in documents:
        counts.update(splitter.split_bytes(doc))
    return counts


def _merge(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_reference(word_counts: dict[bytes, int], num_merges: int, min_frequency: int = 1) -> list[tuple[int, int]]:
    """Merge loop by full recount: at most ``num_merges`` merges, id of merge k is 256 + k."""
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())
    merges: list[tuple[int, int]] = []
    for k in range(num_merges):
        stats: Counter = Counter()
        for word, count in zip(words, counts):
            for pair in zip(word, word[1:]):
                stats[pair] += count
        if not stats:
            break
        best = min(stats, key=lambda p: (-stats[p], p))
        if stats[best] < min_frequency:
            break
        merges.append(best)
        words = [_merge(w, best, 256 + k) for w in words]
    return merges


def tokens_from_merges(merges: list[tuple[int, int]]) -> list[bytes]:
    """Token bytes by id: the 256 single bytes, then each merge's concatenation."""
    tokens = [bytes([b]) for b in range(256)]
    for left, right in merges:
        tokens.append(tokens[left] + tokens[right])
    return tokens


def encode_chunk_reference(ranks: dict[bytes, int], chunk: bytes) -> list[int]:
    """tiktoken's byte-pair merge of one chunk."""
    if chunk in ranks:
        return [ranks[chunk]]
    parts = [chunk[i : i + 1] for i in range(len(chunk))]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best is None or rank < best):
                best, at = rank, i
        if best is None:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return [ranks[p] for p in parts]


def encode_reference(pattern_text: str, ranks: dict[bytes, int], data: bytes) -> list[int]:
    """Split ``data`` with the ``regex`` module (checked and time-limited) and encode each chunk."""
    ids: list[int] = []
    for chunk in splitter_for(pattern_text).split_bytes(data):
        ids.extend(encode_chunk_reference(ranks, chunk))
    return ids
