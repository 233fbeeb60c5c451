"""Checkpoint files: written whole, read safely, and turned back into the trained module.

Reading (:func:`read_checkpoint`, :func:`load_model`): ``petloc-eval``, ``petloc-predict``,
``petloc-export`` and ``init_from`` all start here. A checkpoint is loaded with
``torch.load(weights_only=True)`` (tensors and plain values only: nothing in it runs), and the network
is rebuilt from the resolved config it stores (``petloc_config``), never from pickled objects; when
the weights do not fit the (overridden) config, the error names both.

Writing: files that are always whole, the old file or the new one, never a torn mix.

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
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from petloc.config import describe_model, merge_config
from petloc.models.module import PetLocModule
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


# ---- reading ---------------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """The file cannot be used as a petloc checkpoint; the message says why."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model built from the (overridden) config."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: tensors and plain values only, no code runs.

    Lightning checkpoints of petloc hold nothing else (the module saves plain hyper-parameters and
    the resolved config), so a file that needs the full unpickler is refused rather than trusted.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # what torch.save (and so Lightning) writes
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (not a torch.save zip archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is mostly advice to turn the protection off; keep only what was refused.
        reason = str(exc).partition("WeightsUnpickler error:")[2].strip().split(". ")[0]
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values; refusing to unpickle it "
            f"(torch.load weights_only=True): {reason}"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc


def config_from_checkpoint(checkpoint: dict[str, Any]) -> DictConfig:
    """The resolved training config stored in a petloc checkpoint."""
    if "petloc_config" not in checkpoint or not checkpoint["petloc_config"]:
        raise ValueError("not a petloc checkpoint: it holds no 'petloc_config' (train with petloc-train)")
    return OmegaConf.create(checkpoint["petloc_config"])


def load_model(path: str | Path, overrides: DictConfig | None = None) -> tuple[PetLocModule, DictConfig]:
    """Rebuild the trained module from a checkpoint, in eval mode on the CPU; returns it and its config.

    ``overrides`` is the composed config of petloc-eval/-predict/-export (see
    :func:`petloc.config.merge_config`). The class names come from the checkpoint's hyper-parameters,
    so a class-aware model rebuilds (and names its classes) without the folder it was trained on.
    """
    checkpoint = read_checkpoint(path)
    trained = config_from_checkpoint(checkpoint)
    cfg = merge_config(trained, overrides)
    module = PetLocModule(cfg, checkpoint.get("hyper_parameters", {}).get("class_names"))
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        detail = "\n    ".join(str(exc).strip().splitlines()[:4])
        raise CheckpointMismatchError(
            f"{path}: the checkpoint's weights do not fit the model built from the config.\n"
            f"  checkpoint: {describe_model(trained)}\n"
            f"  requested:  {describe_model(cfg)}\n"
            "Drop the command-line overrides that change the architecture (alpha, backbone, head).\n"
            f"  PyTorch says: {detail}"
        ) from exc
    return module.eval(), cfg
