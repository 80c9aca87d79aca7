"""``shardkit.fsdp``: ZeRO-style sharded data parallelism over ``shardkit.comm`` (CPU) or NCCL (CUDA).

::

    from shardkit import comm, fsdp
    from shardkit.models.gpt import Block
    comm.init()
    model = fsdp.shard(model, units=[Block], strategy="FULL_SHARD",   # or HYBRID: shard per host, replicate across
                       mixed_precision=fsdp.MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    opt = FusedAdamW(model.parameters())       # steps each rank's flat shards
    loss = model(x).loss; loss.backward()      # gradients averaged over ranks, sharded
    fsdp.clip_grad_norm_(model, 1.0); opt.step()
    with fsdp.no_sync(model): ...              # gradient accumulation without communication
    fsdp.save_full_state_dict(model, "model.safetensors")   # gathered on rank 0
    fsdp.save_sharded_checkpoint(model, opt, "ckpt")        # per rank; loads with any world size

    model = fsdp.shard(model.to("cuda"), units=[Block])  # CUDA: NCCL (transport="auto"), side-stream overlap
    with torch.device("meta"):                  # a model larger than one rank: built without memory,
        big = GPT(config)                       # materialised and sharded one unit at a time
    big = fsdp.shard(big, units=[Block], param_init_fn=big.init_weights, seed=0)
"""

from shardkit.fsdp.full_state import full_state_dict, load_full_state_dict, save_full_state_dict
from shardkit.fsdp.grad_norm import clip_grad_norm_
from shardkit.fsdp.meta_init import initialize_units
from shardkit.fsdp.sharded_checkpoint import load_sharded_checkpoint, save_sharded_checkpoint
from shardkit.fsdp.sharded_model import MixedPrecision, get_state, is_sharded, no_sync, shard
from shardkit.fsdp.strategies import STRATEGIES

__all__ = [
    "shard", "is_sharded", "MixedPrecision", "STRATEGIES", "no_sync", "clip_grad_norm_", "get_state", "initialize_units",
    "full_state_dict", "save_full_state_dict", "load_full_state_dict",
    "save_sharded_checkpoint", "load_sharded_checkpoint",
]
