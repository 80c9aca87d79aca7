"""The activation terms of ``memory.parallel_activations`` against the bytes each rank really saves.

Measured: the peak of saved-for-backward storages alive at once during one
``forward_backward`` (saved-tensor hooks, DTensors by their local shards), per
rank. The formula is exact for the GPT in fp32, so the check is equality, not
a tolerance: any term that drifts (a new saved tensor, a changed schedule
order in torch) fails here.
"""

import parallel_cases as pc
import pytest

pytestmark = [pytest.mark.distributed]


def _spec(num_layers=4):
    from shardkit.memory.spec import DecoderSpec

    c = pc.tiny_config(num_layers)
    return DecoderSpec(vocab=c.vocab_size, hidden=c.hidden_size, layers=num_layers, heads=c.num_heads,
                       kv_heads=c.num_kv_heads, intermediate=c.intermediate_size)


def _estimate(kw, pp_rank):
    from shardkit.memory.parallel_activations import rank_activation_bytes
    from shardkit.parallel import ParallelPlan

    return rank_activation_bytes(_spec(), ParallelPlan(**kw), pp_rank, batch=pc.BATCH, seq_len=pc.SEQ)


def test_one_process_activations_are_exact():
    [measured] = pc.activation_peaks(0, 1, [{}])
    assert measured == _estimate({}, 0)


def test_tp2_and_pp2_activations_per_rank_are_exact(world2_tp):
    plans = pc.ACTIVATION_PLANS
    results = [r["activations"] for r in world2_tp[1]]
    single = _estimate({}, 0)
    for i, kw in enumerate(plans):
        pp = kw.get("pp", 1)
        for rank, peaks in enumerate(results):
            assert peaks[i] == _estimate(kw, rank if pp > 1 else 0), (kw, rank, peaks[i])
    # TP with SP saves less than without, and both less than one process.
    tp_sp, tp_plain = results[0][0], results[0][1]
    assert tp_sp < tp_plain < single
    assert results[0][3] < single
