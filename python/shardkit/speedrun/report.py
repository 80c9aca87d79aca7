"""``report.md`` of a speedrun, with PNG plots: loss curves, memory, throughput, results."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

from shardkit.speedrun import files
from shardkit.speedrun.config import TRAINING_STAGES
from shardkit.speedrun.memory_probe import ITEMS

TITLES = {"pretrain": "Pretraining", "sft": "SFT (arithmetic + replayed text)",
          "dpo": "DPO (right over own wrong answer)", "grpo": "GRPO (exact-match reward)"}
#: The held-out perplexity at the end may be at most this many times pretraining's (SFT replays text to keep it).
PERPLEXITY_BOUND = 3.0
EXACT_REWARD = "rewards/exact_match_reward/mean"


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
        key = "reward" if stage == "grpo" else "loss"  # GRPO's loss is ~0 by construction; its reward is the signal
        ax.plot([e["step"] for e in logs], [e.get(key, float("nan")) for e in logs],
                marker="." if len(logs) < 30 else None)
        if stage == "grpo":
            ax2 = ax.twinx()
            ax2.plot([e["step"] for e in logs], [e.get(EXACT_REWARD, float("nan")) for e in logs],
                     color="tab:orange", alpha=0.7)
            ax2.set_ylabel("sampled exact match", color="tab:orange")
        if stage == "dpo":
            ax2 = ax.twinx()
            ax2.plot([e["step"] for e in logs], [e.get("rewards/accuracies", float("nan")) for e in logs],
                     color="tab:orange", alpha=0.7)
            ax2.set_ylabel("reward accuracy", color="tab:orange")
        ax.set(xlabel="optimizer step", ylabel="reward (weighted sum)" if stage == "grpo" else "loss",
               title=TITLES[stage])
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"loss_{stage}.png"
        files.write_atomic(run_dir / name, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        plt.close(fig)
        out[stage] = name
    return out


def plot_stages(run_dir: Path, state: dict) -> str | None:
    """Two panels: held-out exact match and held-out perplexity after every training stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [s for s in TRAINING_STAGES if s in state["stages"]]
    if not done:
        return None
    evals = [state["stages"][s]["eval"] for s in done]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    bars = ax1.bar(done, [100 * e["exact_match"] for e in evals], color="tab:green")
    ax1.bar_label(bars, fmt="%.1f%%")
    ax1.set(ylabel="exact match, held-out (%)", ylim=(0, 105), title="Arithmetic after each stage")
    ppl = [e["perplexity"] for e in evals]
    ax2.bar_label(ax2.bar(done, ppl, color="tab:blue"), fmt="%.0f")
    ax2.axhline(PERPLEXITY_BOUND * evals[0]["perplexity"], color="tab:red", linestyle="--",
                label=f"{PERPLEXITY_BOUND:g}x pretraining's")
    # Linear from 0 unless a stage forgot the prose by orders of magnitude.
    ax2.set(ylabel="held-out perplexity", title="Prose after each stage",
            yscale="log" if max(ppl) > 30 * min(ppl) else "linear")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    files.write_atomic(run_dir / "stages.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return "stages.png"


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
    done = [s for s in TRAINING_STAGES if s in stages]
    em = {s: stages[s]["eval"]["exact_match"] for s in done}
    out = []
    if "dpo" in stages:
        acc = stages["dpo"]["training"].get("eval", {}).get("eval_rewards/accuracies")
        if acc is not None:
            out.append(f"DPO's reward accuracy on held-out pairs is {acc:.1%} ({'above' if acc > 0.5 else 'NOT above'} 0.5).")
    for before, after in zip(done, done[1:]):
        change = em[after] - em[before]
        name = after.upper()
        if change > 0:
            out.append(f"{name} raised exact match by {change:.1%} ({em[before]:.1%} -> {em[after]:.1%}).")
        elif change == 0:
            out.append(f"{name} left exact match where it was ({em[before]:.1%}): no gain.")
        else:
            out.append(f"{name} LOWERED exact match by {-change:.1%} ({em[before]:.1%} -> {em[after]:.1%}).")
    if len(done) > 1 and "pretrain" in stages:
        base, last = stages["pretrain"]["eval"]["perplexity"], stages[done[-1]]["eval"]["perplexity"]
        ratio = last / base
        within = "within" if ratio <= PERPLEXITY_BOUND else "NOT within"
        out.append(f"Held-out prose perplexity after {done[-1]} is {ratio:.2f}x pretraining's "
                   f"({base:.1f} -> {last:.1f}): {within} the {PERPLEXITY_BOUND:g}x bound.")
        if ratio > PERPLEXITY_BOUND and not state["config"]["data"].get("sft_text_fraction"):
            out.append("SFT replays no pretraining text ([data] sft_text_fraction = 0), so the model forgets the "
                       "corpus (catastrophic forgetting).")
    return out


def _results_table(stages: dict) -> list[str]:
    lines = ["| after | exact match | held-out perplexity | exact match change | perplexity / pretraining's |",
             "|---|---|---|---|---|"]
    previous, base = None, stages.get("pretrain", {}).get("eval", {}).get("perplexity")
    for s in TRAINING_STAGES:
        if s in stages:
            e = stages[s]["eval"]
            change = "-" if previous is None else f"{e['exact_match'] - previous:+.1%}"
            ratio = f"{e['perplexity'] / base:.2f}x" if base else "-"
            lines.append(f"| {s} | {e['exact_match']:.1%} | {e['perplexity']:.2f} | {change} | {ratio} |")
            previous = e["exact_match"]
    return lines


def _stage_notes(state: dict) -> list[str]:
    stages, lines = state["stages"], []
    if "sft" in stages and "text_rows" in stages["sft"]:
        sft = stages["sft"]
        lines += ["", f"SFT data: {sft['arithmetic_rows']:,} arithmetic conversations (loss on the answer) mixed with "
                  f"{sft['text_rows']:,} windows of pretraining text of {state['config']['data']['sft_text_len']} "
                  "tokens (loss on every token), so the prose is not forgotten."]
    if "dpo" in stages:
        dpo, t = stages["dpo"], stages["dpo"]["training"]
        train_acc = _last(t["log_history"], "rewards/accuracies")
        eval_acc = t.get("eval", {}).get("eval_rewards/accuracies")
        source = (f"{dpo['pairs']:,} training pairs, each rejecting the SFT model's own wrong greedy answer to a "
                  f"training problem (it answered {dpo['sft_train_exact_match']:.1%} of {dpo['candidates']:,} right)"
                  if "pairs" in dpo else f"{dpo.get('pairs_from_model', 0):.0%} of the training pairs reject the SFT "
                  "model's own wrong answer")
        lines += ["", f"DPO: {source}; chosen is the right answer. Reward accuracy: {eval_acc:.1%} on held-out pairs, "
                  f"{train_acc:.1%} in the last logged training steps. DPO loss: {_dpo_loss_name(state['config'])} "
                  "(`sft` is the chosen answers' NLL, TRL's term)."]
    if "grpo" in stages:
        logs = [e for e in stages["grpo"]["training"]["log_history"] if EXACT_REWARD in e]
        g = state["config"]["grpo"]
        if logs:
            weight = (g.get("reward_weights") or [1, 1])[1]
            reward = ("exact match (the format reward is logged, at weight 0)" if weight == 0 else
                      f"exact match + {weight:g} x format (a bare number closed by the turn's end)")
            lines += ["", f"GRPO: {g.get('num_generations', 8)} sampled answers per training problem (temperature "
                      f"{g.get('temperature', 1.0):g}), reward = {reward}; sampled exact match {logs[0][EXACT_REWARD]:.1%} in the first logged "
                      f"steps, {logs[-1][EXACT_REWARD]:.1%} in the last."]
    return lines


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
    ]
    lines += _results_table(stages)
    stage_plot = plot_stages(run_dir, state)
    if stage_plot:
        lines += ["", f"![exact match and perplexity per stage]({stage_plot})"]
    lines += _stage_notes(state)
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
