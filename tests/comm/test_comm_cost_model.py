"""algo="auto": the alpha-beta formulas, the two-point fit, the cache, the
calibration run and the `shardkit comm model` CLI."""

import json
import math
import os

import pytest

from shardkit.cli import main as cli_main
from shardkit.comm import cost_model
from shardkit.commands.comm import parse_bytes
from shardkit.testing import spawn

import calib_cases


def model(ra, rb, ta, tb):
    return cost_model.CostModel(ring=cost_model.AlgoCost(alpha=ra, beta=rb), tree=cost_model.AlgoCost(alpha=ta, beta=tb))


def test_formulas_follow_the_alpha_beta_model():
    m = model(2e-6, 1e-10, 5e-6, 3e-10)
    p, n = 16, 1 << 24
    assert m.ring_time(p, n) == pytest.approx(2 * 15 * 2e-6 + 2 * 15 / 16 * n * 1e-10)
    assert m.tree_time(p, n) == pytest.approx(2 * 4 * 5e-6 + 2 * n * 3e-10)
    assert m.ring_time(1, n) == 0.0 and m.tree_time(1, n) == 0.0
    # Latency-bound small messages on many ranks favour the tree, large ones the ring.
    big = model(2e-6, 1e-10, 2e-6, 1e-10)
    assert big.choose(1024, 4096) == "tree"
    assert big.choose(4, 1 << 30) == "ring"


def test_choose_follows_the_measured_times_over_the_fitted_lines():
    # Fitted lines that favour the tree everywhere, but the ring was measured faster at 16 MiB.
    measured = ((4096, 2e-5, 1e-5), (1 << 20, 3e-4, 2e-4), (16 << 20, 3e-3, 4e-3))
    m = cost_model.CostModel(ring=cost_model.AlgoCost(alpha=1e-5, beta=1e-9),
                             tree=cost_model.AlgoCost(alpha=1e-6, beta=1e-10), measured=measured)
    assert [m.choose(2, n) for n in (100, 4096, 1 << 20, 12 << 20, 16 << 20, 1 << 30)] == \
        ["tree", "tree", "tree", "ring", "ring", "ring"]
    assert cost_model.CostModel.from_dict(m.to_dict()) == m  # kept through the cache
    assert cost_model.CostModel.from_dict({"ring": {}, "tree": {}}).measured == ()  # caches from before


def test_fit_recovers_the_constants_of_synthetic_timings():
    truth = model(3e-6, 2e-10, 7e-6, 4e-10)
    for p in (2, 3, 4, 8):
        small, large = 4096, 4 << 20
        times = {
            "ring": (truth.ring_time(p, small), truth.ring_time(p, large)),
            "tree": (truth.tree_time(p, small), truth.tree_time(p, large)),
        }
        fitted = cost_model.fit(p, small, large, times)
        for algo in ("ring", "tree"):
            assert getattr(fitted, algo).alpha == pytest.approx(getattr(truth, algo).alpha, rel=1e-6)
            assert getattr(fitted, algo).beta == pytest.approx(getattr(truth, algo).beta, rel=1e-6)


def test_cache_roundtrip_is_atomic_and_tolerates_garbage(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARDKIT_CACHE_DIR", str(tmp_path))
    path = tmp_path / "comm_model.json"
    path.write_text("not json")
    assert cost_model.load_cached("h/2") is None
    m = model(1e-6, 1e-10, 2e-6, 2e-10)
    cost_model.store_cached("h/2", m)
    cost_model.store_cached("h/4", model(9e-6, 1e-10, 2e-6, 2e-10))
    assert cost_model.load_cached("h/2") == cost_model.CostModel.from_dict(m.to_dict())
    assert set(json.loads(path.read_text())) == {"h/2", "h/4"}
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temp file left


@pytest.mark.native
@pytest.mark.distributed
def test_calibration_measures_caches_and_reloads(tmp_path):
    out = spawn(calib_cases.run, 2, env={"SHARDKIT_CACHE_DIR": str(tmp_path)}, timeout=120)
    measured = out[0]["model"]
    assert measured["source"] == "calibrated"
    for algo in ("ring", "tree"):
        assert 0 < measured[algo]["alpha"] < 0.1 and 0 < measured[algo]["beta"] < 1e-6
    # Every rank got rank 0's constants back from the cache, and so picks alike.
    assert all(o["reloaded"] == measured for o in out)
    assert out[0]["picked"] == out[1]["picked"]
    # auto takes what the calibration measured faster at each calibrated size (and the largest beyond it).
    faster = ["tree" if tree < ring else "ring" for _, ring, tree in measured["measured"]]
    assert [n for n, _, _ in measured["measured"]] == [4096, 64 << 10, 1 << 20, 16 << 20]
    assert out[0]["picked"] == faster + faster[-1:]
    assert out[0]["key"] in json.loads((tmp_path / "comm_model.json").read_text())


def test_parse_bytes():
    assert parse_bytes("4096") == 4096 and parse_bytes("64K") == 65536 and parse_bytes("1G") == 1 << 30
    assert parse_bytes("1.5MiB") == 3 << 19
    with pytest.raises(ValueError, match="--bytes"):
        parse_bytes("lots")


def test_cli_prints_the_model_predictions(capsys):
    assert cli_main(["comm", "model", "--ranks", "1024", "--bytes", "1G", "--alpha-us", "2", "--bandwidth-gbps", "25"]) == 0
    text = capsys.readouterr().out
    m = model(2e-6, 1 / 25e9, 2e-6, 1 / 25e9)
    ring_ms = m.ring_time(1024, 1 << 30) * 1e3
    tree_ms = m.tree_time(1024, 1 << 30) * 1e3
    assert f"{ring_ms:.3f} ms" in text
    assert f"{tree_ms:.3f} ms" in text
    assert f"auto picks: {m.choose(1024, 1 << 30)}" in text
    assert "assumptions" in text and math.isfinite(ring_ms)
