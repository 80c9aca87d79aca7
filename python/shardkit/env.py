"""``python -m shardkit.env``: what this installation can do, and why not."""

from __future__ import annotations

import platform

import torch

from shardkit import _native


def report() -> list[str]:
    """Lines describing the native build, CPU kernels, CUDA and NCCL."""
    import shardkit

    lines = [f"shardkit {shardkit.__version__}, torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}"]
    if _native.HAS_NATIVE:
        c = _native.C
        features = ", ".join(c.features)
        lines.append(f"native core   : on (shardkit._C: {features})")
        if hasattr(c, "cpu_isa_available"):
            isas = [isa for isa in ("avx512", "avx2", "scalar") if c.cpu_isa_available(isa)]
            lines.append(f"cpu kernels   : {c.get_cpu_isa()} selected; this CPU supports {', '.join(isas)} (SHARDKIT_CPU_ISA overrides)")
    else:
        lines.append(f"native core   : off ({_native.NATIVE_REASON}); plain-torch reference kernels are used")
    if _native.HAS_CUDA_KERNELS:
        lines.append(f"cuda kernels  : on ({torch.cuda.get_device_name()})")
    else:
        lines.append(f"cuda kernels  : off ({_native.CUDA_REASON})")
    lines.append("nccl          : on" if _native.HAS_NCCL else f"nccl          : off ({_native.NCCL_REASON})")
    pool = _native.C.thread_pool() if _native.HAS_NATIVE and hasattr(_native.C, "thread_pool") else "none"
    where = {"openmp": "on torch's OpenMP threads", "own": "on shardkit's own pool (no OpenMP runtime found)"}
    lines.append(f"threads       : {torch.get_num_threads()} (torch.get_num_threads()); native kernels run "
                 f"{where.get(pool, 'serially')}")
    return lines


def main() -> None:
    print("\n".join(report()))


if __name__ == "__main__":
    main()
