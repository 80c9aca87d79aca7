"""The one atomic writer: every file and checkpoint directory shardkit writes goes through here.

A file is written to a temp file in its own directory, fsynced, renamed over
the target and the directory fsynced, so a reader (or a crash) sees the old
file or the new one, never a half-written one::

    write_atomic("out/model.safetensors", lambda tmp: save_file(tensors, tmp))
    write_json("out/state.json", {"step": 3})

A directory (a checkpoint) is built under ``staging_dir(final)`` and put in
place by ``replace_dir``: the old copy is renamed aside to ``.old-<name>``,
the new one renamed in, the parent fsynced, and only then is the old copy
deleted. A crash between the two renames leaves only ``.old-<name>``;
``recover_dir`` (which readers call first, and ``replace_dir`` too) renames
it back, so the last complete copy is never lost.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_STAGING, _OLD = ".tmp-", ".old-"


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the renames and creations inside ``directory`` durable (a rename is only in the directory's data)."""
    fd = os.open(os.fspath(directory), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill(tmp: str, data: bytes | Callable[[str], Any]) -> None:
    """The write step: ``data`` into the temp file (bytes, or a function that writes to the path it gets)."""
    if callable(data):
        data(tmp)
    else:
        with open(tmp, "wb") as f:
            f.write(data)


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[str], Any]) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns ``path``.

    ``data`` is the bytes, or a function ``write(tmp_path)`` for writers that
    take a path (safetensors, matplotlib). The temp file lies in the same
    directory (a rename across file systems is not atomic) and is removed if
    the write fails.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) and not callable(data):
        raise TypeError(f"data: expected bytes or a function of the temp path, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _fill(tmp, data)
        # The data must be on disk before the rename makes it visible under the final name.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``write_atomic`` of ``text`` in UTF-8."""
    return write_atomic(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, **dumps_kwargs) -> Path:
    """``write_atomic`` of ``json.dumps(value, **dumps_kwargs)`` and a newline, in UTF-8."""
    return write_text(path, json.dumps(value, **dumps_kwargs) + "\n")


# ---- directories ------------------------------------------------------------


def staging_dir(final: str | os.PathLike) -> Path:
    """A fresh, empty ``.tmp-<name>`` beside ``final`` to build its next copy in.

    The name is fixed, so the next save removes what a crashed one left.
    """
    final = Path(final).absolute()
    staging = final.parent / f"{_STAGING}{final.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def recover_dir(final: str | os.PathLike) -> bool:
    """Finish a ``replace_dir`` that a crash interrupted; True if ``final`` exists afterwards.

    Only ``.old-<name>``: the crash came between the two renames; it is the
    last complete copy and is renamed back. Both: the new copy was in place,
    the old one is deleted. Safe to call from several processes at once.
    """
    final = Path(final).absolute()
    old = final.parent / f"{_OLD}{final.name}"
    if old.exists():
        if not final.exists():
            try:
                os.replace(old, final)
                fsync_dir(final.parent)
            except FileNotFoundError:
                pass  # another process renamed it back first
        else:
            shutil.rmtree(old, ignore_errors=True)
    return final.exists()


def replace_dir(staged: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put the complete directory ``staged`` in place of ``final``; the old copy goes only once the new is in.

    Every file in ``staged`` must already be durable (written by
    ``write_atomic``). At any crash point ``final`` or ``.old-<name>`` holds
    a complete copy; ``recover_dir`` puts it back under ``final``.
    """
    staged, final = Path(staged).absolute(), Path(final).absolute()
    if not staged.is_dir():
        raise FileNotFoundError(f"staged: {str(staged)!r} is not a directory")
    old = final.parent / f"{_OLD}{final.name}"
    recover_dir(final)  # a previous crash's leftovers: final is whole again, no .old- remains
    fsync_dir(staged)
    if final.exists():
        os.replace(final, old)
    os.replace(staged, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def sweep(parent: str | os.PathLike, pattern: str) -> None:
    """Recover or delete what crashed saves left in ``parent`` for directories named like ``pattern``.

    ``.old-<name>`` copies are recovered (``recover_dir``) and ``.tmp-<name>``
    staging directories, never complete, are deleted. Call it before a save,
    from the one process that saves.
    """
    parent = Path(parent)
    for old in parent.glob(f"{_OLD}{pattern}"):
        recover_dir(parent / old.name[len(_OLD):])
    for staging in parent.glob(f"{_STAGING}{pattern}"):
        shutil.rmtree(staging, ignore_errors=True)
