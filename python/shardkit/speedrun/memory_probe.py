"""Per-rank memory of the pretraining run, measured, next to the estimator's figures.

After training, every rank runs one more forward and backward on a real
micro-batch (no optimizer step) and counts:

* model states: bytes of its parameter shards, their gradients, the fp32
  master weights and the AdamW moments in the fused optimizer's state;
* activations: the storages autograd saves for backward (saved-tensor hooks),
  the gathered parameters excluded;
* communication buffers: the most bytes of gathered unit parameters and
  not-yet-reduced full gradients alive at once (``memory.CommBufferProbe``).

Rank 0 gets every rank's figures. The estimate is ``shardkit.memory.estimate``
for the same model, world size and micro-batch: model states at the run's
storage precision, activations and gathered parameters at its compute dtype.
"""

from __future__ import annotations

import torch

MODEL_STATE_ITEMS = ("params", "grads", "master_weights", "optimizer_state")
ITEMS = (*MODEL_STATE_ITEMS, "activations", "comm_buffers")


def measure_rank(trainer) -> dict[str, int]:
    """This rank's bytes by item, from a probe forward/backward of the first micro-batch."""
    from shardkit import fsdp
    from shardkit.memory import CommBufferProbe, SavedActivationCounter, model_state_bytes

    model = trainer.model
    state = fsdp.get_state(model)
    gathered = [g.full for g in state.groups if not g.alias]
    batch = trainer.micro_batch(0)
    model.train()
    with CommBufferProbe(state) as probe:
        with SavedActivationCounter(exclude=[*gathered, *model.parameters()]) as saved:
            loss = trainer.compute_loss(model, batch, None)
            activations = saved.bytes
        loss.backward()
    out = {
        **model_state_bytes(model, trainer.optimizer),
        "activations": activations,
        "comm_buffers": probe.peak,
    }
    trainer.optimizer.zero_grad(set_to_none=True)
    return out


def decoder_spec(config: dict, vocab_size: int):
    """The estimator's description of the speedrun's GPT."""
    from shardkit.memory import DecoderSpec

    m = config["model"]
    return DecoderSpec(vocab=vocab_size, hidden=m["hidden_size"], layers=m["num_layers"], heads=m["num_heads"],
                       kv_heads=m["num_kv_heads"], intermediate=m["intermediate_size"],
                       tie_embeddings=m["tie_word_embeddings"])


def estimated(config: dict, vocab_size: int, world: int, batch: int, seq_len: int) -> dict[str, int]:
    """The estimator's per-rank bytes by item for the speedrun's run."""
    from shardkit.memory import estimate

    storage = config["run"]["precision"]
    compute = "bf16" if config["pretrain"].get("compute_dtype") == "bfloat16" else "fp32"
    kwargs = dict(optimizer="adamw", strategy="FULL_SHARD", world_size=world, batch=batch, seq_len=seq_len)
    spec = decoder_spec(config, vocab_size)
    states = estimate(spec, precision=storage, **kwargs)
    runtime = estimate(spec, precision=compute, **kwargs)
    return {item: (states if item in MODEL_STATE_ITEMS else runtime)[item] for item in ITEMS}


def measure(trainer, config: dict, world: int) -> dict:
    """Every rank's measured bytes (on rank 0; ``{}`` elsewhere) and the estimate. Collective."""
    from shardkit import comm

    mine = measure_rank(trainer)
    values = torch.tensor([mine[k] for k in ITEMS], dtype=torch.int64)
    if world > 1:
        everyone = torch.zeros(world * len(ITEMS), dtype=torch.int64)
        comm.all_gather(everyone, values)
        rows = everyone.view(world, len(ITEMS)).tolist()
    else:
        rows = [values.tolist()]
    batch = trainer.args.per_device_train_batch_size
    seq_len = config["data"]["seq_len"]
    return {
        "measured": [dict(zip(ITEMS, row)) for row in rows],
        "estimated": estimated(config, trainer.processing_class.vocab_size, world, batch, seq_len),
        "batch": batch,
        "seq_len": seq_len,
    }
