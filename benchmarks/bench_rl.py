"""RL trainers vs TRL 1.16, same process, interleaved: RewardTrainer and GRPOTrainer step time, rollout tokens/s.

* ``reward step``: RewardTrainer on the same ``LlamaForSequenceClassification``
  (hidden 128, 4 layers), data (8 pairs per step) and optimizer as TRL's.
* ``grpo step (shared rollouts)``: GRPOTrainer with one deterministic
  ``rollout_func`` given to both sides (identical completions, so the loss
  curves must agree; they are compared), beta 0.04 (reference model),
  num_iterations 2, 16 completions per step.
* ``grpo step (own generation)``: each trainer samples its own completions
  (ours: a shardkit GPT with the same weights and the KV-cached generator;
  TRL: HF ``generate``), 16 completions of up to 32 tokens per step.
* ``rollout tokens/s``: the GRPO rollout path (``DecodeSnapshot`` of a GPT) vs HF
  ``generate`` on the LlamaForCausalLM it was copied from; 32 left-padded
  prompts (and 8), 64 new tokens each (no early stop), sampling at temperature 1;
  ours includes building the snapshot (once per generation batch).

Times are wall seconds by default; ``--clock cpu`` takes process CPU seconds
instead (with one thread, time the process spends descheduled on a shared
machine is not counted; both sides run in this one process).

TRL runs with ``gradient_checkpointing=False`` (its configs default to True;
shardkit does not recompute), ``use_cpu=True``, no logging sinks. A step's time
is the gap between consecutive step starts after warm-up steps; each figure is
the median over all rounds, with the spread (min-max of the per-round medians).

    python -m benchmarks.bench_rl [--rounds 3] [--steps 12] [--threads 1] [--clock wall|cpu] [--out benchmarks/out/rl.json]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import os
import platform
import random
import statistics
import tempfile
import time

import torch

_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = ["wall"]  # set by main's --clock


def _now() -> float:
    return _CLOCKS[_clock[0]]()


WARMUP = 3  # steps discarded; GRPO with num_iterations=2 alternates generating and non-generating steps
COMMON = {"learning_rate": 1e-4, "lr_scheduler_type": "constant", "logging_steps": 1, "bf16": False, "optim": "adamw_torch",
              "seed": 0, "max_grad_norm": 1.0}
GRPO = {"per_device_train_batch_size": 16, "num_generations": 4, "beta": 0.04, "num_iterations": 2, "loss_type": "dapo",
            "shuffle_dataset": False, "temperature": 1.0}


def llama_config(vocab_size: int, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=False, bos_token_id=None, eos_token_id=1, **kw)


def causal_lm(vocab_size: int, seed: int = 0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(vocab_size, pad_token_id=None))


def seq_cls(vocab_size: int, pad_id: int, seed: int = 0):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification(llama_config(vocab_size, pad_token_id=pad_id, num_labels=1))


def make_rollout(seed: int, length: int):
    rng = random.Random(seed)

    def rollout(prompts, trainer):
        tok = trainer.processing_class
        prompt_ids = [tok(text=p)["input_ids"] for p in prompts]
        completion_ids = [[rng.randint(7, len(tok) - 1) for _ in range(rng.randint(length // 2, length))]
                          for _ in prompts]
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    return rollout


def count_a(completions, **kwargs):
    return [float(c.count("a")) - 0.05 * len(c) for c in completions]


class _Clock:
    def __init__(self):
        self.starts: list[float] = []

    def gaps(self) -> list[float]:
        # Between step starts only: the last gap would also hold the end-of-training work (our final checkpoint).
        s = self.starts[WARMUP:-1]
        return [b - a for a, b in itertools.pairwise(s)]


def run_trl(kind: str, model, tok, data, steps: int, **kw):
    import datasets
    import trl
    from transformers import TrainerCallback

    clock = _Clock()

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **_):
            clock.starts.append(_now())

        def on_train_end(self, args, state, control, **_):
            clock.starts.append(_now())

    with tempfile.TemporaryDirectory() as out:
        base = dict(output_dir=out, max_steps=steps, report_to="none", save_strategy="no", use_cpu=True,
                    disable_tqdm=True, gradient_checkpointing=False, **COMMON)
        ds = datasets.Dataset.from_list(data)
        if kind == "reward":
            args = trl.RewardConfig(per_device_train_batch_size=8, train_sampling_strategy="sequential", **base)
            trainer = trl.RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        else:
            import trl.trainer.grpo_trainer as g

            g.create_model_from_path = lambda *a, **k: copy.deepcopy(model).eval()  # no hub: the policy's copy
            args = trl.GRPOConfig(**GRPO, max_completion_length=kw["length"], **base)
            trainer = trl.GRPOTrainer(model=model, reward_funcs=[count_a], args=args, train_dataset=ds,
                                      processing_class=tok, rollout_func=kw.get("rollout"))
        trainer.add_callback(StepClock())
        trainer.train()
    return clock.gaps(), [h["loss"] for h in trainer.state.log_history if "loss" in h]


def run_ours(kind: str, model, tok, data, steps: int, **kw):
    import shardkit.trainers as sk

    clock = _Clock()
    with tempfile.TemporaryDirectory() as out:
        base = dict(output_dir=out, max_steps=steps, report_to=[], disable_tqdm=True, shuffle=False, **COMMON)
        if kind == "reward":
            trainer = sk.RewardTrainer(model, args=sk.RewardConfig(per_device_train_batch_size=8, **base),
                                       train_dataset=data, processing_class=tok)
        else:
            args = sk.GRPOConfig(**GRPO, max_completion_length=kw["length"], **base)
            trainer = sk.GRPOTrainer(model, [count_a], args=args, train_dataset=data, processing_class=tok,
                                     rollout_func=kw.get("rollout"))
        original = trainer.micro_batch

        def micro_batch(index):  # the first micro-batch of a step starts its clock
            if index % trainer.args.gradient_accumulation_steps == 0:
                clock.starts.append(_now())
            return original(index)

        trainer.micro_batch = micro_batch
        state = trainer.train()
        clock.starts.append(_now())
    return clock.gaps(), [h["loss"] for h in state.log_history if "loss" in h]


@torch.no_grad()
def rollout_rates(hf_model, tok, batch: int, new_tokens: int, repeats: int):
    """Generated tokens/s of the GRPO rollout path (DecodeSnapshot of a GPT copy), HF generate, and
    ``shardkit.models.generate`` (GPT.forward with a KV cache), interleaved."""
    from shardkit.models import GPT
    from shardkit.models.fast_decode import DecodeSnapshot
    from shardkit.models.generation import generate
    from shardkit.trainers.rollout import left_pad
    from shardkit.trainers.toy import toy_records

    gpt = GPT.from_hf_llama(hf_model).eval()
    hf_model.eval()
    prompts = [tok(text=r["prompt"])["input_ids"] for r in toy_records("prompt_completion", batch, seed=3, max_words=8)]
    ids, mask = left_pad(prompts, tok.pad_token_id, "cpu")
    ours, plain, theirs = [], [], []
    for _ in range(repeats + 1):
        t = _now()
        generate(gpt, ids, attention_mask=mask, max_new_tokens=new_tokens, temperature=1.0)
        plain.append(batch * new_tokens / (_now() - t))
        t0 = _now()  # the rollout path: snapshot (once per generation batch) + decode
        out = DecodeSnapshot(gpt).generate(ids, attention_mask=mask, max_new_tokens=new_tokens, temperature=1.0)
        t1 = _now()
        ref = hf_model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None,
                                pad_token_id=tok.pad_token_id)
        t2 = _now()
        assert out.shape == ref.shape == (batch, ids.shape[1] + new_tokens)
        ours.append(batch * new_tokens / (t1 - t0))
        theirs.append(batch * new_tokens / (t2 - t1))
    return ours[1:], theirs[1:], plain[1:]  # the first round warms all up


def _summary(per_round: list[list[float]]) -> tuple[float, float, float]:
    meds = [statistics.median(r) for r in per_round]
    return statistics.median([x for r in per_round for x in r]), min(meds), max(meds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default="reward,reward_gpt,grpo_shared,grpo_shared_gpt,grpo_own,rollout")
    parser.add_argument("--clock", choices=tuple(_CLOCKS), default="wall", help="wall or process CPU seconds")
    parser.add_argument("--out", default="benchmarks/out/rl.json")
    args = parser.parse_args(argv)
    _clock[0] = args.clock
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(args.threads)

    import shardkit
    import transformers
    import trl
    from shardkit.models import GPT
    from shardkit.trainers.toy import char_tokenizer, toy_records

    tok = char_tokenizer(pad_is_eos=False)
    cases = args.cases.split(",")
    results = []
    from shardkit.models import GPTForSequenceClassification

    for case in ("reward", "reward_gpt"):
        if case not in cases:
            continue
        model = seq_cls(len(tok), tok.pad_token_id)
        data = toy_records("preference", 8 * (args.steps + 1), seed=1, max_words=12, max_word=6)
        t_rounds, o_rounds, diff = [], [], 0.0
        for _ in range(args.rounds):
            t, t_loss = run_trl("reward", copy.deepcopy(model), tok, data, args.steps)
            ours = copy.deepcopy(model) if case == "reward" else GPTForSequenceClassification.from_hf(model)
            o, o_loss = run_ours("reward", ours, tok, data, args.steps)
            t_rounds.append(t)
            o_rounds.append(o)
            diff = max(diff, max(abs(a - b) / abs(b) for a, b in zip(o_loss, t_loss)))
        name = "reward step (HF model both)" if case == "reward" else "reward step (ours: GPT head)"
        results.append(_row(name, t_rounds, o_rounds, 0.5, diff))
    grpo_data = [{"prompt": r["prompt"]} for r in toy_records("prompt_completion", 64, seed=2, max_words=6)]
    names = {"grpo_shared": "grpo step (shared rollouts, HF both)", "grpo_shared_gpt": "grpo step (shared, ours GPT)",
             "grpo_own": "grpo step (own generation, ours GPT)"}
    for case, name in names.items():
        if case not in cases:
            continue
        policy = causal_lm(len(tok))
        t_rounds, o_rounds, diff = [], [], None
        for _ in range(args.rounds):
            ours = copy.deepcopy(policy) if case == "grpo_shared" else GPT.from_hf_llama(policy)
            if case != "grpo_own":
                t, t_loss = run_trl("grpo", copy.deepcopy(policy), tok, grpo_data, args.steps,
                                    rollout=make_rollout(5, 16), length=16)
                o, o_loss = run_ours("grpo", ours, tok, grpo_data, args.steps, rollout=make_rollout(5, 16), length=16)
                d = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(o_loss, t_loss))
                diff = d if diff is None else max(diff, d)
            else:
                t, _ = run_trl("grpo", copy.deepcopy(policy), tok, grpo_data, args.steps, length=32)
                o, _ = run_ours("grpo", ours, tok, grpo_data, args.steps, length=32)
            t_rounds.append(t)
            o_rounds.append(o)
        results.append(_row(name, t_rounds, o_rounds, 0.5, diff))
    if "rollout" in cases:
        policy = causal_lm(len(tok))
        for batch in (8, 32):
            ours, theirs, plain = [], [], []
            for _ in range(args.rounds):
                o, t, p = rollout_rates(policy, tok, batch=batch, new_tokens=64, repeats=2)
                ours.append(o)
                theirs.append(t)
                plain.append(p)
            o_med, o_lo, o_hi = _summary(ours)
            t_med, t_lo, t_hi = _summary(theirs)
            p_med, p_lo, p_hi = _summary(plain)
            results.append({"case": f"rollout tokens/s ({batch} x 64 new)", "trl": t_med, "trl_spread": [t_lo, t_hi],
                            "shardkit": o_med, "shardkit_spread": [o_lo, o_hi], "ratio": o_med / t_med,
                            "goal": ">= 2.0 (higher is better)", "unit": "tokens/s",
                            "shardkit_generate": p_med, "shardkit_generate_spread": [p_lo, p_hi]})

    print(f"{'case':<40}{'TRL':>22}{'shardkit':>22}{'ratio':>8}  goal")
    for r in results:
        unit = r.get("unit", "ms")
        scale = 1e3 if unit == "ms" else 1.0
        fmt = (lambda v, lo, hi, k=scale: f"{v * k:.1f} [{lo * k:.1f}-{hi * k:.1f}]")
        print(f"{r['case']:<40}{fmt(r['trl'], *r['trl_spread']):>22}{fmt(r['shardkit'], *r['shardkit_spread']):>22}"
              f"{r['ratio']:>8.3f}  {r['goal']}" + (f"  loss diff {r['max_rel_loss_diff']:.1e}"
                                                    if r.get("max_rel_loss_diff") is not None else ""))
    report = {
        "benchmark": "rl", "results": results,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "threads": args.threads, "load_avg": os.getloadavg()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "shardkit": shardkit.__version__, "python": platform.python_version()},
        "settings": {"clock": args.clock, "rounds": args.rounds, "steps": args.steps, "warmup_steps": WARMUP, **COMMON, "grpo": GRPO,
                     "model": "Llama hidden 128, 4 layers, 4 heads (2 kv), vocab 38; TRL gradient_checkpointing off"},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    from shardkit.atomic import write_json

    write_json(args.out, report, indent=1)
    print(f"wrote {args.out}")
    return 0


def _row(name, t_rounds, o_rounds, goal, diff):
    t_med, t_lo, t_hi = _summary(t_rounds)
    o_med, o_lo, o_hi = _summary(o_rounds)
    return {"case": name, "trl": t_med, "trl_spread": [t_lo, t_hi], "shardkit": o_med, "shardkit_spread": [o_lo, o_hi],
            "ratio": o_med / t_med, "goal": f"<= {goal} (lower is better)", "unit": "ms", "max_rel_loss_diff": diff,
            "samples": sum(len(r) for r in o_rounds)}


if __name__ == "__main__":
    raise SystemExit(main())
