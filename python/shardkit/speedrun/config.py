"""Settings of a speedrun: named presets, overridden by a TOML file.

A config is a dict of sections. ``tokenizer``, ``model``, ``data``,
``arithmetic``, ``eval`` and ``run`` are the speedrun's own; ``pretrain``,
``sft``, ``dpo`` and ``grpo`` hold fields of the trainers' configs
(``PretrainConfig``, ``SFTConfig``, ``DPOConfig``, ``GRPOConfig``), plus
``compute_dtype``. A TOML file given with
``--config`` overrides single keys::

    [pretrain]
    max_steps = 800
    learning_rate = 2e-3
    [model]
    num_layers = 6

Why the CPU presets compute in fp32: the model state is bf16 (weights and
gradients, with fp32 master weights and moments in the fused AdamW, the
16-bytes-per-parameter layout), but the matmuls run in fp32, because CPUs
without AVX-512-BF16/AMX multiply bf16 matrices an order of magnitude slower
than fp32 ones. ``compute_dtype = "bfloat16"`` computes in bf16 as a GPU would.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

from shardkit.tokenizer.patterns import GPT4_PATTERN

#: GPT-4's split pattern with numbers cut into single digits (not runs of three),
#: so every number is spelled digit by digit: what makes arithmetic learnable.
DIGIT_PATTERN = GPT4_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

TRAINING_STAGES = ("pretrain", "sft", "dpo", "grpo")
SECTIONS = ("run", "tokenizer", "model", "data", "arithmetic", "eval", *TRAINING_STAGES)
COMPUTE_DTYPES = ("float32", "bfloat16")

_TINY: dict[str, dict[str, Any]] = {
    "run": {"seed": 1234, "precision": "bf16"},
    "tokenizer": {"vocab_size": 2048, "pattern": DIGIT_PATTERN, "texts": ["moby_dick", "sotu_1990_2021"]},
    "model": {"hidden_size": 128, "intermediate_size": 352, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2,
              "max_position_embeddings": 256, "tie_word_embeddings": True},
    # held_out: the fraction at the end of every text kept for perplexity. sft_text_fraction: the share of SFT rows
    # that are pretraining text (sft_text_len tokens each, all trained), so SFT does not forget the prose.
    "data": {"held_out": 0.05, "seq_len": 128, "sft_text_fraction": 0.1, "sft_text_len": 32},
    # a (op) b with a < 10**digits and b < 10**operand_digits; train and test never share a problem.
    # dpo_candidates: training problems the SFT model answers (greedy); its wrong answers, up to dpo_pairs, are the
    # rejected side of DPO. grpo_prompts: training problems GRPO samples answers to.
    # 3-digit +- 3-digit: 1% exact match after SFT; 3 +- 2: 78% after 1500 SFT steps (both measured, RESULTS.md).
    # test_size 1000: at 40% exact match 200 problems have a standard error of 3.5 points, 1000 of 1.6; greedy
    # answers to 1000 problems take about 3 s per stage here.
    "arithmetic": {"digits": 3, "operand_digits": 2, "ops": "+-", "train_size": 16000, "test_size": 1000,
                   "dpo_candidates": 8000, "dpo_pairs": 2000, "grpo_prompts": 4000},
    "eval": {"max_new_tokens": 6, "num_samples": 3, "sample_tokens": 48, "temperature": 0.8, "top_k": 40,
             "perplexity_windows": 64},
    # packing off: the pretraining rows are already seq_len-token chunks of the corpus.
    "pretrain": {"packing": False, "max_steps": 400, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 40,
                 "lr_scheduler_type": "cosine", "weight_decay": 0.1, "adam_beta2": 0.95, "logging_steps": 10,
                 "compute_dtype": "float32"},
    # The answers come late and suddenly (3-digit +- 1-digit: 13% exact match after 600 steps, 41% after 1200, 100%
    # after 1500; 3 +- 2 digits: 9.5% after 1200, 41.5% after 1400, 78% after 1500), so SFT gets most of the time
    # budget, but stops short of the task: at 1400 steps about 40%, where GRPO's groups hold right and wrong answers.
    "sft": {"max_steps": 1400, "per_device_train_batch_size": 32, "learning_rate": 1e-3, "warmup_steps": 30,
            "lr_scheduler_type": "cosine", "adam_beta2": 0.95, "logging_steps": 20, "compute_dtype": "float32"},
    # Plain sigmoid DPO lowered exact match (41% -> 16% from a shorter SFT): chosen and rejected answers share all
    # but a digit, and the mass pushed off the rejected digit went to truncated answers. TRL's "sft" term (the chosen
    # answers' NLL, as in RPO) keeps the chosen ones likely: 41% -> 53% at lr 2e-4. From this preset's SFT model
    # (100%) lr 2e-4 lost 2 of 200 problems; 5e-5 keeps them all and reaches 68% reward accuracy. On pairs of the
    # model's own mistakes only (3 +- 2 digits, SFT at 78%), 120 steps at 5e-5 over 406 pairs (9 epochs) fell to
    # 59.5%, and 60 steps at 2e-5 over 1,600 pairs to 74.5%: hence more candidates, one pass and a small rate.
    # From the 1400-step SFT model (41.6% on 1,000 validation problems no stage trains on): lr 1e-5 -> 42.2%,
    # 2e-5 -> 43.4%, 2e-5 with the sft term weighted 2 -> 43.3%, 5e-5 -> 38.4%.
    "dpo": {"max_steps": 60, "per_device_train_batch_size": 16, "learning_rate": 2e-5, "warmup_steps": 10,
            "loss_type": ["sigmoid", "sft"], "lr_scheduler_type": "cosine", "beta": 0.1, "adam_beta2": 0.95,
            "logging_steps": 10,
            "precompute_ref_log_probs": True, "compute_dtype": "float32"},
    # GRPO on training problems, rewarded for the exact answer only (the format reward is computed and logged at
    # weight 0). 8 answers sampled per prompt at temperature 0.7, 16 prompts a round, two optimizer steps per round
    # on 2 ranks. beta 0: no reference model (TRL's default). Measured from a DPO model at 42.2% on 1,000
    # validation problems no stage trains on (60 steps each): lr 1e-5 with the 0.1 format reward at temperature 1
    # -> 37.1%, lr 3e-6 -> 42.9%; exact match only at temperature 0.7: lr 2e-5 -> 34.0%, 1e-5 -> 38.1% (38.0% on one
    # rank), 5e-6 -> 41.5%, 3e-6 -> 42.1%; 1e-5 with scale_rewards "batch" -> 34.5%. The answers sit on the edge of
    # learning the carries, and 16 noisy prompts a round flip them both ways (lr 2e-5 lost 157 and won 76 of 1,000
    # test problems): hence a very small rate, at which the stage is about neutral (within the 1.6-point noise).
    # From the preset's DPO model (43.4%) the preset's GRPO gave 44.2%.
    "grpo": {"max_steps": 60, "per_device_train_batch_size": 32, "num_generations": 8, "steps_per_generation": 2,
             "max_completion_length": 6, "temperature": 0.7, "learning_rate": 3e-6, "warmup_steps": 5,
             "lr_scheduler_type": "constant_with_warmup", "beta": 0.0, "reward_weights": [1.0, 0.0],
             "adam_beta2": 0.95, "logging_steps": 5, "compute_dtype": "float32"},
}


def _derive(base: dict, **sections: dict) -> dict:
    out = copy.deepcopy(base)
    for name, values in sections.items():
        out[name].update(values)
    return out


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The default: the whole pipeline in well under 15 minutes on 2 CPU cores.
    "tiny": _TINY,
    # A minute or two: what CI runs end to end (the numbers mean little).
    "micro": _derive(
        _TINY,
        tokenizer={"vocab_size": 512},
        model={"hidden_size": 64, "intermediate_size": 176, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2},
        data={"seq_len": 64},
        arithmetic={"train_size": 800, "test_size": 24, "dpo_candidates": 96, "dpo_pairs": 96, "grpo_prompts": 64},
        eval={"num_samples": 1, "sample_tokens": 16, "perplexity_windows": 8},
        pretrain={"max_steps": 12, "warmup_steps": 2, "logging_steps": 2, "per_device_train_batch_size": 8},
        sft={"max_steps": 12, "warmup_steps": 2, "logging_steps": 2, "per_device_train_batch_size": 16},
        dpo={"max_steps": 6, "warmup_steps": 1, "logging_steps": 2, "per_device_train_batch_size": 8},
        grpo={"max_steps": 4, "warmup_steps": 1, "logging_steps": 2, "per_device_train_batch_size": 8,
              "num_generations": 4, "steps_per_generation": 1},
    ),
    # Longer and better: a wider, deeper model trained for longer (one to two hours on 2 cores; not measured end to end).
    "small": _derive(
        _TINY,
        tokenizer={"vocab_size": 4096},
        model={"hidden_size": 256, "intermediate_size": 688, "num_layers": 6, "num_heads": 8, "num_kv_heads": 4},
        data={"seq_len": 256},
        arithmetic={"train_size": 19000, "dpo_pairs": 4000},
        pretrain={"max_steps": 2000, "learning_rate": 1.5e-3, "warmup_steps": 100},
        sft={"max_steps": 2000, "learning_rate": 7e-4},
        dpo={"max_steps": 300, "learning_rate": 1e-4},
        grpo={"max_steps": 150},
    ),
    # For one H100 (--device cuda), meant to take minutes: a 27M-parameter model computing in bf16. Sized by
    # arithmetic, NOT measured: it has not run on a GPU yet (see benchmarks/RESULTS.md). Pretraining sees
    # 1000 x 64 x 512 = 33M tokens; at 6 x 27M FLOPs per token that is 5e15 FLOPs, well under a minute even at
    # 10% of an H100's bf16 peak; SFT and DPO rows are short. Evaluation runs in the launching process, on the CPU.
    "gpu": _derive(
        _TINY,
        tokenizer={"vocab_size": 8192},
        model={"hidden_size": 512, "intermediate_size": 1376, "num_layers": 8, "num_heads": 8, "num_kv_heads": 4,
               "max_position_embeddings": 512},
        data={"seq_len": 512},
        arithmetic={"train_size": 19000, "dpo_pairs": 4000},
        pretrain={"max_steps": 1000, "per_device_train_batch_size": 64, "learning_rate": 1e-3, "warmup_steps": 50,
                  "logging_steps": 50, "compute_dtype": "bfloat16"},
        sft={"max_steps": 1500, "per_device_train_batch_size": 64, "learning_rate": 5e-4, "logging_steps": 50,
             "compute_dtype": "bfloat16"},
        dpo={"max_steps": 300, "per_device_train_batch_size": 32, "learning_rate": 5e-5, "logging_steps": 20,
             "compute_dtype": "bfloat16"},
        grpo={"max_steps": 200, "per_device_train_batch_size": 64, "logging_steps": 10, "compute_dtype": "bfloat16"},
    ),
}


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file as a dict (``tomllib``, or ``tomli`` on Python 3.10)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"--config {os.fspath(path)!r}: invalid TOML: {exc}") from None


def _config_class(stage: str):
    """The trainer config class of a training stage."""
    import shardkit.trainers as trainers

    return {"pretrain": trainers.PretrainConfig, "sft": trainers.SFTConfig, "dpo": trainers.DPOConfig,
            "grpo": trainers.GRPOConfig}[stage]


def _allowed_keys(section: str, base: dict[str, Any]) -> set[str]:
    if section == "model":
        from shardkit.models.config import GPTConfig

        return {f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size"}
    if section in TRAINING_STAGES:
        # output_dir and seed belong to the run: each stage writes under the run directory.
        fields = {f.name for f in dataclasses.fields(_config_class(section))}
        return (fields | {"compute_dtype"}) - {"output_dir", "seed"}
    return set(base)


def resolve(preset: str = "tiny", overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The preset's settings with ``overrides`` (``{section: {key: value}}``, e.g. a loaded TOML) applied.

    Unknown presets, sections and keys raise ValueError naming them.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    config = copy.deepcopy(PRESETS[preset])
    for section, values in (overrides or {}).items():
        if section not in SECTIONS:
            raise ValueError(f"config: unknown section [{section}]; expected one of {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ValueError(f"config: [{section}] must be a table of key = value, got {values!r}")
        allowed = _allowed_keys(section, config[section])
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"config: unknown keys {unknown} in [{section}]; expected some of {sorted(allowed)}")
        config[section].update(values)
    _check(config)
    return config


def _check(config: dict[str, dict[str, Any]]) -> None:
    for stage in TRAINING_STAGES:
        dtype = config[stage].get("compute_dtype", "float32")
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"config: [{stage}] compute_dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}")
    if config["run"]["precision"] not in ("bf16", "fp32"):
        raise ValueError(f"config: [run] precision must be 'bf16' or 'fp32', got {config['run']['precision']!r}")
    held_out = config["data"]["held_out"]
    if not 0.0 < held_out < 0.5:
        raise ValueError(f"config: [data] held_out must be in (0, 0.5), got {held_out!r}")
    arith = config["arithmetic"]
    for key in ("digits", "operand_digits", "train_size", "test_size", "dpo_candidates", "dpo_pairs", "grpo_prompts"):
        if not isinstance(arith[key], int) or arith[key] < 1:
            raise ValueError(f"config: [arithmetic] {key} must be a positive int, got {arith[key]!r}")
    for key in ("dpo_candidates", "grpo_prompts"):
        if arith[key] > arith["train_size"]:
            raise ValueError(f"config: [arithmetic] {key} ({arith[key]}) must be at most train_size "
                             f"({arith['train_size']}): they are training problems")
    data = config["data"]
    if not 0.0 <= data["sft_text_fraction"] < 1.0:
        raise ValueError(f"config: [data] sft_text_fraction must be in [0, 1), got {data['sft_text_fraction']!r}")
    if not isinstance(data["sft_text_len"], int) or not 2 <= data["sft_text_len"] <= data["seq_len"]:
        raise ValueError(f"config: [data] sft_text_len must be an int in [2, seq_len], got {data['sft_text_len']!r}")
    if not arith["ops"] or set(arith["ops"]) - set("+-"):
        raise ValueError(f"config: [arithmetic] ops must be made of '+' and '-', got {arith['ops']!r}")


def trainer_args(config: dict[str, dict[str, Any]], stage: str, output_dir: str):
    """The trainer config (``PretrainConfig``/``SFTConfig``/``DPOConfig``/``GRPOConfig``) of a stage."""
    values = {k: v for k, v in config[stage].items() if k != "compute_dtype"}
    values.update(output_dir=output_dir, seed=config["run"]["seed"])
    values.setdefault("max_length", config["data"]["seq_len"])
    values.setdefault("report_to", ["jsonl"])
    return _config_class(stage).from_dict(values)
