"""Rank-side runs of the preference trainers under 2 ranks (FULL_SHARD through the trainers' own setup),
and the same runs built for a single process: one process with 2*bs examples per micro-batch sees the
same global batches as 2 ranks with bs each."""

from __future__ import annotations

import weakref

import torch

SEED = 0


def _gpt(vocab_size: int, seed: int = SEED):
    from shardkit.models import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, max_position_embeddings=256, tie_word_embeddings=True))


def param_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters this process holds (tied ones once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def preference_trainer(kind: str, output_dir: str, per_device_batch: int, ref_seed: int | None = None, **overrides):
    """A small DPO or KTO run on our GPT with the offline toy tokenizer and data (shuffled, accumulated, clipped,
    evaluated: 5 eval examples leave a last eval batch of one row, fewer than the ranks).

    ``ref_seed``: pass a reference model of other weights (else a copy of the policy serves)."""
    from shardkit.trainers import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    from shardkit.trainers.toy import char_tokenizer, toy_records

    tok = char_tokenizer()
    trainer_cls, config_cls, data_kind = {"dpo": (DPOTrainer, DPOConfig, "preference"),
                                          "kto": (KTOTrainer, KTOConfig, "unpaired_preference")}[kind]
    settings = dict(output_dir=output_dir, learning_rate=1e-3, per_device_train_batch_size=per_device_batch,
                    per_device_eval_batch_size=per_device_batch, max_steps=3, lr_scheduler_type="constant",
                    logging_steps=1, eval_steps=3, report_to=[], disable_tqdm=True, max_length=64, seed=SEED,
                    max_grad_norm=0.5, gradient_accumulation_steps=2)
    settings.update(overrides)
    ref_model = None if ref_seed is None else _gpt(len(tok), ref_seed)
    return trainer_cls(_gpt(len(tok)), ref_model=ref_model, args=config_cls(**settings),
                       train_dataset=toy_records(data_kind, 16),
                       eval_dataset=toy_records(data_kind, 5, seed=9), processing_class=tok)


CASES = {
    "dpo-sigmoid": ("dpo", {"loss_type": "sigmoid"}),
    # A reference other than the policy, so that no reward starts as a rounding-level tie.
    "dpo-ipo-precomputed": ("dpo", {"loss_type": "ipo", "precompute_ref_log_probs": True, "ref_seed": 1}),
    "kto": ("kto", {}),
    "kto-precomputed": ("kto", {"precompute_ref_log_probs": True, "ref_seed": 1}),
}


def run_preference_cases(rank, world, output_dir):
    """Each case on this rank; returns, per case, the log history and what the rank held of the reference."""
    from shardkit import fsdp

    torch.set_num_threads(1)
    out = {}
    for name, (kind, overrides) in CASES.items():
        trainer = preference_trainer(kind, f"{output_dir}/{name}", per_device_batch=2, **overrides)
        full_bytes = param_bytes(trainer.model)
        given_ref = None if trainer.ref_model is None else weakref.ref(trainer.ref_model)
        history = trainer.train().log_history
        result = {"history": history, "ref_model": trainer.ref_model is not None, "full_bytes": full_bytes,
                  # A reference model dropped after precomputing is gone from memory, not merely unset.
                  "ref_freed": given_ref is not None and given_ref() is None}
        if trainer.ref_model is not None:
            state = fsdp.get_state(trainer.ref_model)
            result.update(strategy=state.strategy, ref_bytes=param_bytes(trainer.ref_model),
                          frozen=all(not p.requires_grad for p in trainer.ref_model.parameters()),
                          # The reference's last forward (under no_grad) left no unit gathered, not even the root.
                          all_freed=not any(g.is_unsharded for g in state.groups))
        out[name] = result
    return out


def run_dpo_resume(rank, world, output_dir):
    """An uninterrupted 4-step run that checkpoints at step 2, then a fresh run resumed from that checkpoint;
    then whether a checkpoint gives each rank back its own RNG state."""
    from shardkit import fsdp
    from shardkit.trainers import checkpoint

    torch.set_num_threads(1)
    common = dict(max_steps=4, save_steps=2, eval_steps=0, report_to=["jsonl"])
    full = preference_trainer("dpo", f"{output_dir}/full", per_device_batch=2, **common)
    full_history = full.train().log_history
    resumed = preference_trainer("dpo", f"{output_dir}/resumed", per_device_batch=2, **common)
    resumed_history = resumed.train(resume_from_checkpoint=f"{output_dir}/full/checkpoint-2").log_history
    # numpy arrays travel back by value (tensors would go through shared file descriptors).
    params = [{k: v.numpy() for k, v in fsdp.full_state_dict(t.model, rank0_only=False).items()}
              for t in (full, resumed)]
    # Ranks draw different random numbers (e.g. dropout on their own rows): each gets its own state back.
    torch.manual_seed(100 + rank)
    expected_rng = torch.get_rng_state()
    path = checkpoint.save(resumed)
    torch.rand(3)
    checkpoint.load(resumed, path)
    return full_history, resumed_history, params, torch.equal(torch.get_rng_state(), expected_rng)
