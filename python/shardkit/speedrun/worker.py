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
from shardkit.speedrun.device import DEVICE_ENV

TRAINER_CLASSES = {"pretrain": "PretrainTrainer", "sft": "SFTTrainer", "dpo": "DPOTrainer", "grpo": "GRPOTrainer"}
PREVIOUS = {"sft": "pretrain", "dpo": "sft", "grpo": "dpo"}


def build_model(config: dict, vocab_size: int, seed: int):
    """The speedrun's GPT, fp32, initialised from ``seed``."""
    from shardkit.models import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, **config["model"]))


def load_tokenizer(run_dir: Path, eos_token: str = "<|endoftext|>"):
    from shardkit.tokenizer import BPETokenizer, TrainerTokenizer

    # The run wrote this file itself, with the pattern of its own config (a
    # custom digit-splitting one by default), so its pattern is trusted.
    bpe = BPETokenizer.load(files.tokenizer_path(run_dir), trust_pattern=True)
    return TrainerTokenizer(bpe, eos_token=eos_token, pad_token="<|endoftext|>")


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
    on_cuda = os.environ.get(DEVICE_ENV, "cpu") == "cuda"
    if on_cuda:
        # One rank per GPU; torch's process group (NCCL for the model, gloo for the loop's host metrics).
        from shardkit.trainers import fsdp2_engine
        from shardkit.trainers.device import select_device

        device = select_device("cuda")
        if world > 1:
            fsdp2_engine.init_process_group()
    elif world > 1:
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
    if on_cuda:
        model = _shard_on_cuda(model, device, compute, world)
    else:
        model = fsdp.shard(model, units=[Block], strategy="FULL_SHARD",
                           mixed_precision=fsdp.MixedPrecision(param_dtype=compute, reduce_dtype=torch.float32))

    args = trainer_args(config, stage, str(directory))
    args.device = "cuda" if on_cuda else "cpu"
    global_batch = args.per_device_train_batch_size * world
    train = _even(files.read_jsonl(directory / "train.jsonl"), global_batch)
    eval_path = directory / "eval.jsonl"
    evaluation = files.read_jsonl(eval_path) if eval_path.exists() else None
    if stage == "grpo":
        trainer = _grpo_trainer(model, args, train, run_dir)
    else:
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
    result["device_stats"] = getattr(trainer, "device_stats", None)
    if on_cuda:
        _save_full_state_on_cuda(trainer.model, directory / "model.safetensors")
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        files.write_json(directory / "result.json", result)
        return
    if stage == "pretrain":
        result["memory"] = memory_probe.measure(trainer, config, world)
    fsdp.save_full_state_dict(trainer.model, directory / "model.safetensors")
    if comm.is_initialized() and comm.get_group().rank != 0:
        return
    files.write_json(directory / "result.json", result)


def _grpo_trainer(model, args, train: list[dict], run_dir: Path):
    """GRPO with the exact-match and format rewards. Its sampled answers end at ``<|im_end|>`` (the assistant
    turn's end, what SFT taught), so that token is the tokenizer's EOS here."""
    from shardkit.speedrun.arithmetic import FormatReward, exact_match_reward
    from shardkit.trainers import GRPOTrainer

    tokenizer = load_tokenizer(run_dir, eos_token="<|im_end|>")
    rewards = [exact_match_reward, FormatReward(tokenizer.eos_token_id)]
    return GRPOTrainer(model, rewards, args=args, train_dataset=train, processing_class=tokenizer)


def _shard_on_cuda(model, device, compute, world: int):
    """The model on this rank's GPU: FSDP2 (blocks, then the root) with ``compute`` as the gathered dtype and fp32
    gradient reduction when several ranks train; as it is on one GPU (the trainer computes in its dtype)."""
    model = model.to(device)
    if world == 1:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from shardkit.models.gpt import Block

    mesh = init_device_mesh("cuda", (world,))
    policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
    for block in [m for m in model.modules() if isinstance(m, Block)]:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    return fully_shard(model, mesh=mesh, mp_policy=policy)


def _save_full_state_on_cuda(model, path: Path) -> None:
    """The full weights gathered to the host; rank 0 writes them (what ``fsdp.save_full_state_dict`` does on CPU)."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from shardkit import atomic

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    # Tied weights share storage, which safetensors refuses: keep one (the loader restores lm_head from it).
    state = {k: v.contiguous() for k, v in state.items()}
    if "lm_head.weight" in state and "embed_tokens.weight" in state and \
            state["lm_head.weight"].data_ptr() == state["embed_tokens.weight"].data_ptr():
        del state["lm_head.weight"]
    atomic.write_atomic(str(path), lambda tmp: save_file(state, tmp))


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
