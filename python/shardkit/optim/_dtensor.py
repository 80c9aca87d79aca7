"""DTensor parameters in the fused optimizers (torch FSDP2, tensor parallel).

The fused update is elementwise, so a DTensor parameter whose placements are
``Shard`` or ``Replicate`` is updated by running the native kernel on its
local shard: no communication and no full tensor. Its optimizer state
(moments, fp32 master) is kept as DTensors with the parameter's mesh and
placements, as torch.optim does, so ``torch.distributed.checkpoint`` saves
and reshards it; the ``step`` count stays a plain 0-dim fp32 tensor, as in
torch.optim (a scalar has no shard; DCP saves it as replicated).

What cannot be updated locally is refused with a ValueError naming the
parameter: a ``Partial`` parameter (its local value is not its value), and
parameters of one group on unrelated meshes. Meshes that are sub-meshes of one
root count as one: FSDP2 x TP puts a non-TP parameter on the data-parallel
sub-mesh and a TP parameter on the 2-D mesh, and both belong in one group.

A gradient whose placements differ from its parameter's (the ``Partial``
gradient of a sequence-parallel norm weight) is redistributed to the
parameter's placements first. That is the gradient's reduction across the
TP group, which torch.optim performs implicitly too; skipping it lets the
replicated copies drift apart.
"""

from __future__ import annotations

import torch

try:
    from torch.distributed.tensor import DTensor, Partial, distribute_tensor
except ImportError:  # torch built without distributed: no parameter can be a DTensor
    DTensor = None


def is_dtensor(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor the native kernel updates: a DTensor's local shard, or ``t`` itself."""
    return t._local_tensor if is_dtensor(t) else t


def _root(mesh):
    return mesh._get_root_mesh() if hasattr(mesh, "_get_root_mesh") else mesh


def describe(p: torch.Tensor) -> str:
    return f"DTensor on mesh {p.device_mesh} with placements {tuple(p.placements)}"


def check_param(p: torch.Tensor, where: str, group_mesh):
    """Checks a DTensor parameter; returns the root mesh the group is on (``group_mesh`` or p's)."""
    for placement in p.placements:
        if isinstance(placement, Partial):
            raise ValueError(
                f"{where}: placement {placement} of a {describe(p)} cannot be updated locally "
                "(a Partial tensor's local value is not its value); redistribute the parameter to "
                "Shard or Replicate placements"
            )
    root = _root(p.device_mesh)
    if group_mesh is not None and root != group_mesh:
        raise ValueError(
            f"{where}: a {describe(p)} is on another mesh than the group's earlier DTensor parameters "
            f"(root mesh {group_mesh}); put parameters of unrelated meshes in separate optimizers"
        )
    return root


def grad_matching(p: torch.Tensor, g: torch.Tensor, where: str) -> torch.Tensor:
    """``g`` with ``p``'s placements (reduced if it is Partial), checked to be a DTensor like ``p``."""
    if not is_dtensor(g):
        raise ValueError(f"{where}.grad: expected a DTensor gradient for a {describe(p)}, got a plain Tensor")
    if g.device_mesh != p.device_mesh:
        raise ValueError(f"{where}.grad: expected a gradient on mesh {p.device_mesh}, got one on {g.device_mesh}")
    if tuple(g.placements) != tuple(p.placements):
        g = g.redistribute(p.device_mesh, p.placements)
    return g


def fp32_zeros_like(p: torch.Tensor) -> torch.Tensor:
    """fp32 zeros with ``p``'s mesh, placements and global shape, allocated shard by shard."""
    shard = torch.zeros(p._local_tensor.shape, dtype=torch.float32, device=p._local_tensor.device)
    return DTensor.from_local(shard, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())


def fp32_copy(p: torch.Tensor) -> torch.Tensor:
    """An fp32 copy of ``p`` with its layout: a master weight, computed shard by shard."""
    shard = p._local_tensor.detach().to(torch.float32, copy=True)
    return DTensor.from_local(shard, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())


def loaded_state(p: torch.Tensor, value: torch.Tensor, where: str) -> torch.Tensor:
    """A saved state tensor for the DTensor parameter ``p``, as an fp32 DTensor laid out like ``p``.

    A DTensor value must have ``p``'s mesh, placements and global shape (DCP
    reshards a checkpoint to the loading layout before it gets here). A plain
    tensor of ``p``'s global shape, e.g. a full state dict or a
    single-process torch.optim state, is sliced to the local shard without
    communication. Anything else raises a ValueError naming the placements.
    """
    if is_dtensor(value):
        if value.device_mesh != p.device_mesh or tuple(value.placements) != tuple(p.placements):
            raise ValueError(
                f"{where}: a DTensor on mesh {value.device_mesh} with placements {tuple(value.placements)} "
                f"does not fit the parameter, a {describe(p)}; load it through "
                "torch.distributed.checkpoint.state_dict.set_optimizer_state_dict, which reshards"
            )
        if value.shape != p.shape:
            raise ValueError(f"{where}: expected global shape {tuple(p.shape)}, got {tuple(value.shape)}")
        shard = value._local_tensor.detach().to(device=p._local_tensor.device, dtype=torch.float32, copy=True)
        return DTensor.from_local(shard.contiguous(), p.device_mesh, p.placements, run_check=False,
                                  shape=p.shape, stride=p.stride())
    if value.shape != p.shape:
        raise ValueError(
            f"{where}: a plain tensor of shape {tuple(value.shape)} does not fit the parameter, a {describe(p)} "
            f"of global shape {tuple(p.shape)} (a full tensor is sliced locally; a shard must come as a DTensor)"
        )
    full = value.detach().to(device=p._local_tensor.device, dtype=torch.float32)
    # src_data_rank=None: every rank slices its own copy, no communication.
    shard = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)._local_tensor
    # A clone: the slice is a view that would alias the caller's tensor and keep all of it alive.
    return DTensor.from_local(shard.clone(memory_format=torch.contiguous_format), p.device_mesh, p.placements, run_check=False,
                              shape=p.shape, stride=p.stride())
