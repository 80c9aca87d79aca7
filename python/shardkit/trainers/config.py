"""Trainer configs: keyword-only dataclasses with TRL's field names.

``SFTConfig(output_dir=..., learning_rate=..., ...)``; every field has a
one-line help (its ``metadata["help"]``). ``XxxConfig.from_file(path,
overrides)`` loads TOML or YAML and applies ``key=value`` overrides, as the
``shardkit train`` CLI does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from shardkit.trainers.device import check_device


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class TrainingConfig:
    """Fields every trainer shares (the transformers/TRL names)."""

    output_dir: str = _f("shardkit-output", "where checkpoints and metrics.jsonl go")
    learning_rate: float = _f(2e-5, "peak learning rate")
    per_device_train_batch_size: int = _f(8, "examples per micro-batch")
    per_device_eval_batch_size: int = _f(8, "examples per eval batch")
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step")
    max_steps: int = _f(-1, "optimizer steps to run; -1 = num_train_epochs epochs")
    num_train_epochs: float = _f(3.0, "epochs to run when max_steps is -1")
    lr_scheduler_type: str = _f("linear", "constant | constant_with_warmup | linear | cosine")
    warmup_steps: int = _f(0, "linear warmup steps from 0 to learning_rate")
    optim: str = _f("adamw_fused", "adamw_fused (shardkit.optim.FusedAdamW) | adamw_torch | sgd")
    weight_decay: float = _f(0.0, "decoupled weight decay")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon")
    max_grad_norm: float | None = _f(1.0, "clip the global gradient norm to this; 0 or None disables clipping")
    max_length: int | None = _f(1024, "truncate tokenized sequences to this many tokens")
    logging_steps: int = _f(10, "log every this many optimizer steps")
    save_steps: int = _f(0, "checkpoint every this many optimizer steps; 0 = only at the end")
    eval_steps: int = _f(0, "evaluate every this many optimizer steps; 0 = never during training")
    seed: int = _f(42, "seed of the data order and of torch's RNG")
    shuffle: bool = _f(True, "shuffle the training data each epoch (seeded); False keeps dataset order")
    bf16: bool = _f(False, "cast the model to bfloat16 (the fused optimizer keeps fp32 master weights)")
    engine: str = _f("auto", "sharding engine when several ranks train: auto (shardkit on CPU, fsdp2 on CUDA) | "
                     "shardkit (shardkit.fsdp.shard) | fsdp2 (torch fully_shard with the fused optimizer)")
    device: str = _f("auto", "auto (cuda:LOCAL_RANK when CUDA is available, else cpu) | cpu | cuda | cuda:N")
    report_to: list[str] = _f(("jsonl",), "metric sinks besides the console: jsonl, tensorboard")
    disable_tqdm: bool = _f(False, "no progress bar")
    ema_decay: float | None = _f(None, "keep an EMA of the weights with this decay (e.g. 0.999): evaluate() uses it, "
                                 "checkpoints carry it, output_dir/model_ema.safetensors at the end; None = off")
    parallel: dict | None = _f(None, "a [parallel] table of shardkit.parallel.ParallelPlan fields (tp, pp, ...); "
                                     "None = data parallelism over all ranks")

    def __post_init__(self) -> None:
        self.report_to = list(self.report_to)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {getattr(self, name)}")
        norm = self.max_grad_norm
        # None means no clipping, as transformers' TrainingArguments accepts it.
        if norm is not None and (isinstance(norm, bool) or not isinstance(norm, (int, float)) or not norm >= 0):
            raise ValueError(f"{type(self).__name__}.max_grad_norm must be a number >= 0 or None (no clipping), "
                             f"got {norm!r}")
        for name in ("warmup_steps", "save_steps", "eval_steps", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps <= 0 and self.max_steps != -1:
            raise ValueError(f"{type(self).__name__}.max_steps must be positive or -1, got {self.max_steps}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"{type(self).__name__}.max_length must be >= 1 or None, got {self.max_length}")
        if self.lr_scheduler_type not in ("constant", "constant_with_warmup", "linear", "cosine"):
            raise ValueError(f"{type(self).__name__}.lr_scheduler_type must be constant, constant_with_warmup, "
                             f"linear or cosine, got {self.lr_scheduler_type!r}")
        if self.optim not in ("adamw_fused", "adamw_torch", "sgd"):
            raise ValueError(f"{type(self).__name__}.optim must be adamw_fused, adamw_torch or sgd, got {self.optim!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"{type(self).__name__}.ema_decay must be in [0, 1) or None, got {self.ema_decay!r}")
        check_device(self.device)
        if self.engine not in ("auto", "shardkit", "fsdp2"):
            raise ValueError(f"{type(self).__name__}.engine must be 'auto', 'shardkit' or 'fsdp2', got {self.engine!r}")
        if self.parallel is not None:
            from shardkit.parallel import ParallelPlan

            if isinstance(self.parallel, ParallelPlan):
                self.parallel = dataclasses.asdict(self.parallel)
            ParallelPlan.from_dict(self.parallel)  # ValueError naming the field, now rather than in train()
        unknown = set(self.report_to) - {"jsonl", "tensorboard"}
        if unknown:
            raise ValueError(f"{type(self).__name__}.report_to: unknown sinks {sorted(unknown)}; use jsonl, tensorboard")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, overrides: dict[str, str] | None = None):
        """Load a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file, then apply string overrides.

        Only top-level keys that are fields of this config are allowed (others
        raise); a ``[trainer]`` table is used when present, so a file can also
        hold the model/data sections of the CLI.
        """
        values: dict[str, Any] = {}
        if path is not None:
            values = dict(load_config_file(path).get("trainer", {}))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, text in (overrides or {}).items():
            if key not in fields:
                raise ValueError(f"{cls.__name__}: unknown field {key!r} in overrides")
            values[key] = parse_override(text)
        return cls.from_dict(values)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML or YAML file as a dict."""
    path = os.fspath(path)
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ImportError("reading a .toml config on Python 3.10 needs the tomli package") from None

        with open(path, "rb") as f:
            return tomllib.load(f)
    if path.endswith((".yaml", ".yml")):
        import yaml

        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    raise ValueError(f"config file {path!r}: expected a .toml, .yaml or .yml file")


