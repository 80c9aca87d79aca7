"""Language models: ``GPT`` (Llama-style) with named presets and KV-cache generation."""

from shardkit.models.config import PRESETS, GPTConfig
from shardkit.models.generation import filter_logits, generate
from shardkit.models.gpt import GPT, CausalLMOutput
from shardkit.models.kv_cache import KVCache
from shardkit.models.pretrained import load_smollm2
from shardkit.models.reward_head import GPTForSequenceClassification, SequenceClassifierOutput

__all__ = ["GPT", "GPTConfig", "PRESETS", "CausalLMOutput", "KVCache", "generate", "filter_logits", "load_smollm2",
           "GPTForSequenceClassification", "SequenceClassifierOutput"]
