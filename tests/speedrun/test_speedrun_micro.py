"""``shardkit speedrun --preset micro`` end to end on 2 ranks: every stage ran, the report holds the numbers.

One run is shared by the module (about a minute on 2 cores); the figures are
checked against what the run directory holds, recomputed independently where
they can be (exact match from the saved answers, plots decoded as PNGs).
The runs cannot import the Hugging Face packages: the main job needs only
``pip install shardkit``.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from shardkit.speedrun import arithmetic, config

pytestmark = [pytest.mark.native, pytest.mark.distributed]


HF_PACKAGES = ("transformers", "trl", "datasets", "tokenizers", "tiktoken")
BLOCKER = f"""
import sys
class _NoHF:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HF_PACKAGES!r}:
            raise ImportError(f"{{name}} is blocked: the speedrun must not need it")
sys.meta_path.insert(0, _NoHF())
"""


@pytest.fixture(scope="module")
def no_hf_env(tmp_path_factory):
    """An environment whose Python processes (the ranks too) cannot import the HF packages."""
    site = tmp_path_factory.mktemp("no_hf")
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def speedrun(env, out, *extra):
    return subprocess.run([sys.executable, "-m", "shardkit.cli", "speedrun", "--preset", "micro", "--nproc", "2",
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def run(tmp_path_factory, no_hf_env):
    out = tmp_path_factory.mktemp("speedrun")
    check = subprocess.run([sys.executable, "-c", "import transformers"], env=no_hf_env, capture_output=True)
    assert check.returncode != 0  # the blocker works
    done = speedrun(no_hf_env, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def test_every_stage_ran_and_trained(run):
    out, stdout = run
    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"]) == ["tokenizer", "pretrain", "sft", "dpo"]
    settings = config.resolve("micro")
    previous = None
    for stage in ("pretrain", "sft", "dpo"):
        training = state["stages"][stage]["training"]
        assert training["world_size"] == 2
        steps = [e["step"] for e in training["log_history"] if "loss" in e]
        assert steps[-1] == settings[stage]["max_steps"]
        weights = load_file(out / stage / "model.safetensors")
        if previous is not None:  # each stage starts from the previous one's weights and changes them
            assert any(not weights[k].equal(previous[k]) for k in weights)
        previous = weights
    assert f"report at {out / 'report.md'}" in stdout.strip().splitlines()[-1]


def test_figures_agree_with_the_saved_answers(run):
    out, _ = run
    state = json.loads((out / "state.json").read_text())
    _, test = arithmetic.split_problems(state["config"]["arithmetic"], state["config"]["run"]["seed"])
    for stage in ("pretrain", "sft", "dpo"):
        ev = state["stages"][stage]["eval"]
        expected = sum(a.strip() == p.answer for a, p in zip(ev["test_answers"], test)) / len(test)
        assert ev["exact_match"] == expected
        assert 1.0 < ev["perplexity"] < state["stages"]["tokenizer"]["vocab_size"] * 2
    dpo = state["stages"]["dpo"]["training"]
    assert 0.0 <= dpo["eval"]["eval_rewards/accuracies"] <= 1.0


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_holds_the_numbers_and_plots(run):
    out, _ = run
    state = json.loads((out / "state.json").read_text())
    report = (out / "report.md").read_text()
    for stage in ("pretrain", "sft", "dpo"):
        ev = state["stages"][stage]["eval"]
        assert f"| {stage} | {ev['exact_match']:.1%} | {ev['perplexity']:.2f} |" in report
        tps = state["stages"][stage]["training"]["tokens_per_second"]
        assert re.search(rf"\| {stage} \| 2 \| \d+ \| [\d,]+ \| [\d.]+ \| {tps:,.0f} \|", report)
        width, height = _png_size(out / f"loss_{stage}.png")
        assert width > 100 and height > 100
        assert f"(loss_{stage}.png)" in report
    assert f"{state['stages']['dpo']['training']['eval']['eval_rewards/accuracies']:.1%} on held-out pairs" in report
    _png_size(out / "memory.png")
    memory = state["stages"]["pretrain"]["training"]["memory"]
    assert len(memory["measured"]) == 2
    for item in ("params", "grads", "master_weights", "optimizer_state", "activations"):
        mib = f"{memory['estimated'][item] / 2**20:.2f}"
        assert f"| {item} | {mib} |" in report


def test_memory_measured_matches_the_estimate(run):
    out, _ = run
    memory = json.loads((out / "state.json").read_text())["stages"]["pretrain"]["training"]["memory"]
    for rank in memory["measured"]:
        states = sum(rank[k] for k in ("params", "grads", "master_weights", "optimizer_state"))
        expected = sum(memory["estimated"][k] for k in ("params", "grads", "master_weights", "optimizer_state"))
        assert abs(states - expected) <= 0.05 * expected
        # 16 bytes per parameter of mixed-precision AdamW, split over 2 ranks
        assert rank["master_weights"] == 2 * rank["params"] and rank["optimizer_state"] >= 4 * rank["params"]
        assert abs(rank["activations"] - memory["estimated"]["activations"]) <= 0.15 * memory["estimated"]["activations"]


def test_rerun_resumes_from_the_last_finished_stage(run, no_hf_env):
    out, _ = run
    state_path = out / "state.json"
    state = json.loads(state_path.read_text())
    before = (out / "sft" / "model.safetensors").stat().st_mtime_ns
    first_dpo = state["stages"].pop("dpo")  # as if the run had stopped before DPO
    state_path.write_text(json.dumps(state))
    shutil.rmtree(out / "dpo")
    again = speedrun(no_hf_env, out)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("tokenizer", "pretrain", "sft"):
        assert f"speedrun: {stage} already done, skipped" in again.stdout
    assert "speedrun: dpo\n" in again.stdout
    assert (out / "sft" / "model.safetensors").stat().st_mtime_ns == before
    # The rerun stage is the same computation: same data, seed and starting weights.
    second_dpo = json.loads(state_path.read_text())["stages"]["dpo"]
    losses = [[e["loss"] for e in d["training"]["log_history"] if "loss" in e] for d in (first_dpo, second_dpo)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert second_dpo["eval"]["test_answers"] == first_dpo["eval"]["test_answers"]


def test_other_settings_in_the_same_directory_are_refused(run, no_hf_env, tmp_path):
    out, _ = run
    override = tmp_path / "c.toml"
    override.write_text("[pretrain]\nmax_steps = 3\n")
    refused = speedrun(no_hf_env, out, "--config", str(override))
    assert refused.returncode != 0 and "other settings" in refused.stderr and "--restart" in refused.stderr
