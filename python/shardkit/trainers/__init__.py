"""Trainers in the shape TRL users know: ``PretrainTrainer``, ``SFTTrainer``, ``DPOTrainer``, ``KTOTrainer``,
``RewardTrainer``, ``GRPOTrainer``.

Each takes ``(model, args=XxxConfig(...), train_dataset=..., processing_class=tokenizer)``;
``train()`` returns a state whose ``log_history`` holds the logged dicts.
The model may be a ``shardkit.models.GPT`` or any HF causal LM.
"""

from shardkit.trainers.base import BaseTrainer, TrainerState
from shardkit.trainers.config import DPOConfig, KTOConfig, PretrainConfig, SFTConfig, TrainingConfig
from shardkit.trainers.dpo import DPOTrainer, dpo_losses
from shardkit.trainers.grpo import GRPOTrainer
from shardkit.trainers.grpo_config import GRPOConfig
from shardkit.trainers.kto import KTOTrainer, kto_losses
from shardkit.trainers.ppo import PPOConfig, PPOTrainer
from shardkit.trainers.reward import RewardConfig, RewardTrainer
from shardkit.trainers.scores import scalar_head_gpt
from shardkit.trainers.setup import prepare_model_and_optimizer
from shardkit.trainers.sft import PretrainTrainer, SFTTrainer

__all__ = [
    "BaseTrainer", "TrainerState", "TrainingConfig", "PretrainConfig", "SFTConfig", "DPOConfig", "KTOConfig",
    "PretrainTrainer", "SFTTrainer", "DPOTrainer", "KTOTrainer", "dpo_losses", "kto_losses",
    "prepare_model_and_optimizer", "RewardConfig", "RewardTrainer", "GRPOConfig", "GRPOTrainer",
    "PPOConfig", "PPOTrainer", "scalar_head_gpt",
]
