"""Test helpers shared by the test suites: multi-process runs on one machine.

``spawn(fn, world_size)`` starts ``world_size`` processes with a
``torch.distributed`` group already joined and returns what each returned.
"""

from shardkit.testing.spawn import ChildError, spawn

__all__ = ["spawn", "ChildError"]
