"""Best-fit-decreasing packing of tokenized examples into rows of ``max_length``.

Each row keeps ``seq_lengths``: the collator turns them into ``position_ids``
that restart at 0 per document, and the model keeps attention inside each
document (see ``shardkit.models.attention_mask``). The bin choice matches
TRL's ``pack_dataset(strategy="bfd")``: longest first (stable), into the
fullest open row it fits, ties to the row opened first.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque


def pack_best_fit(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Pack ``input_ids``/``labels`` examples; longer ones are truncated to ``max_length``."""
    if not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int for packing, got {max_length!r}")
    items = [{k: v[:max_length] for k, v in ex.items()} for ex in examples if len(ex["input_ids"]) > 0]
    order = sorted(range(len(items)), key=lambda i: -len(items[i]["input_ids"]))
    bins: list[list[int]] = []
    by_space: dict[int, deque] = defaultdict(deque)  # free space -> bins with it, oldest first
    spaces: list[int] = []  # sorted distinct free spaces (excluding full rows and brand-new rows)
    for i in order:
        length = len(items[i]["input_ids"])
        j = bisect.bisect_left(spaces, length)
        if j < len(spaces):
            space = spaces[j]
            b = by_space[space].popleft()
            if not by_space[space]:
                spaces.pop(j)
        else:
            space, b = max_length, len(bins)
            bins.append([])
        bins[b].append(i)
        left = space - length
        if left > 0:
            if not by_space[left]:
                bisect.insort(spaces, left)
            by_space[left].append(b)
    packed = []
    for members in bins:
        row = {k: [t for i in members for t in items[i][k]] for k in items[members[0]]}
        row["seq_lengths"] = [len(items[i]["input_ids"]) for i in members]
        packed.append(row)
    return packed
