"""One training stage of a speedrun, in every rank: ``python -m shardkit.speedrun.worker``.

The pipeline launches it through ``torch.distributed.run`` (torchrun), so the
same command runs one process or a node's worth. Each rank builds the GPT,
loads the previous stage's weights, shards it FULL_SHARD (one unit per
block) and trains with the stage's trainer; then rank 0 writes the gathered
weights and ``result.json`` (time, tokens, logs and, after pretraining, the
measured memory of every rank).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import torch

from shardkit.speedrun import files, lifetime

TRAINER_CLASSES = {"pretrain": "PretrainTrainer", "sft": "SFTTrainer", "dpo": "DPOTrainer"}
PREVIOUS = {"sft": "pretrain", "dpo": "sft"}


def build_model(config: dict, vocab_size: int, seed: int):
    """The speedrun's GPT, fp32, initialised from ``seed``."""
    from shardkit.models import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, **config["model"]))


def load_tokenizer(run_dir: Path):
    from shardkit.tokenizer import BPETokenizer, TrainerTokenizer

    # The run wrote this file itself, with the pattern of its own config (a
    # custom digit-splitting one by default), so its pattern is trusted.
    return TrainerTokenizer(BPETokenizer.load(files.tokenizer_path(run_dir), trust_pattern=True))


def _even(records: list[dict], multiple: int) -> list[dict]:
    """Drop the last partial global batch, so every rank gets a full micro-batch."""
    keep = len(records) - len(records) % multiple
    if keep == 0:
        raise ValueError(f"{len(records)} examples are fewer than one global batch of {multiple}")
    return records[:keep]


def run_stage(stage: str, run_dir: Path) -> None:
    from shardkit import comm, fsdp
    from shardkit.models.gpt import Block
    import shardkit.trainers as trainers
    from shardkit.trainers import checkpoint
    from shardkit.speedrun import memory_probe
    from shardkit.speedrun.config import trainer_args

    state = files.read_json(run_dir / "state.json")
    config = state["config"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # torchrun leaves one thread per rank when there are several; share the cores out.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // world))
    if world > 1:
        comm.init()

    directory = files.stage_dir(run_dir, stage)
    tokenizer = load_tokenizer(run_dir)
    model = build_model(config, len(tokenizer), config["run"]["seed"])
    if stage in PREVIOUS:
        from safetensors.torch import load_file

        weights = load_file(files.stage_dir(run_dir, PREVIOUS[stage]) / "model.safetensors")
        weights.setdefault("lm_head.weight", weights.get("embed_tokens.weight"))
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    if config["run"]["precision"] == "bf16":
        model = model.to(torch.bfloat16)  # the fused AdamW keeps fp32 masters of these
    compute = getattr(torch, config[stage].get("compute_dtype", "float32"))
    model = fsdp.shard(model, units=[Block], strategy="FULL_SHARD",
                       mixed_precision=fsdp.MixedPrecision(param_dtype=compute, reduce_dtype=torch.float32))

    args = trainer_args(config, stage, str(directory))
    global_batch = args.per_device_train_batch_size * world
    train = _even(files.read_jsonl(directory / "train.jsonl"), global_batch)
    eval_path = directory / "eval.jsonl"
    evaluation = files.read_jsonl(eval_path) if eval_path.exists() else None
    trainer = getattr(trainers, TRAINER_CLASSES[stage])(model, args=args, train_dataset=train,
                                                       eval_dataset=evaluation, processing_class=tokenizer)
    resume = checkpoint.latest(directory)  # also recovers a checkpoint a crashed save left aside
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    # Training time and throughput over every session of the stage: a rerun resumed from the final
    # checkpoint (stopped during evaluation) trains no step, and this session's time would say 0 tokens/s.
    train_seconds = trainer.state.train_seconds
    result = {"stage": stage, "world_size": world, "seconds": train_seconds, "session_seconds": seconds,
              "num_tokens": trainer.state.num_tokens,
              "tokens_per_second": trainer.state.num_tokens / train_seconds if train_seconds > 0 else float("nan"),
              "log_history": trainer.state.log_history, "resumed_from": resume.name if resume else None}
    if evaluation is not None:
        result["eval"] = trainer.evaluate()
    if stage == "pretrain":
        result["memory"] = memory_probe.measure(trainer, config, world)
    fsdp.save_full_state_dict(trainer.model, directory / "model.safetensors")
    if comm.is_initialized() and comm.get_group().rank != 0:
        return
    files.write_json(directory / "result.json", result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, choices=sorted(TRAINER_CLASSES))
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    # A rank never outlives its launcher; SIGTERM ends it through its finally blocks.
    with lifetime.signals_exit((signal.SIGTERM, signal.SIGINT)):
        lifetime.start_watchdog()
        run_stage(args.stage, args.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
