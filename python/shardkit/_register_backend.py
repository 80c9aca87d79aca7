"""Registers the ``shardkit`` torch.distributed backend at ``import shardkit``.

Light on purpose: only the creator imports ``shardkit.comm.backend``, when a
process group is actually made (see that module for what the backend does).
"""

from __future__ import annotations

BACKEND_NAME = "shardkit"


def _create(backend_opts, pg_options):
    from shardkit.comm.backend import create

    return create(backend_opts, pg_options)


def register() -> None:
    """Make ``dist.init_process_group("shardkit")`` available (idempotent)."""
    import torch.distributed as dist

    if not dist.is_available() or BACKEND_NAME.upper() in dist.Backend._plugins:
        return
    # devices=["cpu"]: "shardkit" alone maps CPU; "cpu:shardkit,cuda:nccl" names both.
    dist.Backend.register_backend(BACKEND_NAME, _create, extended_api=True, devices=["cpu"])
