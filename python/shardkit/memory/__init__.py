"""Per-rank memory of a training step: estimate it, and measure it to check.

    from shardkit import memory
    est = memory.estimate(memory.PRESETS["llama3-8b"], strategy="FULL_SHARD", world_size=8,
                          batch=1, seq_len=4096, checkpointing="every_block")
    print(est)            # table with a one-line explanation per component
    est.to_dict()         # for reports and the measured-vs-estimated plot

``shardkit memory --help`` is the same from the command line. The activation
formula is itemized in :mod:`shardkit.memory.activations`; measurement helpers
(:class:`SavedActivationCounter`, :func:`model_state_bytes`) live in
:mod:`shardkit.memory.measure`.
"""

from shardkit.fsdp.strategies import STRATEGIES
from shardkit.memory.comm_probe import CommBufferProbe
from shardkit.memory.estimate import OPTIMIZERS, PRECISIONS, MemoryEstimate, MemoryItem, estimate
from shardkit.memory.measure import SavedActivationCounter, model_state_bytes, unique_storage_bytes
from shardkit.memory.report import format_bytes, plot
from shardkit.memory.spec import PRESETS, DecoderSpec

__all__ = [
    "CommBufferProbe",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRESETS",
    "STRATEGIES",
    "DecoderSpec",
    "MemoryEstimate",
    "MemoryItem",
    "SavedActivationCounter",
    "estimate",
    "format_bytes",
    "model_state_bytes",
    "plot",
    "unique_storage_bytes",
]
