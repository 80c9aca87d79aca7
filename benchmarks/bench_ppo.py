"""PPO update time by phase: shardkit GPT models vs the same weights as HF Llama models, same trainer, interleaved.

TRL's last PPO (1.12) is not installable beside TRL 1.16, so the anchor is the
model stack TRL would run: HF ``LlamaForCausalLM`` (HF ``generate``) and
``LlamaForSequenceClassification`` value/reward models. The shardkit case
holds the same weights as ``shardkit.models.GPT`` (``GPT.from_hf_llama``;
scalar heads copied) and generates with ``DecodeSnapshot`` (KV cache,
batched, weights read once per rollout batch). Both go through ``PPOTrainer``, phase by phase: rollout
(generate), experience (4 no-grad forwards, GAE) and the PPO update
(``num_ppo_epochs`` x ``num_mini_batches`` optimizer steps). Rounds alternate
the two cases; each reports median [min, max] over rounds of the per-update
mean, after a warm-up update. Times are process CPU seconds by default
(``--clock wall`` for wall time), with one intra-op thread by default: with
two or more, idle OpenMP workers spin-wait, and on a shared, oversubscribed
machine that spinning is counted as CPU time (a 1-thread update took 0.4-0.6
CPU s, the same update with 2 threads 8-9 CPU s under load 8), which swamps
the model difference being measured.

    python -m benchmarks.bench_ppo [--rounds 5] [--updates 3] [--threads 1] [--out benchmarks/out/ppo.json]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time

import torch

PHASES = ("generate", "experience", "update", "total")


def hf_models(vocab: int, hidden: int, layers: int, seed: int = 0):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
    )

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.6875) // 8 * 8,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        num_labels=1,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    policy = LlamaForCausalLM(cfg)
    value = LlamaForSequenceClassification(cfg)
    reward = LlamaForSequenceClassification(cfg)
    return policy, value, reward


def as_gpt(policy, scalar=None):
    """A shardkit GPT with ``policy``'s weights; with ``scalar`` (an HF seq-cls model) its backbone and score head."""
    from shardkit.models import GPT
    from shardkit.trainers import scalar_head_gpt

    if scalar is None:
        return GPT.from_hf_llama(policy)
    donor = copy.deepcopy(policy)
    donor.model.load_state_dict(scalar.model.state_dict())
    gpt = scalar_head_gpt(GPT.from_hf_llama(donor))
    with torch.no_grad():
        gpt.lm_head.weight.copy_(scalar.score.weight)
    return gpt


def one_update(trainer, update: int, clock) -> dict[str, float]:
    """Seconds of each phase by ``clock`` (process CPU time: descheduled time on a shared machine is not counted)."""
    t0 = clock()
    queries, mask = trainer.collate_prompts(trainer.rollout_prompts(update))
    responses = trainer.generate(queries, mask)
    t1 = clock()
    exp = trainer.make_experience(queries, mask, responses)
    t2 = clock()
    trainer.ppo_update(exp, update)
    trainer.lr_scheduler.step()
    t3 = clock()
    return {"generate": t1 - t0, "experience": t2 - t1, "update": t3 - t2, "total": t3 - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=3, help="timed updates per round (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (see the module doc)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="rollouts per update")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="process CPU time (default: robust to a shared machine) or wall time",
    )
    parser.add_argument("--out", default="benchmarks/out/ppo.json")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter

    from shardkit.trainers import PPOConfig, PPOTrainer, prepare_model_and_optimizer
    from shardkit.trainers.toy import char_tokenizer, toy_records

    tok = char_tokenizer(pad_is_eos=False)
    hf_policy, hf_value, hf_reward = hf_models(len(tok), a.hidden, a.layers)
    cases = {
        "HF Llama (anchor)": lambda: (copy.deepcopy(hf_policy), copy.deepcopy(hf_value), copy.deepcopy(hf_reward)),
        "shardkit GPT": lambda: (as_gpt(hf_policy), as_gpt(hf_policy, hf_value), as_gpt(hf_policy, hf_reward)),
    }
    prompts = [{"prompt": r["prompt"]} for r in toy_records("prompt_completion", 64, seed=1)]
    results: dict[str, dict[str, list[float]]] = {c: {p: [] for p in PHASES} for c in cases}
    for _ in range(a.rounds):
        for name, build in cases.items():
            policy, value, reward = build()
            with tempfile.TemporaryDirectory() as out:
                args = PPOConfig(
                    output_dir=out,
                    per_device_train_batch_size=a.batch // 2,
                    gradient_accumulation_steps=2,
                    num_mini_batches=2,
                    num_ppo_epochs=2,
                    response_length=a.response_length,
                    stop_token="eos",
                    optim="adamw_torch",
                    learning_rate=1e-5,
                    report_to=[],
                    disable_tqdm=True,
                    seed=0,
                    local_rollout_forward_batch_size=a.batch,
                )
                trainer = PPOTrainer(args, tok, policy, None, reward, prompts, value)
                trainer.model, trainer.optimizer, trainer.lr_scheduler = prepare_model_and_optimizer(
                    trainer.model, args, a.updates + 1
                )
                one_update(trainer, 0, clock)  # warm-up
                rows = [one_update(trainer, u, clock) for u in range(1, a.updates + 1)]
            for phase in PHASES:
                results[name][phase].append(statistics.mean(r[phase] for r in rows))

    anchor = results["HF Llama (anchor)"]
    print(
        f"PPO update, {a.batch} rollouts x {a.response_length} tokens, hidden {a.hidden}, {a.layers} layers, "
        f"{a.threads} threads, {a.rounds} rounds, {a.clock} seconds"
    )
    print(f"{'case':<20} " + " ".join(f"{p + ' s':>24}" for p in PHASES))
    summary = {}
    for name, phases in results.items():
        cells, summary[name] = [], {}
        for p in PHASES:
            med = statistics.median(phases[p])
            ratio = statistics.median(anchor[p]) / med
            summary[name][p] = {
                "median_s": med,
                "min_s": min(phases[p]),
                "max_s": max(phases[p]),
                "speedup_vs_anchor": ratio,
            }
            cells.append(f"{med:.3f} [{min(phases[p]):.3f},{max(phases[p]):.3f}] {ratio:.2f}x")
        print(f"{name:<20} " + " ".join(f"{c:>24}" for c in cells))
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    payload = {
        "args": vars(a),
        "results": summary,
        "raw": results,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": a.threads,
        },
    }
    from shardkit.atomic import write_json

    write_json(a.out, payload, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
