"""``ParallelPlan``: how many ranks go to each kind of parallelism, checked before any process group exists.

::

    plan = ParallelPlan(dp_shard=2, tp=2, pp=2, pp_schedule="1f1b", microbatches=4)
    plan.validate(world_size=8, config=model.config)   # ValueError naming the field, no collective yet

The product ``pp * dp_replicate * dp_shard * tp`` is the world size. The mesh
axes, outermost first, are ``("pp", "dp_replicate", "dp_shard", "tp")``: TP
groups are consecutive ranks (one node's fast links), PP crosses the slowest
links (it only sends activations between neighbours). ``parallel.parallelize``
applies the plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SCHEDULES = ("gpipe", "1f1b", "interleaved_1f1b", "zero_bubble")
# Schedules that hold several stages per rank (virtual stages, "v" in the bubble formula).
MULTI_STAGE_SCHEDULES = ("interleaved_1f1b", "zero_bubble")
MESH_AXES = ("pp", "dp_replicate", "dp_shard", "tp")


@dataclass(kw_only=True)
class ParallelPlan:
    """Degrees of data, tensor and pipeline parallelism and the options that go with them."""

    dp_replicate: int = (
        1  # replicas that all-reduce gradients (HSDP's outer axis; DDP when dp_shard=1)
    )
    dp_shard: int = (
        1  # ranks the parameters, gradients and optimizer state are sharded over
    )
    tp: int = (
        1  # tensor-parallel degree: heads and MLP columns split over this many ranks
    )
    pp: int = (
        1  # pipeline stages (ranks); embedding on the first, norm + head on the last
    )
    pp_schedule: str = "1f1b"  # gpipe | 1f1b | interleaved_1f1b | zero_bubble
    microbatches: int = (
        1  # micro-batches per step that the pipeline schedule interleaves
    )
    stages_per_rank: int = (
        2  # virtual stages per rank for the interleaved schedules ("v")
    )
    sequence_parallel: bool = (
        True  # shard norms and residuals along the sequence across TP ranks
    )
    loss_parallel: bool = (
        True  # cross-entropy on vocabulary-sharded logits (no all-gather of logits)
    )
    activation_checkpointing: bool = False  # recompute every block in backward
    compile: bool = False  # torch.compile every block

    def __post_init__(self) -> None:
        for name in (
            "dp_replicate",
            "dp_shard",
            "tp",
            "pp",
            "microbatches",
            "stages_per_rank",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"ParallelPlan.{name}: expected an int >= 1, got {value!r}"
                )
        for name in (
            "sequence_parallel",
            "loss_parallel",
            "activation_checkpointing",
            "compile",
        ):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"ParallelPlan.{name}: expected a bool, got {getattr(self, name)!r}"
                )
        if self.pp_schedule not in SCHEDULES:
            raise ValueError(
                f"ParallelPlan.pp_schedule: expected one of {SCHEDULES}, got {self.pp_schedule!r}"
            )

    @classmethod
    def from_dict(cls, values: dict) -> ParallelPlan:
        """A plan from a ``[parallel]`` TOML table; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"[parallel]: unknown keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**values)

    @property
    def world_size(self) -> int:
        return self.pp * self.dp_replicate * self.dp_shard * self.tp

    @property
    def dp(self) -> int:
        """Data-parallel replicas of the batch: ranks that see different examples."""
        return self.dp_replicate * self.dp_shard

    @property
    def virtual_stages(self) -> int:
        """Stages each pipeline rank holds (1, or ``stages_per_rank`` for the interleaved schedules)."""
        return (
            self.stages_per_rank
            if self.pp > 1 and self.pp_schedule in MULTI_STAGE_SCHEDULES
            else 1
        )

    @property
    def num_stages(self) -> int:
        return self.pp * self.virtual_stages

    def is_trivial(self) -> bool:
        """True when the plan is one process with nothing to apply."""
        return self.world_size == 1 and not (
            self.activation_checkpointing or self.compile
        )

    def validate(self, *, world_size: int, config=None) -> None:
        """Raise ValueError naming the field if the plan cannot run on ``world_size`` ranks with this model.

        ``config``: a ``GPTConfig`` or an HF config (``num_attention_heads``,
        ``num_key_value_heads``, ``hidden_size``, ``intermediate_size``,
        ``num_hidden_layers``). Pure arithmetic: call it before creating any process group.
        """
        if self.world_size != world_size:
            raise ValueError(
                f"ParallelPlan: pp*dp_replicate*dp_shard*tp = {self.pp}*{self.dp_replicate}*{self.dp_shard}*{self.tp}"
                f" = {self.world_size}, but the world size is {world_size}"
            )
        if self.pp > 1:
            if (
                self.pp_schedule in ("1f1b", "interleaved_1f1b", "zero_bubble")
                and self.microbatches < self.pp
            ):
                raise ValueError(
                    f"ParallelPlan.microbatches: schedule {self.pp_schedule!r} needs at least pp="
                    f"{self.pp} micro-batches, got {self.microbatches}"
                )
            if (
                self.pp_schedule in MULTI_STAGE_SCHEDULES
                and self.microbatches % self.pp
            ):
                raise ValueError(
                    f"ParallelPlan.microbatches: schedule {self.pp_schedule!r} needs a multiple of "
                    f"pp={self.pp}, got {self.microbatches}"
                )
        if config is None:
            return
        heads = _get(config, "num_heads", "num_attention_heads")
        kv_heads = _get(config, "num_kv_heads", "num_key_value_heads") or heads
        hidden = _get(config, "hidden_size")
        inter = _get(config, "intermediate_size")
        layers = _get(config, "num_layers", "num_hidden_layers")
        vocab = _get(config, "vocab_size")
        if self.tp > 1:
            for what, value in (
                ("num_heads", heads),
                ("num_kv_heads", kv_heads),
                ("hidden_size", hidden),
                ("intermediate_size", inter),
                ("vocab_size", vocab),
            ):
                if value is not None and value % self.tp:
                    raise ValueError(
                        f"ParallelPlan.tp: tp={self.tp} must divide the model's {what} ({value})"
                    )
        if layers is not None and self.num_stages > layers:
            field = "pp" if self.virtual_stages == 1 else "stages_per_rank"
            raise ValueError(
                f"ParallelPlan.{field}: {self.num_stages} pipeline stages (pp={self.pp} x "
                f"{self.virtual_stages} per rank) but the model has only {layers} blocks"
            )
        if (self.tp > 1 or self.pp > 1) and getattr(
            config, "tie_word_embeddings", False
        ):
            raise ValueError(
                "ParallelPlan: tp > 1 or pp > 1 needs tie_word_embeddings=False (the head and the "
                "embedding are sharded differently, or live on different stages)"
            )

    def describe(self) -> str:
        """One line: ``pp2 x dp_replicate1 x dp_shard2 x tp2 (1f1b, m=4, SP, loss-parallel)``."""
        opts = [f"{self.pp_schedule}, m={self.microbatches}"] if self.pp > 1 else []
        if self.tp > 1:
            opts += (["SP"] if self.sequence_parallel else []) + (
                ["loss-parallel"] if self.loss_parallel else []
            )
        if self.activation_checkpointing:
            opts.append("AC")
        if self.compile:
            opts.append("compile")
        axes = " x ".join(f"{a}{getattr(self, a)}" for a in MESH_AXES)
        return axes + (f" ({', '.join(opts)})" if opts else "")


def _get(config, *names):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None
