"""``shardkit.parallel``: data, tensor (+sequence) and pipeline parallelism on one device mesh.

::

    from shardkit.parallel import ParallelPlan, parallelize, clip_grad_norm_
    plan = ParallelPlan(dp_shard=2, tp=2, pp=2, pp_schedule="1f1b", microbatches=4)
    pm = parallelize(GPT(config), plan)          # validates, builds the mesh, applies the plan
    opt = FusedAdamW(pm.parameters())             # DTensor parameters: local shards stepped
    loss = pm.forward_backward(input_ids)         # schedule + backward; global mean loss
    norm = clip_grad_norm_(pm, 1.0); opt.step(); pm.zero_grad()

See ``parallelize.py`` for the composition order and the sharding choice.
"""

from shardkit.parallel.causal_lm import PlanCausalLM
from shardkit.parallel.grad_norm import clip_grad_norm_
from shardkit.parallel.parallelize import ParallelModel, build_mesh, parallelize
from shardkit.parallel.pipeline import GPTStage, bubble_formula, layer_split
from shardkit.parallel.plan import MESH_AXES, SCHEDULES, ParallelPlan
from shardkit.parallel.state import full_state_dict, save_full_state_dict
from shardkit.parallel.tensor_parallel import (
    gpt_block_plan,
    llama_tp_plan,
    reduce_partial_grads,
)

__all__ = [
    "MESH_AXES",
    "SCHEDULES",
    "GPTStage",
    "ParallelModel",
    "ParallelPlan",
    "PlanCausalLM",
    "bubble_formula",
    "build_mesh",
    "clip_grad_norm_",
    "full_state_dict",
    "gpt_block_plan",
    "layer_split",
    "llama_tp_plan",
    "parallelize",
    "reduce_partial_grads",
    "save_full_state_dict",
]
