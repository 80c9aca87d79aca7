"""Argument checks shared by the ops' native kernels.

Native code gets raw pointers, so everything it assumes is checked here first
and reported as TypeError/ValueError naming the argument. Nothing is copied to
make an input acceptable: an in-place update on a silent copy would be lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_tensor(
    t: torch.Tensor,
    name: str,
    *,
    device: torch.device | str,
    dtypes: Sequence[torch.dtype] | None = None,
    numel: int | None = None,
    device_hint: str = "",
) -> None:
    """Dense, contiguous, on ``device``, with an allowed dtype and ``numel`` elements.

    ``device``: a ``torch.device`` (that very device) or a device type such as
    ``"cpu"``; ``device_hint`` is added to the message when the device is wrong.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name}: expected a dense (strided) tensor, got layout {t.layout}")
    if (t.device.type != device) if isinstance(device, str) else (t.device != device):
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {t.device}{device_hint}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name}: expected one of {allowed}, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(
            f"{name}: expected a contiguous tensor, got strides {tuple(t.stride())} for shape {tuple(t.shape)}; "
            "shardkit never copies an input silently (call .contiguous() if the copy is intended)"
        )
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{name}: expected {numel} elements, got {t.numel()}")


def check_list_length(items: Sequence, name: str, expected: int) -> None:
    if len(items) != expected:
        raise ValueError(f"{name}: expected {expected} tensors (one per parameter), got {len(items)}")


def single_dtype(tensors: Sequence[torch.Tensor], name: str) -> torch.dtype:
    """The one dtype shared by all ``tensors`` (a native call handles one dtype)."""
    dtype = tensors[0].dtype
    for i, t in enumerate(tensors):
        if t.dtype != dtype:
            raise TypeError(f"{name}[{i}]: expected {dtype} like {name}[0], got {t.dtype}; group tensors by dtype")
    return dtype


def scalar_flag(t: torch.Tensor | None, name: str, device: torch.device) -> int:
    """Data pointer of an optional one-element fp32 tensor on ``device`` (0 when absent)."""
    if t is None:
        return 0
    check_tensor(t, name, device=device, dtypes=(torch.float32,), numel=1)
    return t.data_ptr()
