"""``GRPOConfig``: TRL 1.16's GRPO field names and defaults, on top of the shared ``TrainingConfig``.

Batch vocabulary (as in TRL): ``per_device_train_batch_size`` counts
*completions* per micro-batch; a *generation batch* of
``generation_batch_size`` completions (``generation_batch_size //
num_generations`` prompts, each sampled ``num_generations`` times) is
generated at once and then trained on for ``steps_per_generation``
micro-batches, ``num_iterations`` times over.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardkit.trainers.config import TrainingConfig, _f

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass(kw_only=True)
class GRPOConfig(TrainingConfig):
    """Group relative policy optimisation (``GRPOTrainer``)."""

    learning_rate: float = _f(1e-6, "peak learning rate (TRL's GRPO default)")
    disable_dropout: bool = _f(False, "zero every dropout probability of the policy (and reference)")
    num_generations: int = _f(8, "completions sampled per prompt (G); must divide generation_batch_size")
    max_completion_length: int = _f(512, "most tokens generated per completion")
    shuffle_dataset: bool = _f(True, "shuffle the prompts each epoch (seeded)")
    generation_batch_size: int | None = _f(None, "completions generated at once; default "
                                           "per_device_train_batch_size * world * steps_per_generation")
    steps_per_generation: int | None = _f(None, "micro-batches trained per generation batch; default "
                                          "gradient_accumulation_steps")
    temperature: float = _f(1.0, "sampling temperature; log-probs are computed at the same temperature")
    top_p: float = _f(1.0, "nucleus sampling threshold in (0, 1]; 1 = off")
    top_k: int = _f(0, "sample from the k most likely tokens; 0 = off")
    beta: float = _f(0.0, "weight of the k3 KL estimate to the reference model; 0 = no reference model")
    num_iterations: int = _f(1, "passes over each generation batch (mu); > 1 uses the old policy's log-probs")
    epsilon: float = _f(0.2, "lower clipping bound: the ratio is kept >= 1 - epsilon")
    epsilon_high: float | None = _f(None, "upper clipping bound (1 + epsilon_high); None = epsilon")
    reward_weights: list[float] | None = _f(None, "one weight per reward function; None = 1 each")  # noqa: RUF009
    scale_rewards: str = _f("group", "divide advantages by the reward std of the group | batch | none")
    loss_type: str = _f("dapo", "grpo (per-sequence means) | bnpo (local token mean) | dr_grpo "
                        "(/ (B * max_completion_length)) | dapo (/ tokens of the accumulated batch)")
    mask_truncated_completions: bool = _f(False, "leave completions that hit max_completion_length out of the loss")
    use_bias_correction_kl: bool = _f(True, "multiply the per-token KL by the importance ratio (unbiased gradient)")

    def __post_init__(self) -> None:
        super().__post_init__()
        from shardkit.trainers.setup import data_parallel_world

        name = type(self).__name__
        if self.scale_rewards is True or self.scale_rewards is False:  # TRL's boolean spellings
            self.scale_rewards = "group" if self.scale_rewards else "none"
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"{name}.loss_type must be one of {GRPO_LOSS_TYPES}, got {self.loss_type!r}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"{name}.scale_rewards must be one of {SCALE_REWARDS}, got {self.scale_rewards!r}")
        for field in ("num_generations", "max_completion_length", "num_iterations"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{field} must be a positive int, got {value!r}")
        if self.num_generations < 2:
            raise ValueError(f"{name}.num_generations must be >= 2: GRPO's advantages compare completions of one "
                             f"prompt, got {self.num_generations}")
        if not self.temperature > 0:
            raise ValueError(f"{name}.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"{name}.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"{name}.top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.beta < 0 or self.epsilon < 0 or (self.epsilon_high is not None and self.epsilon_high < 0):
            raise ValueError(f"{name}: beta, epsilon and epsilon_high must be >= 0")
        world = data_parallel_world()
        per_step = self.per_device_train_batch_size * world
        if self.generation_batch_size is not None and self.steps_per_generation is not None:
            raise ValueError(f"{name}: set generation_batch_size or steps_per_generation, not both")
        if self.generation_batch_size is None:
            if self.steps_per_generation is None:
                self.steps_per_generation = self.gradient_accumulation_steps
            if self.steps_per_generation < 1:
                raise ValueError(f"{name}.steps_per_generation must be >= 1, got {self.steps_per_generation}")
            self.generation_batch_size = per_step * self.steps_per_generation
        else:
            if self.generation_batch_size < 1 or self.generation_batch_size % per_step:
                raise ValueError(f"{name}.generation_batch_size ({self.generation_batch_size}) must be a positive "
                                 f"multiple of per_device_train_batch_size * world ({per_step})")
            self.steps_per_generation = self.generation_batch_size // per_step
        if self.generation_batch_size % self.num_generations:
            raise ValueError(f"{name}.num_generations ({self.num_generations}) must divide the generation batch "
                             f"({self.generation_batch_size} completions = per_device_train_batch_size "
                             f"{self.per_device_train_batch_size} x world {world} x steps_per_generation "
                             f"{self.steps_per_generation}), so every prompt's group is generated together")
