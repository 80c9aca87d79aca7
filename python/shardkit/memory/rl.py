"""Which models a post-training recipe holds, for ``estimate(..., recipe=...)``.

=========  ==========================================  ==========================  =============
recipe     trained (weights, grads, master, moments)   frozen (weights only)       rows/forward
=========  ==========================================  ==========================  =============
pretrain   the policy                                  -                           batch
sft        the policy                                  -                           batch
dpo        the policy                                  reference (unless           2 x batch
                                                       ``reference=False``:        (chosen +
                                                       precomputed log-probs)      rejected)
rm         a scalar-head model                         -                           2 x batch
grpo       the policy                                  reference (``beta > 0``)    batch
ppo        policy + value model (scalar head)          reference + reward model    batch
=========  ==========================================  ==========================  =============

A scalar-head model (value, reward) is the policy's decoder with the LM head
replaced by ``Linear(hidden, 1)``: vocab*hidden fewer parameters when the
head is untied, hidden more when it was tied to the embedding (see
``shardkit.trainers.scores``). Frozen models are held in the training dtype
and sharded like the policy's weights (as ``shardkit``'s trainers shard the
reference under FULL_SHARD). The training step's activations are those of
each trained model's forward on the micro-batch; PPO's value model keeps no
vocabulary log-softmax. Generation (the rollout's KV cache) happens outside
the training step and is not part of its peak.

The often-quoted "~220 GB for PPO on a 7B model" (arXiv 2309.00754, Table 1,
an estimate) is the trained models' states alone: 2 x 7B x 16 B (mixed
AdamW) = 224 GB; the frozen pair adds 2 x 7B x 2 B = 28 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardkit.memory import activations
from shardkit.memory.spec import DecoderSpec

RECIPES = ("pretrain", "sft", "dpo", "rm", "grpo", "ppo")


@dataclass(frozen=True)
class RecipePlan:
    """The models of a recipe, as parameter counts."""

    recipe: str
    trained: tuple[tuple[str, int], ...]  # (role, params) of each trained model
    frozen: tuple[tuple[str, int], ...]  # (role, params) of each frozen model
    rows_factor: int  # rows per forward, in micro-batches
    lm_heads: tuple[bool, ...]  # per trained model: does its forward end in a vocabulary log-softmax

    @property
    def trained_params(self) -> int:
        return sum(n for _, n in self.trained)

    @property
    def frozen_params(self) -> int:
        return sum(n for _, n in self.frozen)


def scalar_head_params(params: int, spec: DecoderSpec | None) -> int:
    """Parameters of the policy's decoder with a scalar head instead of the LM head (``params`` if unknown)."""
    if spec is None:
        return params
    head = 0 if spec.tie_embeddings else spec.vocab * spec.hidden
    return params - head + spec.hidden


def recipe_plan(recipe: str, params: int, spec: DecoderSpec | None, reference: bool = True) -> RecipePlan:
    """The trained and frozen models of ``recipe`` for a policy of ``params`` parameters."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe: expected one of {RECIPES}, got {recipe!r}")
    if not isinstance(reference, bool):
        raise TypeError(f"reference: expected a bool, got {reference!r}")
    scalar = scalar_head_params(params, spec)
    if recipe in ("pretrain", "sft"):
        return RecipePlan(recipe, (("policy", params),), (), 1, (True,))
    if recipe == "rm":
        return RecipePlan(recipe, (("reward model", scalar),), (), 2, (False,))
    if recipe == "dpo":
        return RecipePlan(recipe, (("policy", params),), (("reference", params),) if reference else (), 2, (True,))
    if recipe == "grpo":
        return RecipePlan(recipe, (("policy", params),), (("reference", params),) if reference else (), 1, (True,))
    frozen = (("reference", params), ("reward model", scalar)) if reference else (("reward model", scalar),)
    return RecipePlan(recipe, (("policy", params), ("value model", scalar)), frozen, 1, (True, False))


def activation_parts(
    plan: RecipePlan, spec: DecoderSpec, tokens: int, act_bytes: int, checkpointed_blocks: int
) -> dict[str, int]:
    """Saved-activation bytes of the trained models' forwards on ``tokens`` tokens per micro-batch row set."""
    rows = tokens * plan.rows_factor
    out = {"blocks": 0, "checkpointed_blocks": 0, "head": 0}
    for has_lm_head in plan.lm_heads:
        parts = activations.activation_bytes(spec, rows, act_bytes, checkpointed_blocks)
        if not has_lm_head:  # a scalar head: ids and the final norm, no vocabulary log-softmax
            parts["head"] = rows * activations.INDEX_BYTES + activations.rmsnorm_bytes(rows, spec.hidden, act_bytes)
        for key in out:
            out[key] += parts[key]
    return out


def describe(plan: RecipePlan) -> str:
    trained = " + ".join(f"{role} {n:,}" for role, n in plan.trained)
    return f"{plan.recipe}: trains {trained} params"
