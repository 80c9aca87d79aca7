"""``report.md`` of a speedrun, with PNG plots: loss curves, memory, throughput, results."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

from shardkit.speedrun import files
from shardkit.speedrun.config import TRAINING_STAGES
from shardkit.speedrun.memory_probe import ITEMS

TITLES = {"pretrain": "Pretraining", "sft": "SFT (arithmetic, answer-only loss)", "dpo": "DPO (right over wrong answer)"}


def _dpo_loss_name(config: dict) -> str:
    types = config["dpo"].get("loss_type", "sigmoid")
    types = [types] if isinstance(types, str) else types
    weights = config["dpo"].get("loss_weights") or [1.0] * len(types)
    return " + ".join(f"{w:g} x {t}" if w != 1 else t for t, w in zip(types, weights))


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.2f}"


def plot_losses(run_dir: Path, state: dict) -> dict[str, str]:
    """One PNG per training stage: its logged loss against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for stage in TRAINING_STAGES:
        if stage not in state["stages"]:
            continue
        logs = [e for e in state["stages"][stage]["training"]["log_history"] if "loss" in e]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([e["step"] for e in logs], [e["loss"] for e in logs], marker="." if len(logs) < 30 else None)
        if stage == "dpo":
            ax2 = ax.twinx()
            ax2.plot([e["step"] for e in logs], [e.get("rewards/accuracies", float("nan")) for e in logs],
                     color="tab:orange", alpha=0.7)
            ax2.set_ylabel("reward accuracy", color="tab:orange")
        ax.set(xlabel="optimizer step", ylabel="loss", title=TITLES[stage])
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"loss_{stage}.png"
        files.write_atomic(run_dir / name, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        plt.close(fig)
        out[stage] = name
    return out


def plot_memory(run_dir: Path, memory: dict) -> str:
    """Grouped bars: estimated and measured MiB per item, for every rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("estimated", memory["estimated"])] + [(f"rank {r} measured", m) for r, m in enumerate(memory["measured"])]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (label, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(ITEMS))]
        ax.bar(xs, [values[k] / 2**20 for k in ITEMS], width, label=label)
    ax.set_xticks(range(len(ITEMS)), [k.replace("_", "\n") for k in ITEMS])
    ax.set(ylabel="MiB per rank", title=f"Memory per rank, pretraining (batch {memory['batch']} x {memory['seq_len']})")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    files.write_atomic(run_dir / "memory.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return "memory.png"


def _last(logs: list[dict], key: str):
    values = [e[key] for e in logs if key in e]
    return values[-1] if values else None


def findings(state: dict) -> list[str]:
    """What the numbers say, in sentences (including when a stage did not help)."""
    stages = state["stages"]
    em = {s: stages[s]["eval"]["exact_match"] for s in TRAINING_STAGES if s in stages}
    out = []
    if "sft" in em:
        verdict = "raised" if em["sft"] > em["pretrain"] else "did NOT raise"
        out.append(f"SFT {verdict} exact match from {em['pretrain']:.1%} to {em['sft']:.1%}.")
    if "dpo" in em:
        dpo = stages["dpo"]
        acc = dpo["training"].get("eval", {}).get("eval_rewards/accuracies")
        if acc is not None:
            out.append(f"DPO's reward accuracy on held-out pairs is {acc:.1%} ({'above' if acc > 0.5 else 'NOT above'} 0.5).")
        change = em["dpo"] - em["sft"]
        if change < 0:
            out.append(f"DPO LOWERED exact match by {-change:.1%} ({em['sft']:.1%} -> {em['dpo']:.1%}).")
        else:
            out.append(f"DPO kept exact match at or above SFT's ({em['sft']:.1%} -> {em['dpo']:.1%}).")
    ppl = {s: stages[s]["eval"]["perplexity"] for s in TRAINING_STAGES if s in stages}
    if "sft" in ppl and ppl["sft"] > 2 * ppl["pretrain"]:
        out.append(f"Prose perplexity rose from {ppl['pretrain']:.1f} to {ppl['sft']:.1f} after SFT: its data is "
                   "arithmetic only, so the model forgets the corpus (catastrophic forgetting); mix pretraining "
                   "text into the SFT data to keep it.")
    return out


def write_report(run_dir: Path, state: dict) -> Path:
    """Write ``report.md`` and its plots into ``run_dir``; returns the report's path."""
    import torch

    import shardkit

    stages = state["stages"]
    losses = plot_losses(run_dir, state)
    memory = stages.get("pretrain", {}).get("training", {}).get("memory")
    lines = [
        "# shardkit speedrun report", "",
        f"Preset `{state['preset']}`, {state['nproc']} rank(s), written {datetime.datetime.now().isoformat(timespec='seconds')}"
        f" on {platform.machine()} {platform.processor() or platform.system()}, torch {torch.__version__}, "
        f"shardkit {shardkit.__version__}.", "",
        "## Results", "",
        f"Held-out arithmetic: {len(stages.get('sft', stages.get('pretrain', {})).get('eval', {}).get('test_answers', []))} "
        "problems never trained on, greedy answers, exact match. Perplexity: held-out tail of every text.", "",
        "| after | exact match | held-out perplexity |", "|---|---|---|",
    ]
    for s in TRAINING_STAGES:
        if s in stages:
            e = stages[s]["eval"]
            lines.append(f"| {s} | {e['exact_match']:.1%} | {e['perplexity']:.2f} |")
    if "dpo" in stages:
        t = stages["dpo"]["training"]
        train_acc = _last(t["log_history"], "rewards/accuracies")
        eval_acc = t.get("eval", {}).get("eval_rewards/accuracies")
        lines += ["", f"DPO reward accuracy: {eval_acc:.1%} on held-out pairs, {train_acc:.1%} in the last logged "
                  f"training steps. {stages['dpo'].get('pairs_from_model', 0):.0%} of the training pairs reject the "
                  "SFT model's own wrong answer, the rest a near miss (carry or last digit off). DPO loss: "
                  f"{_dpo_loss_name(state['config'])} (`sft` is the chosen answers' NLL, TRL's term)."]
    lines += ["", *[f"- {f}" for f in findings(state)], "", "## Throughput", "",
              "| stage | ranks | steps | tokens | train seconds | tokens/s | stage wall seconds |", "|---|---|---|---|---|---|---|"]
    if "tokenizer" in stages:
        t = stages["tokenizer"]
        lines.append(f"| tokenizer | 1 | - | {t['train_bytes']:,} bytes | {t['seconds']:.1f} | "
                     f"{t['train_bytes'] / max(t['seconds'], 1e-9) / 1e6:.1f} MB/s | {t['wall_seconds']:.1f} |")
    for s in TRAINING_STAGES:
        if s in stages:
            t = stages[s]["training"]
            steps = _last(t["log_history"], "step") or 0
            lines.append(f"| {s} | {t['world_size']} | {steps} | {t['num_tokens']:,} | {t['seconds']:.1f} | "
                         f"{t['tokens_per_second']:,.0f} | {stages[s]['wall_seconds']:.1f} |")
    lines += ["", "Tokens are every rank's input tokens (padding excluded); stage wall time includes launching the ranks, "
              "preparing data and evaluating.", "", "## Loss curves", ""]
    lines += [f"![{s} loss]({name})" for s, name in losses.items()]
    if memory:
        lines += ["", "## Memory per rank (pretraining)", "", f"![memory]({plot_memory(run_dir, memory)})", "",
                  "| item | estimated MiB | " + " | ".join(f"rank {r} MiB" for r in range(len(memory["measured"]))) + " |",
                  "|---|---|" + "---|" * len(memory["measured"])]
        for k in ITEMS:
            lines.append(f"| {k} | {_mib(memory['estimated'][k])} | "
                         + " | ".join(_mib(m[k]) for m in memory["measured"]) + " |")
        lines += ["", "Measured: storages of this rank's shards, gradients and optimizer state after a real step, "
                  "saved-tensor hooks for activations, and the most gathered parameters plus unreduced gradients alive at once. Estimated: "
                  "`shardkit.memory.estimate` for the same model, world size and micro-batch (model states at the "
                  "storage precision, activations and gathered parameters at the compute dtype)."]
    lines += ["", "## Samples", ""]
    for s in TRAINING_STAGES:
        if s in stages:
            e = stages[s]["eval"]
            lines += [f"### After {s}", ""]
            lines += [f"- `{q['question']}` -> {json.dumps(q['model'])} (answer {q['answer']})"
                      for q in e["arithmetic_samples"]]
            lines += ["", *[f"- {json.dumps(text)}" for text in e["text_samples"]], ""]
    lines += ["## Settings", "", "```json", json.dumps(state["config"], indent=1), "```", ""]
    path = run_dir / "report.md"
    files.write_atomic(path, "\n".join(lines).encode("utf-8"))
    return path
