"""Rank-side runs of ``engine="fsdp2"`` (torch ``fully_shard`` + FusedAdamW, gloo) for ``test_fsdp2_engine.py``."""

from __future__ import annotations

import torch

SEED = 0


def sft_trainer(output_dir: str, per_device_batch: int, **overrides):
    """A small SFT run on our GPT (accumulated, clipped, shuffled) with the offline toy tokenizer and data."""
    from shardkit.models import GPT, GPTConfig
    from shardkit.trainers import SFTConfig, SFTTrainer
    from shardkit.trainers.toy import char_tokenizer, toy_records

    tok = char_tokenizer()
    torch.manual_seed(SEED)
    model = GPT(GPTConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, max_position_embeddings=128, tie_word_embeddings=True))
    settings = {"output_dir": output_dir, "learning_rate": 3e-3, "per_device_train_batch_size": per_device_batch,
                "max_steps": 4, "lr_scheduler_type": "constant", "logging_steps": 1, "report_to": [],
                "disable_tqdm": True, "max_length": 48, "seed": SEED, "max_grad_norm": 0.5,
                "gradient_accumulation_steps": 2, "engine": "fsdp2"}
    settings.update(overrides)
    return SFTTrainer(model, args=SFTConfig(**settings), train_dataset=toy_records("prompt_completion", 24),
                      processing_class=tok)


def run_fsdp2(rank, world, output_dir):
    """A 4-step run that checkpoints at step 2, then a fresh run resumed from that checkpoint."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    torch.set_num_threads(1)
    full = sft_trainer(f"{output_dir}/full", per_device_batch=2, save_steps=2)
    history = full.train().log_history
    sharded = isinstance(full.model, FSDPModule) and all(isinstance(p, DTensor) for p in full.model.parameters())
    resumed = sft_trainer(f"{output_dir}/resumed", per_device_batch=2)
    resumed_history = resumed.train(resume_from_checkpoint=f"{output_dir}/full/checkpoint-2").log_history
    return {"history": history, "resumed": resumed_history, "sharded": sharded,
            "optimizer": type(full.optimizer).__name__}
