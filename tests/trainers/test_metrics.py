"""``MetricBuffer``: per-micro-batch global values as TRL logs them, from (sum, count) pairs reduced over ranks."""

import copy

import pytest

from shardkit.trainers.metrics import MetricBuffer


def _two_ranks(records_of_rank0, records_of_rank1, derive=None):
    """Pop two ranks' buffers with a reduce that sums their pairs, as an all-reduce would."""
    buffers = [MetricBuffer(), MetricBuffer()]
    for buffer, micro_batches in zip(buffers, (records_of_rank0, records_of_rank1)):
        for records in micro_batches:
            for name, total, count, *if_empty in records:
                buffer.add(name, total, count, *if_empty)
            buffer.end_micro_batch()
    local = []  # each rank's (micro-batches, names, 2) pairs, popped from a copy
    for buffer in buffers:
        copy.deepcopy(buffer).pop(lambda t: local.append(t.clone()) or t)
    summed = local[0] + local[1]
    return [buffer.pop(lambda t: t.copy_(summed), derive) for buffer in buffers]


def test_global_value_per_micro_batch_then_mean_over_micro_batches():
    # Micro-batch 1: rank 0 has 3 examples summing to 3.0, rank 1 one example of 5.0 -> 8/4 = 2.0.
    # Micro-batch 2: 1.0 over 1 and 2.0 over 1 -> 1.5. Logged: mean of 2.0 and 1.5.
    rank0 = [[("rewards/chosen", 3.0, 3)], [("rewards/chosen", 1.0, 1)]]
    rank1 = [[("rewards/chosen", 5.0, 1)], [("rewards/chosen", 2.0, 1)]]
    for out in _two_ranks(rank0, rank1):
        assert out == {"rewards/chosen": pytest.approx((2.0 + 1.5) / 2)}


def test_empty_micro_batches_are_left_out_or_logged_as_if_empty_and_derived_metrics_use_global_values():
    # Micro-batch 2 has no rejected row on either rank: TRL appends nothing for it (KTO), so the
    # margin exists for micro-batch 1 only; entropy with no tokens logs 0 (TRL's "else 0.0").
    rank0 = [[("rewards/chosen", 1.0, 1), ("rewards/rejected", 0.0, 0), ("entropy", 4.0, 2, 0.0)],
             [("rewards/chosen", 3.0, 1), ("rewards/rejected", 0.0, 0), ("entropy", 0.0, 0, 0.0)]]
    rank1 = [[("rewards/chosen", 0.0, 0), ("rewards/rejected", -1.0, 2), ("entropy", 2.0, 2, 0.0)],
             [("rewards/chosen", 1.0, 1), ("rewards/rejected", 0.0, 0), ("entropy", 0.0, 0, 0.0)]]

    def margin(values):
        if "rewards/chosen" in values and "rewards/rejected" in values:
            return {"rewards/margins": values["rewards/chosen"] - values["rewards/rejected"]}
        return {}

    for out in _two_ranks(rank0, rank1, margin):
        assert out["rewards/chosen"] == pytest.approx((1.0 + 2.0) / 2)
        assert out["rewards/rejected"] == pytest.approx(-0.5)
        assert out["rewards/margins"] == pytest.approx(1.0 - -0.5)
        assert out["entropy"] == pytest.approx((1.5 + 0.0) / 2)


def test_alone_the_buffer_is_the_plain_per_micro_batch_mean_and_pop_empties_it():
    buffer = MetricBuffer()
    for value in (0.25, 0.75, 2.0):
        buffer.add("loss", value * 4, 4)
        buffer.end_micro_batch()
    assert buffer.pop(lambda t: t) == {"loss": pytest.approx(1.0)}
    assert buffer.pop(lambda t: t) == {}
