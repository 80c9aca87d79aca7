"""Datasets for the trainers: reading, checking, tokenizing, packing and batching.

``load_records`` reads JSONL files, HF ``datasets`` objects and lists of dicts
in five kinds (text, prompt_completion, messages, preference,
unpaired_preference); ``lm_example``/``preference_example``/``unpaired_example``
tokenize one record with TRL's rules; ``pack_best_fit`` packs; the
``collate_*`` functions batch.
"""

from shardkit.data.collate import collate_lm, collate_packed, collate_preference, collate_unpaired
from shardkit.data.packing import pack_best_fit
from shardkit.data.records import KIND_FIELDS, DataFormatError, check_record, detect_kind, load_records, read_jsonl
from shardkit.data.tokenize import lm_example, preference_example, split_prompt_completion, unpaired_example

__all__ = [
    "KIND_FIELDS", "DataFormatError", "check_record", "detect_kind", "load_records", "read_jsonl",
    "lm_example", "preference_example", "unpaired_example", "split_prompt_completion",
    "pack_best_fit", "collate_lm", "collate_packed", "collate_preference", "collate_unpaired",
]
