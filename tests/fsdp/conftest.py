"""Puts this directory on sys.path, so the spawned ranks can import the shared
rank-side helpers (fsdp_cases) whatever pytest's import mode.

It also starts the spawn helper's fork server with ``torch._dynamo`` preloaded
when this directory's tests are the first to spawn: every rank builds an
optimizer, and torch.optim imports torch._dynamo on first use, seconds per
fresh process on this machine, which would dominate these tests.
"""

import multiprocessing as mp
import multiprocessing.forkserver
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

_ctx = mp.get_context("forkserver")
_ctx.set_forkserver_preload(["torch", "torch.distributed", "torch._dynamo", "shardkit"])
multiprocessing.forkserver.ensure_running()
