"""Trainer step time and reference-model memory: shardkit vs TRL 1.16, same run, interleaved.

Same small Llama (built from a config), the same char-level tokenizer and
data, the same optimizer (torch AdamW), batch and order (sequential). For each
trainer kind, rounds alternate TRL and shardkit; a step's time is the gap
between consecutive step starts, after warm-up steps, median over all rounds.
Also checks that DPO with precomputed reference log-probs holds no reference
model during training (bytes of reference parameters held).

    python -m benchmarks.bench_trainers [--rounds 3] [--steps 12] [--threads 1] [--out benchmarks/out/trainers.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import tempfile
import time

import torch

KINDS = {"sft": "prompt_completion", "dpo": "preference", "kto": "unpaired_preference"}
WARMUP = 3


def small_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, pad_token_id=None, bos_token_id=None, eos_token_id=1)
    return LlamaForCausalLM(cfg)


COMMON = dict(learning_rate=1e-3, per_device_train_batch_size=8, lr_scheduler_type="constant", logging_steps=1,
              bf16=False, optim="adamw_torch", seed=0, max_grad_norm=1.0, max_length=128)


def run_trl(kind: str, model, tok, records, steps: int) -> tuple[list[float], float, list[dict]]:
    import datasets
    import trl
    from transformers import TrainerCallback

    starts: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            starts.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kw):
            starts.append(time.perf_counter())

    cls, cfg = {"sft": (trl.SFTTrainer, trl.SFTConfig), "dpo": (trl.DPOTrainer, trl.DPOConfig),
                "kto": (trl.KTOTrainer, trl.KTOConfig)}[kind]
    extra = {} if kind == "sft" else {"ref_model": copy.deepcopy(model)}
    with tempfile.TemporaryDirectory() as out:
        args = cfg(output_dir=out, max_steps=steps, report_to="none", train_sampling_strategy="sequential",
                   save_strategy="no", use_cpu=True, disable_tqdm=True, **COMMON)
        trainer = cls(model=model, args=args, train_dataset=datasets.Dataset.from_list(records),
                      processing_class=tok, **extra)
        trainer.add_callback(StepClock())
        trainer.train()
    ref = getattr(trainer, "ref_model", None)
    return _gaps(starts), _param_bytes(ref), [h for h in trainer.state.log_history if "loss" in h]


def run_ours(kind: str, model, tok, records, steps: int, **kw) -> tuple[list[float], float, list[dict]]:
    import shardkit.trainers as sk

    cls, cfg = {"sft": (sk.SFTTrainer, sk.SFTConfig), "dpo": (sk.DPOTrainer, sk.DPOConfig),
                "kto": (sk.KTOTrainer, sk.KTOConfig)}[kind]
    starts: list[float] = []
    ref_bytes: list[float] = []

    class Clocked(cls):
        def micro_batch(self, index):  # one micro-batch per step here: its fetch starts the step
            starts.append(time.perf_counter())
            ref_bytes.append(_param_bytes(getattr(self, "ref_model", None)))
            return super().micro_batch(index)

    with tempfile.TemporaryDirectory() as out:
        args = cfg(output_dir=out, max_steps=steps, shuffle=False, report_to=[], disable_tqdm=True, **COMMON, **kw)
        trainer = Clocked(model, args=args, train_dataset=records, processing_class=tok)
        history = trainer.train().log_history
        starts.append(time.perf_counter())
    return _gaps(starts[:-1]), max(ref_bytes), history


def _gaps(starts: list[float]) -> list[float]:
    return [b - a for a, b in zip(starts[WARMUP:], starts[WARMUP + 1:])]


def _param_bytes(model) -> float:
    return 0.0 if model is None else float(sum(p.numel() * p.element_size() for p in model.parameters()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", default="sft,dpo,kto", help="comma-separated subset of sft,dpo,kto")
    parser.add_argument("--out", default="benchmarks/out/trainers.json")
    args = parser.parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(args.threads)

    import transformers
    import trl

    import shardkit
    from shardkit.trainers.toy import char_tokenizer, toy_records

    tok = char_tokenizer()
    model = small_llama(len(tok))
    results = []
    for kind in args.kinds.split(","):
        data_kind = KINDS[kind]
        records = toy_records(data_kind, 8 * (args.steps + 1), seed=1, max_words=12, max_word=6)
        theirs, ours = [], []
        for _ in range(args.rounds):
            t_gaps, t_ref, t_hist = run_trl(kind, copy.deepcopy(model), tok, records, args.steps)
            o_gaps, o_ref, o_hist = run_ours(kind, copy.deepcopy(model), tok, records, args.steps)
            theirs += t_gaps
            ours += o_gaps
        loss_diff = max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(o_hist, t_hist))
        t_med, o_med = statistics.median(theirs), statistics.median(ours)
        results.append({"case": f"{kind} step", "trl_s": t_med, "shardkit_s": o_med, "ratio": o_med / t_med,
                        "target_ratio": 0.8 if kind in ("sft", "dpo") else None, "max_rel_loss_diff": loss_diff,
                        "samples": len(ours)})
    records = toy_records("preference", 8 * 6, seed=1, max_words=12, max_word=6)
    _, live_ref, _ = run_ours("dpo", copy.deepcopy(model), tok, records, 5)
    _, pre_ref, _ = run_ours("dpo", copy.deepcopy(model), tok, records, 5, precompute_ref_log_probs=True)
    results.append({"case": "dpo reference bytes held while training", "live_ref_bytes": live_ref,
                    "precomputed_ref_bytes": pre_ref})

    print(f"{'case':<42}{'TRL':>12}{'shardkit':>12}{'ratio':>8}{'target':>8}{'loss diff':>11}")
    for r in results:
        if "ratio" in r:
            target = f"{r['target_ratio']:.2f}" if r["target_ratio"] else "-"
            print(f"{r['case']:<42}{r['trl_s'] * 1e3:>10.2f}ms{r['shardkit_s'] * 1e3:>10.2f}ms"
                  f"{r['ratio']:>8.3f}{target:>8}{r['max_rel_loss_diff']:>11.1e}")
        else:
            print(f"{r['case']:<42}{r['live_ref_bytes'] / 1e6:>10.2f}MB{r['precomputed_ref_bytes'] / 1e6:>10.2f}MB"
                  "  (live ref vs precomputed)")
    report = {
        "benchmark": "trainers", "results": results,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "threads": args.threads, "load_avg": os.getloadavg()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "shardkit": shardkit.__version__, "python": platform.python_version()},
        "settings": {"rounds": args.rounds, "steps": args.steps, "warmup_steps": WARMUP, **COMMON,
                     "model": "LlamaForCausalLM hidden 128, 4 layers, 4 heads (2 kv), vocab 38"},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
