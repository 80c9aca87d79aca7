"""Crash injection for the tests of atomic saves: fail the k-th file write, rename or deletion.

::

    with CrashAt(None) as probe:      # count the steps of a save that succeeds
        save()
    for k in range(1, len(probe.calls) + 1):
        with CrashAt(k), pytest.raises(Crash):
            save()
        ...                          # the directory must still load

The counted steps are the write step of ``shardkit.atomic`` (every file
shardkit writes goes through it), every ``os.replace`` / ``os.rename``, and
every ``shutil.rmtree`` (the crash comes before the deletion).
``hard=True`` ends the process with ``os._exit`` instead of raising, so no
``except``/``finally`` runs: what a SIGKILL or a power cut leaves.
"""

from __future__ import annotations

import os
import shutil

from shardkit import atomic


class Crash(BaseException):
    """The injected failure (a BaseException, as KeyboardInterrupt: nothing may swallow it)."""


class CrashAt:
    """Context manager: counts the writes, renames and deletions; the ``k``-th one (1-based) crashes, None: none does."""

    EXIT_CODE = 77

    def __init__(self, k: int | None, *, hard: bool = False) -> None:
        if k is not None and (not isinstance(k, int) or k < 1):
            raise ValueError(f"k: expected None or an int >= 1, got {k!r}")
        self.k, self.hard = k, hard
        self.calls: list[str] = []  # "write <name>", "rename <src> -> <dst>", "delete <name>", in order

    def _step(self, what: str) -> None:
        self.calls.append(what)
        if self.k is not None and len(self.calls) == self.k:
            if self.hard:
                os._exit(self.EXIT_CODE)
            raise Crash(f"injected crash at step {self.k}: {what}")

    def __enter__(self) -> CrashAt:
        self._saved = (atomic._fill, os.replace, os.rename, shutil.rmtree)
        fill, replace, rename, rmtree = self._saved

        def counted_fill(tmp, data):
            self._step(f"write {os.path.basename(tmp)}")
            return fill(tmp, data)

        def counted_replace(src, dst, **kwargs):
            self._step(f"rename {os.path.basename(src)} -> {os.path.basename(dst)}")
            return replace(src, dst, **kwargs)

        def counted_rename(src, dst, **kwargs):
            self._step(f"rename {os.path.basename(src)} -> {os.path.basename(dst)}")
            return rename(src, dst, **kwargs)

        def counted_rmtree(path, *args, **kwargs):
            self._step(f"delete {os.path.basename(os.fspath(path))}")
            return rmtree(path, *args, **kwargs)

        atomic._fill, os.replace, os.rename, shutil.rmtree = counted_fill, counted_replace, counted_rename, counted_rmtree
        return self

    def __exit__(self, *exc) -> None:
        atomic._fill, os.replace, os.rename, shutil.rmtree = self._saved
