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

import torch

from shardkit.speedrun import arithmetic, config, corpus_data
from shardkit.speedrun.evaluate import load_model
from shardkit.speedrun.worker import load_tokenizer

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
    assert list(state["stages"]) == ["tokenizer", "pretrain", "sft", "dpo", "grpo"]
    settings = config.resolve("micro")
    previous = None
    for stage in ("pretrain", "sft", "dpo", "grpo"):
        training = state["stages"][stage]["training"]
        assert training["world_size"] == 2
        steps = [e["step"] for e in training["log_history"] if "loss" in e]
        assert steps[-1] == settings[stage]["max_steps"]
        weights = load_file(out / stage / "model.safetensors")
        # Each stage starts from the previous one's weights and changes them. GRPO changes them only when some
        # sampled answers earn more reward than others (the micro model may earn none: zero advantages, no update).
        rewards = [e["reward_std"] for e in training["log_history"] if "reward_std" in e]
        if previous is not None and (stage != "grpo" or any(r > 0 for r in rewards)):
            assert any(not weights[k].equal(previous[k]) for k in weights)
        previous = weights
    grpo_logs = [e for e in state["stages"]["grpo"]["training"]["log_history"] if "loss" in e]
    assert all("rewards/exact_match_reward/mean" in e and "rewards/format/mean" in e for e in grpo_logs)
    assert f"report at {out / 'report.md'}" in stdout.strip().splitlines()[-1]


def test_figures_agree_with_the_saved_answers(run):
    out, _ = run
    state = json.loads((out / "state.json").read_text())
    _, test = arithmetic.split_problems(state["config"]["arithmetic"], state["config"]["run"]["seed"])
    for stage in ("pretrain", "sft", "dpo", "grpo"):
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
    previous = None
    for stage in ("pretrain", "sft", "dpo", "grpo"):
        ev = state["stages"][stage]["eval"]
        change = "-" if previous is None else f"{ev['exact_match'] - previous:+.1%}"
        ratio = ev["perplexity"] / state["stages"]["pretrain"]["eval"]["perplexity"]
        assert f"| {stage} | {ev['exact_match']:.1%} | {ev['perplexity']:.2f} | {change} | {ratio:.2f}x |" in report
        previous = ev["exact_match"]
        tps = state["stages"][stage]["training"]["tokens_per_second"]
        assert re.search(rf"\| {stage} \| 2 \| \d+ \| [\d,]+ \| [\d.]+ \| {tps:,.0f} \|", report)
        width, height = _png_size(out / f"loss_{stage}.png")
        assert width > 100 and height > 100
        assert f"(loss_{stage}.png)" in report
    assert f"{state['stages']['dpo']['training']['eval']['eval_rewards/accuracies']:.1%} on held-out pairs" in report
    _png_size(out / "memory.png")
    width, _ = _png_size(out / "stages.png")  # exact match and perplexity per stage
    assert width > 300 and "(stages.png)" in report
    assert "GRPO: 4 sampled answers per training problem" in report
    assert f"DPO: {state['stages']['dpo']['pairs']} training pairs, each rejecting the SFT model's own" in report
    for stage in ("SFT", "DPO", "GRPO"):  # every stage's gain (or loss) is said in words
        assert re.search(rf"^- {stage} (raised|left|LOWERED) exact match", report, re.M)
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
    before = (out / "dpo" / "model.safetensors").stat().st_mtime_ns
    first_grpo = state["stages"].pop("grpo")  # as if the run had stopped before GRPO
    state_path.write_text(json.dumps(state))
    shutil.rmtree(out / "grpo")
    again = speedrun(no_hf_env, out)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("tokenizer", "pretrain", "sft", "dpo"):
        assert f"speedrun: {stage} already done, skipped" in again.stdout
    assert "speedrun: grpo\n" in again.stdout
    assert (out / "dpo" / "model.safetensors").stat().st_mtime_ns == before
    # The rerun stage is the same computation: same prompts, seed, sampled answers and starting weights.
    second_grpo = json.loads(state_path.read_text())["stages"]["grpo"]
    keys = ("loss", "reward", "completions/mean_length")
    logs = [[e[k] for e in g["training"]["log_history"] if "loss" in e for k in keys]
            for g in (first_grpo, second_grpo)]
    assert logs[0] == pytest.approx(logs[1], rel=1e-6)
    assert second_grpo["eval"]["test_answers"] == first_grpo["eval"]["test_answers"]
    # A finished run reruns nothing, GRPO included.
    done = speedrun(no_hf_env, out)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("tokenizer", "pretrain", "sft", "dpo", "grpo"):
        assert f"speedrun: {stage} already done, skipped" in done.stdout


