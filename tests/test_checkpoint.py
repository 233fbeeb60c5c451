"""petloc.checkpoint: checkpoint files written whole (a kill or a full disk mid-save leaves the
previous file), read safely (nothing in them runs) and rebuilt into the trained module, with clear
errors for files that are not petloc checkpoints or do not fit the requested architecture.

Most tests read the session's ``trained_run`` (tests/conftest.py), shared with the CLI tests.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from petloc.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointMismatchError,
    load_model,
    read_checkpoint,
    remove_orphans,
)
from tests.helpers import TrainedRun, make_module, make_samples

# ---- reading: safe, and rebuilt from the stored config ------------------------------------------


def test_load_model_restores_the_trained_weights(trained_run: TrainedRun) -> None:
    module, cfg = load_model(trained_run.best)
    stored = torch.load(trained_run.best, map_location="cpu", weights_only=True)["state_dict"]
    restored = module.state_dict()
    assert restored.keys() == stored.keys()
    for key, value in stored.items():
        assert torch.equal(restored[key], value), key
    assert not module.training
    assert cfg.image_size == 64 and cfg.mode.name == "species"
    assert module.classifier is not None and module.classifier.out_features == 2


def _rewrite_checkpoint(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


def test_pretrained_backbone_is_never_downloaded(trained_run: TrainedRun, tmp_path: Path) -> None:
    """A checkpoint trained from ImageNet weights rebuilds offline: the weights are in the checkpoint."""

    def mark_pretrained(checkpoint: dict) -> None:
        checkpoint["petloc_config"]["backbone"].update(
            pretrained=True, weights_file="/nonexistent.safetensors"
        )

    path = _rewrite_checkpoint(trained_run.best, tmp_path / "pretrained.ckpt", mark_pretrained)
    module, cfg = load_model(path)
    assert cfg.backbone.pretrained is False and cfg.backbone.weights_file is None
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(module.state_dict()["head.pred.weight"], stored["head.pred.weight"])


def test_architecture_override_that_does_not_fit_names_both_configs(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(f"ckpt_path={trained_run.best}", "alpha=0.5", config_name="eval")
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(trained_run.best, cfg)
    message = str(info.value)
    assert "checkpoint: backbone=mobilenetv1 alpha=0.25 head=CenterHead" in message
    assert "requested:  backbone=mobilenetv1 alpha=0.5 head=CenterHead" in message
    assert "size mismatch" in message


def test_head_group_override_that_does_not_fit_names_both_heads(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(f"ckpt_path={trained_run.best}", "head=pooled", config_name="predict")
    with pytest.raises(CheckpointMismatchError, match=r"(?s)head=CenterHead.*head=PooledHead"):
        load_model(trained_run.best, cfg)


class _Payload:
    """Unpickling this would create ``marker``: what a malicious checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_objects_is_refused_unexecuted(
    trained_run: TrainedRun, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    path = _rewrite_checkpoint(
        trained_run.best, tmp_path / "evil.ckpt", lambda ckpt: ckpt.update(extra=_Payload(marker))
    )
    with pytest.raises(CheckpointError, match=r"refusing to unpickle.*Unsupported global"):
        read_checkpoint(path)
    assert not marker.exists()


def test_non_petloc_and_missing_checkpoints_are_clear_errors(trained_run: TrainedRun, tmp_path: Path) -> None:
    path = _rewrite_checkpoint(
        trained_run.best, tmp_path / "plain.ckpt", lambda ckpt: ckpt.pop("petloc_config")
    )
    with pytest.raises(ValueError, match="not a petloc checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "text.ckpt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("notes.txt", "a zip archive, but not one torch.save wrote")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "other.zip")


def test_the_checkpoint_carries_the_class_names(trained_run: TrainedRun, tmp_path: Path) -> None:
    module, _ = load_model(trained_run.best)
    assert module.class_names == ["cat", "dog"]  # species mode on the synthetic set
    assert read_checkpoint(trained_run.best)["hyper_parameters"] == {"class_names": ["cat", "dog"]}
    # they come from the checkpoint, not the dataset: a model rebuilds where its data is gone
    gone = OmegaConf.create({"data": {"root": str(tmp_path / "gone")}})
    assert load_model(trained_run.best, gone)[0].class_names == ["cat", "dog"]


def test_a_checkpoint_of_a_module_fitted_outside_petloc_train_loads(tmp_path: Path) -> None:
    """The config is part of a PetLocModule's construction, so a module fitted by a Trainer of one's
    own (not petloc.train) saves a checkpoint that eval, predict and export rebuild."""
    module = make_module("center", mode="species", num_classes=2)
    samples = make_samples(4, seed=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(samples, batch_size=4)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    trainer.save_checkpoint(tmp_path / "own.ckpt")

    loaded, cfg = load_model(tmp_path / "own.ckpt")
    assert loaded.class_names == ["class_0", "class_1"] and cfg.head._target_.endswith("CenterHead")
    stored = module.state_dict()
    assert loaded.state_dict().keys() == stored.keys()
    for key, value in stored.items():
        assert torch.equal(loaded.state_dict()[key], value), key


# ---- writing: a crash while a checkpoint is written never tears it -----------------------------
# Saves version 1, waits for a line on stdin, saves version 2 (NUMEL float32 values of the version).
# A slow disk: both ways bytes reach a checkpoint file (torch.save into an open file, and the
# sendfile copy that shutil.move falls back to across file systems) go in 2 MiB pieces, 50 ms apart,
# so a save lasts over a second and the kill, however the test process is scheduled, lands inside it.
WRITER = textwrap.dedent(
    """
    import io
    import os
    import sys
    import time

    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO
    from petloc.checkpoint import AtomicCheckpointIO

    CHUNK = 2 * 2**20
    real_save, real_sendfile = torch.save, os.sendfile

    def slow_save(obj, f, *args, **kwargs):
        if isinstance(f, io.BytesIO):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        for i in range(0, len(data), CHUNK):
            f.write(data[i : i + CHUNK])
            f.flush()
            time.sleep(0.05)

    def slow_sendfile(out_fd, in_fd, offset, count):
        time.sleep(0.05)
        return real_sendfile(out_fd, in_fd, offset, min(count, CHUNK))

    torch.save, os.sendfile = slow_save, slow_sendfile
    checkpoint_io = {"lightning": TorchCheckpointIO, "petloc": AtomicCheckpointIO}[sys.argv[1]]()
    target, numel = sys.argv[2], int(sys.argv[3])
    for version in (1, 2):
        checkpoint = {"version": version, "state_dict": {"w": torch.full((numel,), float(version))}}
        checkpoint_io.save_checkpoint(checkpoint, target)
        print("saved", version, flush=True)
        sys.stdin.readline()
    """
)


NUMEL = 16 * 2**20  # 64 MiB


def other_filesystem(path: Path) -> Path | None:
    """A writable folder on another file system than ``path`` (a tmpfs), or None."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(path).st_dev:
        return shm
    return None


def sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, size) of every file in ``folder`` (a file vanishing while listed is left out)."""
    out = {}
    for entry in os.scandir(folder):
        try:
            out[entry.name] = (entry.inode(), entry.stat().st_size)
        except FileNotFoundError:
            continue
    return out


def kill_during_second_save(kind: str, target: Path, tmpdir: Path) -> str:
    """Run WRITER; SIGKILL it once its second save has written part of a file in the target's
    folder (the target itself, or a new file beside it); returns its stdout after the first save."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, kind, str(target), str(NUMEL)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "saved 1"
        before = sizes(target.parent)
        full = before[target.name][1]
        proc.stdin.write("\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(v != before.get(k) and 0 < v[1] < full for k, v in sizes(target.parent).items()):
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the writer finished before a partial file was seen"
    return proc.stdout.read()


@pytest.fixture
def scratch_tmpdir(tmp_path: Path) -> Iterator[Path]:
    """$TMPDIR for the writer: on another file system when the machine has one (as /tmp on tmpfs is)."""
    other = other_filesystem(tmp_path)
    folder = Path(other, f"petloc-test-{os.getpid()}") if other else tmp_path / "tmpdir"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_kill_while_saving_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, scratch_tmpdir: Path
) -> None:
    target = tmp_path / "checkpoints" / "best.ckpt"
    out = kill_during_second_save("petloc", target, scratch_tmpdir)
    assert "saved 2" not in out

    # the kill hit the second save half-way: its bytes are in a partial file beside the target...
    (partial,) = [p for p in target.parent.iterdir() if p != target]
    full = target.stat().st_size
    assert 0 < partial.stat().st_size < full
    # ...and the target is still the first version, whole, and loads safely
    checkpoint = torch.load(target, map_location="cpu", weights_only=True)
    assert checkpoint["version"] == 1
    assert torch.equal(checkpoint["state_dict"]["w"], torch.ones(NUMEL))
    assert remove_orphans(target) == [partial]  # the dead writer's file goes at the next save
    assert list(target.parent.iterdir()) == [target]


@pytest.mark.slow
def test_lightnings_own_save_tears_the_checkpoint_when_tmpdir_is_elsewhere(tmp_path: Path) -> None:
    """Why petloc.checkpoint exists (and proof that the kill above lands inside a save): Lightning's
    fsspec transaction copies from $TMPDIR into the target when they are on different file systems."""
    other = other_filesystem(tmp_path)
    if other is None:
        pytest.skip("no second file system (tmpfs /dev/shm) to put $TMPDIR on")
    tmpdir = Path(other, f"petloc-test-{os.getpid()}")
    tmpdir.mkdir()
    try:
        target = tmp_path / "best.ckpt"
        kill_during_second_save("lightning", target, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    with pytest.raises((RuntimeError, EOFError, pickle.UnpicklingError)):
        torch.load(target, map_location="cpu", weights_only=True)


def test_a_failed_write_keeps_the_previous_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "best.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint({"version": 1}, target)
    real_save = torch.save

    def disk_full_half_way(obj: Any, f: io.BufferedWriter) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full_half_way)
    with pytest.raises(OSError, match="No space left"):
        checkpoint_io.save_checkpoint({"version": 2, "w": torch.zeros(1000)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"version": 1}
    assert list(tmp_path.iterdir()) == [target]


def test_orphans_of_live_writers_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = tmp_path / f".last.ckpt.{os.getppid()}.tmp"
    orphan = tmp_path / f".last.ckpt.{dead.pid}.tmp"
    other = tmp_path / f".best.ckpt.{dead.pid}.tmp"
    for path in (live, orphan, other):
        path.write_bytes(b"partial")
    assert remove_orphans(target) == [orphan]
    assert live.exists() and other.exists()


@pytest.mark.parametrize("trainer", ["default", "ddp_cpu"])
def test_training_saves_checkpoints_atomically(trainer: str, make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg(f"trainer={trainer}")
    built = instantiate(cfg.trainer, callbacks=[], logger=False)
    assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)
