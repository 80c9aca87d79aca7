"""The memory-budget policy: profile each block once, then pick what to recompute."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from shardkit.memory.measure import SavedActivationCounter, unique_storage_bytes

_OUTSIDE = ""  # counter tag for what is saved outside every block


@dataclass(frozen=True)
class BlockProfile:
    """What one block costs, measured in a probe forward."""

    name: str  # qualified module name
    saved_bytes: int  # activations it saves when not checkpointed
    input_bytes: int  # what it keeps instead when checkpointed (its tensor inputs)
    forward_flops: int  # FLOPs its recompute costs (FlopCounterMode)

    @property
    def savings(self) -> int:
        return self.saved_bytes - self.input_bytes


@dataclass(frozen=True)
class Profile:
    blocks: tuple[BlockProfile, ...]
    outside_bytes: int  # saved by the model outside the blocks (embeddings, head, loss)


def profile_blocks(model: nn.Module, blocks: list[tuple[str, nn.Module]], args: tuple, kwargs: dict) -> Profile:
    """One forward with grad on: saved bytes per block (saved-tensor hooks) and FLOPs per block.

    The RNG state is restored afterwards, so probing does not shift dropout
    masks of the training run that follows.
    """
    names = [name for name, _ in blocks]
    input_bytes = dict.fromkeys(names, 0)
    flops = dict.fromkeys(names, 0)
    counter = SavedActivationCounter(exclude=model)
    flop_mode = FlopCounterMode(display=False)
    handles = []
    for name, block in blocks:

        def before(_module, hook_args, hook_kwargs, name=name):
            counter.set_tag(name)
            input_bytes[name] = unique_storage_bytes(tree_leaves((hook_args, hook_kwargs)))
            flops[name] -= flop_mode.get_total_flops()

        def after(_module, _args, _kwargs, _output, name=name):
            flops[name] += flop_mode.get_total_flops()
            counter.set_tag(_OUTSIDE)

        handles.append(block.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(block.register_forward_hook(after, with_kwargs=True))
    devices = sorted(
        {t.device.index or 0 for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.is_cuda}
    )
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad(), flop_mode, counter:
            output = model(*args, **kwargs)
            # Read while the output keeps the graph, and so the saved tensors, alive.
            saved = counter.bytes_by_tag()
        del output
    finally:
        for handle in handles:
            handle.remove()
    profiles = tuple(BlockProfile(n, saved.get(n, 0), input_bytes[n], flops[n]) for n in names)
    return Profile(profiles, saved.get(_OUTSIDE, 0))


def choose_within_budget(profile: Profile, max_bytes: int) -> tuple[list[int], int]:
    """Blocks to checkpoint (indices) and the saved bytes that predicts.

    Greedy by bytes saved per FLOP recomputed, ties to the earlier block;
    for the identical blocks of a transformer this is the fewest blocks.
    """
    total = profile.outside_bytes + sum(b.saved_bytes for b in profile.blocks)
    order = sorted(
        range(len(profile.blocks)),
        key=lambda i: (-profile.blocks[i].savings / max(profile.blocks[i].forward_flops, 1), i),
    )
    chosen: list[int] = []
    for index in order:
        if total <= max_bytes:
            break
        if profile.blocks[index].savings > 0:
            chosen.append(index)
            total -= profile.blocks[index].savings
    if total > max_bytes:
        raise ValueError(
            f"max_bytes: {max_bytes:,} is below the {total:,} bytes saved even with every block checkpointed"
        )
    return sorted(chosen), total
