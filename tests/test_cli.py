"""The command line: `shardkit env` and `shardkit bench adam` (harness only, no timing asserts)."""

import json
import subprocess
import sys

import pytest

import shardkit
from shardkit.cli import main


def test_env_reports_the_native_core(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"shardkit {shardkit.__version__}" in out
    expected = "native core   : on" if shardkit.HAS_NATIVE else "native core   : off"
    assert expected in out
    assert "cuda kernels" in out and "nccl" in out


def test_python_dash_m_env_runs():
    out = subprocess.run([sys.executable, "-m", "shardkit.env"], capture_output=True, text=True, check=True).stdout
    assert "cpu kernels" in out or "native core   : off" in out


@pytest.mark.native
def test_bench_adam_writes_every_case(tmp_path):
    path = tmp_path / "adam.json"
    assert main(["bench", "adam", "--sizes", "1M", "--repeats", "1", "--threads", "1", "--no-deepspeed",
                 "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    cases = {r["case"] for r in result["results"]}
    assert {"torch AdamW foreach", "torch AdamW fused", "shardkit FusedAdamW", "torch fused fp32 + bf16 copy"} <= cases
    assert {r["precision"] for r in result["results"]} == {"fp32", "bf16 mixed"}
    for row in result["results"]:
        assert row["ms"] > 0 and row["pct_of_bound"] > 0
        if row["case"] == row["anchor"]:
            assert row["speedup_vs_anchor"] == 1.0
    assert result["machine"]["torch_threads"] == 1


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["no-such-command"])
