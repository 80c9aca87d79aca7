"""Run a trainer from a config file: what ``shardkit train`` executes in each process.

The file (TOML or YAML) has four sections::

    [model]      preset = "tiny"            # a shardkit GPT preset (vocab resized to the tokenizer)
                 # or path = "local/hf/dir"  # any HF causal LM, loaded offline
    [tokenizer]  path = "local/hf/dir"      # or name = "char": the built-in toy tokenizer
    [data]       train = "train.jsonl"      # eval = "eval.jsonl" (optional)
    [trainer]    learning_rate = 1e-4 ...   # fields of the trainer's XxxConfig
    [parallel]   tp = 2  pp = 2 ...         # optional: a shardkit.parallel.ParallelPlan

Overrides are ``section.key=value`` (``trainer.`` may be left out).
"""

from __future__ import annotations

from typing import Any

import torch

from shardkit.trainers.config import load_config_file, parse_override

TRAINERS = ("pretrain", "sft", "dpo", "kto")


def _classes(kind: str):
    import shardkit.trainers as sk

    return {"pretrain": (sk.PretrainTrainer, sk.PretrainConfig), "sft": (sk.SFTTrainer, sk.SFTConfig),
            "dpo": (sk.DPOTrainer, sk.DPOConfig), "kto": (sk.KTOTrainer, sk.KTOConfig)}[kind]


def merge_overrides(config: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """``config`` with each ``section.key`` (default section ``trainer``) set to its parsed value."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for key, text in overrides.items():
        section, _, field = key.rpartition(".")
        section = section or "trainer"
        if section not in ("model", "tokenizer", "data", "trainer", "parallel"):
            raise ValueError(f"override {key!r}: section must be model, tokenizer, data, trainer or parallel")
        out.setdefault(section, {})[field] = parse_override(text)
    return out


def build_tokenizer(section: dict[str, Any]):
    if section.get("name") == "char":
        from shardkit.trainers.toy import char_tokenizer

        return char_tokenizer()
    if "path" not in section:
        raise ValueError("[tokenizer] needs path = '<local HF tokenizer dir>' or name = 'char'")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(section["path"], local_files_only=True)


def build_model(section: dict[str, Any], tokenizer):
    if "preset" in section:
        from shardkit.models import GPT

        overrides = {k: v for k, v in section.items() if k != "preset"}
        overrides.setdefault("vocab_size", len(tokenizer))
        return GPT.from_preset(section["preset"], **overrides)
    if "path" in section:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(section["path"], local_files_only=True)
    raise ValueError("[model] needs preset = '<shardkit GPT preset>' or path = '<local HF model dir>'")


def run(kind: str, config_path: str | None, overrides: dict[str, str]) -> dict[str, Any]:
    """Build tokenizer, model, data and trainer from the config, train, and return the last log entry."""
    if kind not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {kind!r}")
    config = merge_overrides(load_config_file(config_path) if config_path else {}, overrides)
    trainer_cls, config_cls = _classes(kind)
    trainer_values = dict(config.get("trainer", {}))
    if config.get("parallel"):  # the [parallel] table: a ParallelPlan (shardkit.parallel)
        trainer_values["parallel"] = config["parallel"]
    args = config_cls.from_dict(trainer_values)
    data = config.get("data", {})
    if "train" not in data:
        raise ValueError("[data] needs train = '<path to a JSONL file>'")
    tokenizer = build_tokenizer(config.get("tokenizer", {}))
    # Seeded: every rank must build the same initial weights (each keeps its 1/N of them when sharded).
    torch.manual_seed(args.seed)
    model = build_model(config.get("model", {}), tokenizer)
    trainer = trainer_cls(model, args=args, train_dataset=data["train"], eval_dataset=data.get("eval"),
                          processing_class=tokenizer)
    history = trainer.train().log_history
    return history[-1] if history else {}
