"""Test helpers shared by the test suites (and by users testing code built on shardkit).

``spawn(fn, world_size)`` starts ``world_size`` processes with a
``torch.distributed`` group already joined and returns what each returned;
``optim_inputs.make_adam_inputs`` builds inputs for the fused optimizer ops.
"""

from shardkit.testing.spawn import ChildError, spawn

__all__ = ["spawn", "ChildError"]