def parse_override(text: str) -> Any:
    """A CLI value: JSON when it parses (numbers, true/false, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass(kw_only=True)
class PretrainConfig(TrainingConfig):
    """Plain next-token training on ``text`` records."""

    packing: bool = _f(True, "pack documents best-fit into max_length rows")


@dataclass(kw_only=True)
class SFTConfig(TrainingConfig):
    """Supervised fine-tuning on text, prompt/completion or messages records."""

    packing: bool = _f(False, "pack examples best-fit into max_length rows (padding-free)")
    completion_only_loss: bool | None = _f(None, "train only on completions; None = yes for prompt/completion data")
    assistant_only_loss: bool = _f(False, "train only on assistant turns (needs {% generation %} in the template)")


DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "sft")


@dataclass(kw_only=True)
class DPOConfig(TrainingConfig):
    """Direct preference optimisation on preference records."""

    beta: float = _f(0.1, "strength of the KL penalty towards the reference model")
    loss_type: str | list[str] = _f("sigmoid", "sigmoid | ipo | hinge | robust | sft, or a list of them, summed "
                                    "with loss_weights (['sigmoid', 'sft'] is DPO plus the chosen answers' NLL)")
    loss_weights: list[float] | None = _f(None, "one weight per loss_type entry (default: 1 each)")
    label_smoothing: float = _f(0.0, "assumed label-flip probability of the robust loss")
    precompute_ref_log_probs: bool = _f(False, "compute reference log-probs once before training; hold no ref model")
    disable_dropout: bool = _f(True, "zero every dropout in the policy and reference (as TRL)")

    def __post_init__(self) -> None:
        super().__post_init__()
        types = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
        bad = [t for t in types if t not in DPO_LOSS_TYPES]
        if not types or bad:
            raise ValueError(f"DPOConfig.loss_type must be one of {DPO_LOSS_TYPES} or a non-empty list of them, "
                             f"got {self.loss_type!r}")
        if self.loss_weights is not None and len(self.loss_weights) != len(types):
            raise ValueError(f"DPOConfig.loss_weights must have one weight per loss_type ({len(types)}), "
                             f"got {self.loss_weights!r}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"DPOConfig.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@dataclass(kw_only=True)
class KTOConfig(TrainingConfig):
    """Kahneman-Tversky optimisation on unpaired (prompt, completion, label) records."""

    beta: float = _f(0.1, "strength of the KL penalty towards the reference model")
    loss_type: str = _f("kto", "kto")
    desirable_weight: float = _f(1.0, "weight of the desirable (label=True) losses")
    undesirable_weight: float = _f(1.0, "weight of the undesirable (label=False) losses")
    precompute_ref_log_probs: bool = _f(False, "compute reference log-probs once before training; hold no ref model")
    disable_dropout: bool = _f(True, "zero every dropout in the policy and reference (as TRL)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type != "kto":
            raise ValueError(f"KTOConfig.loss_type must be 'kto', got {self.loss_type!r}")
