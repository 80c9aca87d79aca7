"""The ``shardkit`` torch.distributed backend: every op against gloo on the
same inputs (all dtypes, odd sizes, async handles), DDP and FSDP2 training
against gloo, and its failure modes (dead or stalled peer, mismatched calls)."""

import pytest
import torch.distributed as dist

import shardkit  # noqa: F401  (registers the backend)
from shardkit.testing import spawn

import backend_cases
import backend_train_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def test_registered_at_import():
    assert "shardkit" in dist.Backend.backend_list
    assert dist.Backend.default_device_backend_map.get("cpu") != "shardkit"  # gloo stays the CPU default


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_op_matches_gloo(world):
    sizes = backend_cases.SIZES if world == 3 else [0, 1, 1003]
    results = spawn(backend_cases.parity, world, args=(sizes,), backend="shardkit", timeout=300)
    for r in results:
        assert r["failures"] == [], r["failures"][:10]
        assert r["checks"] > 100


def test_every_op_matches_gloo_across_simulated_hosts():
    # 4 ranks as 2 hosts x 2: the hierarchical path (gloo between leaders made from the store).
    results = spawn(backend_cases.parity, 4, args=([0, 1, 1003],), backend="shardkit", timeout=300,
                    rank_env=lambda r: {"SHARDKIT_HOST_ID": f"host{r // 2}"})
    for r in results:
        assert r["failures"] == [], r["failures"][:10]


def test_mixed_spec_uses_shardkit_for_cpu():
    results = spawn(backend_cases.parity, 2, args=([5],), backend="cpu:shardkit,cuda:nccl", timeout=120)
    assert all(r["failures"] == [] for r in results), results


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_and_fsdp2_losses_match_gloo(world):
    results = spawn(backend_train_cases.ddp_and_fsdp2, world, args=(4,), backend="shardkit", timeout=300)
    for r in results:
        for kind in ("ddp", "fsdp2"):
            ours, ref = r[f"{kind}_shardkit"], r[f"{kind}_gloo"]
            if world == 2:
                # Two addends: a + b is the same in any order, and AVG's /2 is exact -> bit-identical.
                assert ours == ref, (kind, ours, ref)
            else:
                # Three addends sum in a different order than gloo's: a few ulps per step.
                assert ours == pytest.approx(ref, rel=1e-5), (kind, ours, ref)


def test_dead_peer_raises_naming_it():
    results = spawn(backend_cases.dead_peer, 3, backend="shardkit", timeout=60, may_die=[2])
    for rank in (0, 1):
        err = results[rank]["error"]
        assert err is not None and "rank 2" in err and ("died" in err or "aborted" in err), err
        assert results[rank]["seconds"] < 10


def test_stalled_peer_times_out_naming_it():
    results = spawn(backend_cases.stalled_peer, 2, backend="shardkit", timeout=60)
    err = results[0]["error"]
    assert err is not None and "timed out" in err and "rank 1" in err, err
    assert results[0]["seconds"] < 4


@pytest.mark.parametrize("case", ["numel", "src", "async"])
def test_mismatch_raises(case):
    results = spawn(backend_cases.mismatch, 2, args=(case,), backend="shardkit", timeout=60)
    errors = [r["error"] for r in results]
    assert all(e is not None and "CommError" in e for e in errors), errors
    assert any("mismatch" in e for e in errors), errors
    if case == "src":
        assert any("src=0" in e and "src=1" in e for e in errors), errors
