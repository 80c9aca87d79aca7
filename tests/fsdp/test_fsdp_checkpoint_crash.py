"""Sharded checkpoints survive a crash of any rank at any file write or rename of a save.

A checkpoint exists and the same directory is saved again with other
values. Each crash point ends one rank's process (``os._exit``: no cleanup
runs); the spawn helper then kills the others, as a launcher would. The
directory must hold a whole copy, old or new and never a mix (under its name,
or as ``.old-<name>`` when the crash came between the two renames), load
with every rank, and the next save must leave nothing else behind.
"""

import os
import shutil

import pytest

from shardkit.testing import spawn
from shardkit.testing.spawn import ChildError

import fsdp_cases

pytestmark = [pytest.mark.native, pytest.mark.distributed]


def _files(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


@pytest.mark.parametrize("world", [1, 2])
def test_a_crash_at_any_write_or_rename_leaves_a_loadable_checkpoint(tmp_path, world):
    pristine = tmp_path / "pristine"
    spawn(fsdp_cases.run_sharded_resave, world, args=(str(pristine / "ckpt"), 20), timeout=120)
    old = _files(pristine / "ckpt")
    shutil.copytree(pristine, tmp_path / "counted")
    calls = spawn(fsdp_cases.run_sharded_resave, world, args=(str(tmp_path / "counted" / "ckpt"), 21), timeout=120)
    new = _files(tmp_path / "counted" / "ckpt")
    assert new != old and sorted(new) == sorted(old)
    # Each rank writes and renames its shard; rank 0 also empties the staging directory, writes the
    # layout and moves the directories.
    assert [len(steps) for steps in calls] == [8] + [2] * (world - 1)
    assert calls[0][-3:] == ["rename ckpt -> .old-ckpt", "rename .tmp-ckpt -> ckpt", "delete .old-ckpt"]

    outcomes = set()
    for rank, steps in enumerate(calls):
        for k, step in enumerate(steps, start=1):
            work = tmp_path / f"rank{rank}-step{k}"
            shutil.copytree(pristine, work)
            with pytest.raises(ChildError, match=rf"rank {rank}\b[^;]* died"):
                spawn(fsdp_cases.run_sharded_resave, world, args=(str(work / "ckpt"), 21, rank, k), timeout=120)
            whole = work / "ckpt" if (work / "ckpt").exists() else work / ".old-ckpt"
            left = _files(whole)
            assert left in (old, new), f"rank {rank} crashed at {step!r}: the checkpoint is a mix or damaged"
            outcomes.add((whole.name, left == new))
            spawn(fsdp_cases.run_load_then_save, world, args=(str(work / "ckpt"), 5), timeout=120)
            assert os.listdir(work) == ["ckpt"], f"rank {rank} crashed at {step!r}: leftovers {os.listdir(work)}"
            # What was loaded is what was saved again, byte for byte.
            assert _files(work / "ckpt") == left, f"rank {rank} crashed at {step!r}: the load differs"
    # Every state a crash can leave was met: the old copy in place, aside, and the new one in place.
    assert outcomes == {("ckpt", False), (".old-ckpt", False), ("ckpt", True)}
