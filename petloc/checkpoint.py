"""Checkpoint files that are always whole: the old file or the new one, never a torn mix.

Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction that writes the bytes to a
file in the system temporary folder (``$TMPDIR``) and then calls ``shutil.move`` onto the target.
When the temporary folder is on another file system than the run folder (a tmpfs ``/tmp``, a local
scratch disk beside a network home, ...) that move is a *copy into the target path*, which truncates
the previous ``best.ckpt`` first: a process killed during the copy leaves a truncated file and no
previous version. :class:`AtomicCheckpointIO` writes the temporary file beside the target instead
(same directory, so the same file system), syncs it to disk and renames it over the target with
``os.replace``, which POSIX and Windows both perform atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from petloc.processes import process_alive

TMP_SUFFIX = ".tmp"


def _temp_path(path: Path, pid: int) -> Path:
    """The hidden file ``path`` is written to before the rename: ``.best.ckpt.<pid>.tmp``."""
    return path.with_name(f".{path.name}.{pid}{TMP_SUFFIX}")


def remove_orphans(path: Path) -> list[Path]:
    """Delete the temporary files of killed writers of ``path``; returns what was removed.

    A writer killed before its rename leaves its partial ``.NAME.<pid>.tmp`` behind; the pid in the
    name tells whether that writer is gone, so a concurrent writer's file is never taken away.
    """
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2 : -len(TMP_SUFFIX)]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` so that a crash at any instant leaves the previous file intact.

    The bytes go to a temporary file in the target's directory and are fsynced before
    ``os.replace``; the directory is fsynced after it, so the rename itself survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    tmp = _temp_path(path, os.getpid())
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # Windows cannot open a directory to sync it
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (see the module docstring).

    Remote URLs (``s3://``, ...) keep Lightning's fsspec path: object stores publish an upload only
    once it is complete, so they never show a partial file.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        fs, local_path = url_to_fs(str(path))
        if not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for a local path ({path})")
        atomic_torch_save(checkpoint, local_path)