@torch.no_grad()
def _greedy(model, tokenizer, problem, max_new_tokens):
    """The model's greedy answer, one token at a time over the whole unpadded sequence (no cache, no batch)."""
    stops = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    ids = tokenizer.apply_chat_template(problem.prompt(), add_generation_prompt=True)
    out = []
    for _ in range(max_new_tokens):
        token = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        if token in stops:
            break
        out.append(token)
    return tokenizer.decode(out)


def test_dpo_pairs_reject_the_sft_models_own_wrong_answers(run):
    out, _ = run
    state = json.loads((out / "state.json").read_text())
    settings = state["config"]
    train, _ = arithmetic.split_problems(settings["arithmetic"], settings["run"]["seed"])
    by_question = {p.question: p for p in train}
    pairs = [json.loads(line) for line in (out / "dpo" / "train.jsonl").read_text().splitlines()]
    assert len(pairs) == state["stages"]["dpo"]["pairs"] > 0
    tokenizer = load_tokenizer(out)
    model = load_model(out / "sft" / "model.safetensors", settings, len(tokenizer))
    for pair in pairs[:24]:
        problem = by_question[pair["prompt"][0]["content"]]  # a training problem
        rejected, chosen = pair["rejected"][0]["content"], pair["chosen"][0]["content"]
        a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)=\?", problem.question).groups()
        assert int(chosen) == (int(a) + int(b) if op == "+" else int(a) - int(b))  # the right answer
        assert rejected != chosen
        assert rejected == _greedy(model, tokenizer, problem, settings["eval"]["max_new_tokens"])  # the model's own


def test_sft_replays_pretraining_text(run):
    out, _ = run
    state = json.loads((out / "state.json").read_text())
    settings = state["config"]
    rows = [json.loads(line) for line in (out / "sft" / "train.jsonl").read_text().splitlines()]
    text = [r for r in rows if r["kind"] == "text"]
    fraction = settings["data"]["sft_text_fraction"]
    assert len(text) / len(rows) == pytest.approx(fraction, abs=0.01)
    assert state["stages"]["sft"]["text_rows"] == len(text)
    # Text rows are windows of the training text, every token trained; arithmetic rows train the answer only.
    train_texts, _ = corpus_data.split_texts(settings["tokenizer"]["texts"], settings["data"]["held_out"])
    stream = corpus_data.token_stream(load_tokenizer(out), train_texts)
    joined = ",".join(map(str, stream))
    for r in text[:10]:
        assert len(r["input_ids"]) == settings["data"]["sft_text_len"] and r["labels"] == r["input_ids"]
        assert ",".join(map(str, r["input_ids"])) in joined
    for r in [r for r in rows if r["kind"] == "arithmetic"][:10]:
        trained = [t for t in r["labels"] if t != -100]
        assert 0 < len(trained) < len(r["input_ids"])
    # The mix keeps held-out prose perplexity near pretraining's (the bound: 3x).
    base = state["stages"]["pretrain"]["eval"]["perplexity"]
    for stage in ("sft", "dpo", "grpo"):
        assert state["stages"][stage]["eval"]["perplexity"] < 3 * base


def test_other_settings_in_the_same_directory_are_refused(run, no_hf_env, tmp_path):
    out, _ = run
    override = tmp_path / "c.toml"
    override.write_text("[pretrain]\nmax_steps = 3\n")
    refused = speedrun(no_hf_env, out, "--config", str(override))
    assert refused.returncode != 0 and "other settings" in refused.stderr and "--restart" in refused.stderr
