"""Rank-side run for the sharded rollout test: a FULL_SHARDed GPT decoded through a DecodeSnapshot."""

from __future__ import annotations

import copy

import torch


def sharded_snapshot_rollout(rank, world):
    """Greedy tokens of the sharded model (snapshot path and the per-forward hook path) and gather counts."""
    from shardkit.fsdp.flat_param import FlatGroup
    from shardkit.models import GPT, GPTConfig
    from shardkit.models.fast_decode import DecodeSnapshot
    from shardkit.models.generation import generate
    from shardkit.trainers.setup import shard_for_data_parallel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4,
                          num_kv_heads=2, max_position_embeddings=64, tie_word_embeddings=True)).eval()
    full = copy.deepcopy(model)
    ids = torch.randint(3, 61, (4, 5), generator=torch.Generator().manual_seed(1))
    expected = generate(full, ids, max_new_tokens=10, temperature=0)
    sharded = shard_for_data_parallel(model)
    gathers = {"n": 0}
    original = FlatGroup.full_values

    def counted(self):
        gathers["n"] += 1
        return original(self)

    FlatGroup.full_values = counted
    try:
        snap = DecodeSnapshot(sharded)
        tokens = snap.generate(ids, max_new_tokens=10, temperature=0)
    finally:
        FlatGroup.full_values = original
    shard_bytes = sum(p.numel() for p in sharded.parameters())
    return {"equal": bool(torch.equal(tokens, expected)), "gathers": gathers["n"],
            "groups": len(sharded._shardkit_fsdp.groups), "sharded_numel": shard_bytes,
            "full_numel": sum(p.numel() for p in full.parameters())}


def _rollout(prompts, trainer):
    """Completions that depend only on the prompt and the completion's index in its group (not on the rank)."""
    import random

    tok = trainer.processing_class
    seen: dict[str, int] = {}
    prompt_ids, completion_ids = [], []
    for p in prompts:
        j = seen[p] = seen.get(p, -1) + 1
        rng = random.Random(f"{p}|{j}")
        ids = [rng.randint(7, len(tok) - 1) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.7:
            ids[-1] = tok.eos_token_id
        prompt_ids.append(tok(text=p)["input_ids"])
        completion_ids.append(ids)
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


def _count_a(completions, **kwargs):
    return [c.count("a") - 0.1 * len(c) for c in completions]


def grpo_trainer(output_dir: str, per_device: int):
    """GRPO on our GPT (beta > 0: a reference model; num_iterations 2) with a rank-independent rollout_func."""
    from shardkit.models import GPT, GPTConfig
    from shardkit.trainers import GRPOConfig, GRPOTrainer
    from shardkit.trainers.toy import char_tokenizer, toy_records

    tok = char_tokenizer(pad_is_eos=False)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, max_position_embeddings=128, tie_word_embeddings=True))
    args = GRPOConfig(output_dir=output_dir, learning_rate=3e-2, per_device_train_batch_size=per_device, max_steps=4,
                      num_generations=2, max_completion_length=6, beta=0.1, num_iterations=2, shuffle_dataset=False,
                      logging_steps=1, optim="adamw_torch", report_to=[], disable_tqdm=True, seed=0)
    prompts = [{"prompt": r["prompt"]} for r in toy_records("prompt_completion", 8, seed=3)]
    return GRPOTrainer(model, _count_a, args=args, train_dataset=prompts, processing_class=tok, rollout_func=_rollout)


def run_grpo(rank, world, output_dir):
    torch.set_num_threads(1)
    return grpo_trainer(output_dir, per_device=4).train().log_history


def run_all(rank, world, output_dir):
    """Both rank-side runs in one spawn (process start-up is most of the cost)."""
    return {"snapshot": sharded_snapshot_rollout(rank, world), "grpo": run_grpo(rank, world, output_dir)}
