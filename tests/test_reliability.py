"""Failures a long training run meets, reproduced for real: a SIGKILL mid-epoch, a crash while a
checkpoint is written, a loss that turns NaN, untrusted checkpoints and configs, and the promise that
a seeded run repeats itself.

Covered elsewhere and not repeated here (tests/test_inference.py): a checkpoint holding a pickled
object is refused without running it (``test_checkpoint_with_pickled_objects_is_refused_unexecuted``)
and a checkpoint loaded under another architecture (``alpha=0.5``, ``head=pooled``) fails naming both
configs (``test_architecture_override_that_does_not_fit_names_both_configs``).
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from petloc import CONFIG_DIR
from petloc.checkpoint import AtomicCheckpointIO, remove_orphans
from petloc.cli.compare import compare_runs
from petloc.models.module import PetLocModule
from petloc.train import train
from tests.conftest import PETLOC_TRAIN, REPO, event_scalars

# CI-sized: 60 synthetic images (48 train, 12 val), 64 px, batches of 8, no loader workers. With an
# EMA of the weights (`callbacks=ema`, off by default), its own state must go through the checkpoints
# too; it starts at once (its default waits 100 steps, longer than these runs), so validation scores
# trained weights.
TINY = (
    "image_size=64",
    "data.synthetic.n=60",
    "data.min_epoch_images=1",
    "data.batch_size=8",
    "trainer.max_time=null",
    "trainer.enable_progress_bar=false",
    "trainer.check_val_every_n_epoch=1",  # the checks below count one validation per epoch
    "callbacks=ema",
    "callbacks.ema.update_starting_at_step=0",
)
SMALL = (*TINY, "data.num_workers=0")


def child_env() -> dict[str, str]:
    """The environment of a CLI child: ``tests`` importable (for :class:`ResumeProbe`), quiet imports."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_ALBUMENTATIONS_UPDATE": "1"}


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def assert_same_state(actual: Any, expected: Any, where: str = "") -> None:
    """Recursive equality of (optimizer, scheduler, model) state: tensors bit for bit."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key in expected:
            assert_same_state(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_state(a, e, f"{where}/{i}")
    else:
        assert actual == expected, where


def all_finite(state: Any) -> Iterator[tuple[str, bool]]:
    """(name, finite?) for every floating-point tensor in a nested state."""
    items = state.items() if isinstance(state, dict) else enumerate(state)
    for key, value in items:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            yield str(key), bool(torch.isfinite(value).all())
        elif isinstance(value, (dict, list, tuple)):
            yield from ((f"{key}/{k}", ok) for k, ok in all_finite(value))


# ---- 1. a run killed mid-epoch resumes from last.ckpt -------------------------------------------
class ResumeProbe(L.Callback):
    """Instrumentation added on the command line (``+callbacks.probe._target_=...``), nothing more.

    At ``on_train_start`` (after Lightning restored a checkpoint) it saves what the trainer holds:
    counters, optimizer and scheduler state, the module's weights. Every training batch appends
    ``{pid, epoch, batch, step}`` to ``batches.jsonl``, which tells the test when to kill and which
    epochs each process ran; ``pause_s`` stretches each batch so a kill lands inside an epoch.
    """

    def __init__(self, out: str, pause_s: float = 0.0) -> None:
        self.out = Path(out)
        self.pause_s = pause_s

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "optimizer": trainer.optimizers[0].state_dict(),
            "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
            "model": pl_module.state_dict(),
        }
        torch.save(state, self.out / f"start-{os.getpid()}.pt")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        line = {
            "pid": os.getpid(),
            "epoch": trainer.current_epoch,
            "batch": batch_idx,
            "step": trainer.global_step,
        }
        with (self.out / "batches.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        time.sleep(self.pause_s)


def batches(probe: Path) -> list[dict[str, int]]:
    """The probe's batch log; a line being written while it is read is skipped."""
    path = probe / "batches.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def epochs_of(log: list[dict[str, int]], pid: int) -> list[int]:
    return sorted({b["epoch"] for b in log if b["pid"] == pid})


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"petloc-train exited ({proc.returncode}) before the kill point:\n{tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"kill point not reached in {timeout} s:\n{tail(log)}")
        time.sleep(0.02)


def checkpoint_callback_state(checkpoint: dict[str, Any], monitor: str) -> dict[str, Any]:
    (state,) = [
        v for k, v in checkpoint["callbacks"].items() if "ModelCheckpoint" in k and v["monitor"] == monitor
    ]
    return state


@pytest.mark.slow
def test_a_killed_run_resumes_where_its_last_checkpoint_left_off(tmp_path: Path, cache_dir: Path) -> None:
    max_epochs = 6
    run, probe = tmp_path / "run", tmp_path / "probe"
    probe.mkdir()
    command = [
        str(PETLOC_TRAIN),
        f"hydra.run.dir={run}",
        f"paths.cache_dir={cache_dir}",
        f"trainer.max_epochs={max_epochs}",
        "ckpt_path=last",  # the same command starts the run and resumes it
        *SMALL,
        "+callbacks.probe._target_=tests.test_reliability.ResumeProbe",
        f"+callbacks.probe.out={probe}",
        "+callbacks.probe.pause_s=0.05",
    ]

    # Kill (SIGKILL: no handler, no clean-up) on the third batch of epoch 2: last.ckpt is then epoch 1's.
    killed_log = tmp_path / "killed.log"
    with killed_log.open("wb") as out:
        killed = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: any(b["epoch"] >= 2 and b["batch"] >= 2 for b in batches(probe)),
                killed,
                killed_log,
                timeout=300,
            )
        finally:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "metrics.json").exists()

    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    epoch, step = last["epoch"], last["global_step"]
    assert epochs_of(batches(probe), killed.pid) == list(range(epoch + 2)), "killed inside epoch+1"
    steps_per_epoch, rest = divmod(step, epoch + 1)
    assert epoch >= 1 and rest == 0 and steps_per_epoch > 0
    best_before = float(last["current_model_state"]["val_iou_best.max_value"])
    assert best_before == pytest.approx(float(checkpoint_callback_state(last, "val/iou")["best_model_score"]))

    resumed_log = tmp_path / "resumed.log"
    with resumed_log.open("wb") as out:
        resumed = subprocess.Popen(
            command, cwd=tmp_path, env=child_env(), stdout=out, stderr=subprocess.STDOUT
        )
        assert resumed.wait(timeout=400) == 0, tail(resumed_log)
    assert "resuming from" in resumed_log.read_text()

    # The trainer restored exactly what last.ckpt holds: counters, optimizer, LR schedule, weights
    # (the live ones; the EMA's are in state_dict), best val/iou so far.
    start = torch.load(probe / f"start-{resumed.pid}.pt", map_location="cpu", weights_only=True)
    assert (start["epoch"], start["global_step"]) == (epoch + 1, step)
    assert start["optimizer"]["state"], "the optimizer was restored with its moments, not fresh"
    assert_same_state(start["optimizer"], last["optimizer_states"][0], "optimizer")
    assert_same_state(start["scheduler"], last["lr_schedulers"][0], "scheduler")
    assert start["scheduler"]["last_epoch"] == step
    assert_same_state(start["model"], last["current_model_state"], "model")

    # Only the unfinished epoch is redone.
    log = batches(probe)
    assert epochs_of(log, resumed.pid) == list(range(epoch + 1, max_epochs))
    assert min(b["step"] for b in log if b["pid"] == resumed.pid) == step

    # The resumed run's TensorBoard steps continue the killed run's, never restarting from 0.
    (events,) = [p for p in (run / "tensorboard").iterdir() if f".{resumed.pid}." in p.name]
    scalars = event_scalars(events)
    assert min(s for series in scalars.values() for s, _ in series) >= step
    assert sorted({int(v) for _, v in scalars["epoch"]}) == list(range(epoch + 1, max_epochs))
    val_iou = [v for _, v in scalars["val/iou"]]
    # Lightning logs an epoch's validation at the step of its last training batch (global_step - 1),
    # in a fresh run as in a resumed one
    expected_steps = [step - 1 + steps_per_epoch * k for k in range(1, max_epochs - epoch)]
    assert [s for s, _ in scalars["val/iou"]] == expected_steps
    # val/iou_best remembers the killed run's best
    best = [v for _, v in scalars["val/iou_best"]]
    for i, value in enumerate(best):
        assert value == pytest.approx(max(best_before, *val_iou[: i + 1]))

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == max_epochs
    assert metrics["global_step"] == steps_per_epoch * max_epochs
    assert metrics["val/iou_best"] == pytest.approx(best[-1])
    final_best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert float(checkpoint_callback_state(final_best, "val/iou")["best_model_score"]) == pytest.approx(
        metrics["val/iou_best"]
    )

    # metrics.csv kept the killed part's rows and continued them: one val/iou per epoch, the resumed
    # run's for the epochs it trained; per_image_val.csv is of the best validation of either part
    (summary,) = compare_runs([run])
    assert [e for e, _ in summary.iou_curve] == list(range(max_epochs))
    assert [v for e, v in summary.iou_curve if e > epoch] == pytest.approx(val_iou)
    assert summary.best_iou == pytest.approx(metrics["val/iou_best"])
    assert summary.per_image is not None
    per_image_mean = sum(summary.per_image.values()) / len(summary.per_image)
    assert per_image_mean == pytest.approx(metrics["val/iou_best"], abs=1e-5)


# ---- 2. a crash while a checkpoint is written never tears it ------------------------------------
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


# ---- 3. a NaN loss: stop with a message, or skip the batch --------------------------------------
def poison_training_batches(monkeypatch: pytest.MonkeyPatch, which: set[int]) -> None:
    """Make the loss NaN on the training batches numbered ``which`` (0-based, counted over the run)."""
    original = PetLocModule._step
    count = iter(range(10**9))

    def step(self: PetLocModule, batch: dict[str, torch.Tensor]) -> Any:
        loss, out, logits = original(self, batch)
        if self.training and next(count) in which:
            loss = loss * float("nan")
        return loss, out, logits

    monkeypatch.setattr(PetLocModule, "_step", step)


NAN_RUN = (*SMALL, "trainer.max_epochs=2")  # 6 training batches per epoch


def test_nan_policy_stop_names_the_step_and_the_way_out(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    poison_training_batches(monkeypatch, {3})
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss \(nan\) at epoch 0, step 3, batch 3\..*nan_policy=skip"
    ):
        train(make_cfg(*NAN_RUN, "nan_policy=stop"))
    assert not (tmp_path / "metrics.json").exists()


def test_nan_policy_skip_finishes_counts_and_keeps_weights_finite(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    poison_training_batches(monkeypatch, {3, 7})
    metrics = train(make_cfg(*NAN_RUN, "nan_policy=skip"))
    assert metrics["epochs"] == 2
    assert metrics["train/skipped_batches"] == 2
    assert all(v == v for v in metrics.values()), metrics  # no NaN reached a metric
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = {k: last[k] for k in ("state_dict", "current_model_state", "optimizer_states")}
    bad = [name for name, ok in all_finite(state) if not ok]
    assert not bad, bad


# ---- 4. configs instantiate only known code -----------------------------------------------------
# A `_target_` names code that Hydra imports and calls: the shipped configs may only name petloc's
# own code and the libraries it is built on. Hydra's own node may also name Hydra's built-in
# launcher/sweeper and the Optuna sampler of the Optuna sweeper. A user can still point a
# `_target_` anywhere on their own command line (the probe above does), which is their explicit choice.
APP_PREFIXES = ("petloc.", "torch.", "lightning.", "albumentations.", "hydra_plugins.")
HYDRA_PREFIXES = (*APP_PREFIXES, "hydra._internal.core_plugins.", "optuna.samplers.")
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
GROUP_OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONFIG_DIR / g).glob("*.yaml"))]
LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm")


def targets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, raw value) of every ``_target_`` in a config made a container with resolve=False."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield where or "<root>", value
            else:
                yield from targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from targets(value, f"{where}[{i}]")


def disallowed(cfg: DictConfig) -> list[str]:
    """``key: target`` of every ``_target_`` that is not a literal name under an allowed prefix."""
    bad = []
    for where, target in targets(OmegaConf.to_container(cfg, resolve=False)):
        prefixes = HYDRA_PREFIXES if where == "hydra" or where.startswith("hydra.") else APP_PREFIXES
        if not (isinstance(target, str) and target.startswith(prefixes)):
            bad.append(f"{where}: {target!r}")
    return bad


def compose_all(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def test_the_walker_finds_nested_and_listed_targets() -> None:
    cfg = OmegaConf.create(
        {"a": {"_target_": "petloc.x"}, "b": [{"_target_": "os.system"}], "c": {"_target_": "${a._target_}"}}
    )
    assert disallowed(cfg) == ["b[0]: 'os.system'", "c: '${a._target_}'"]


@pytest.mark.parametrize("config_name", ["train", "eval", "predict", "export"])
def test_primary_configs_name_only_allowed_targets(config_name: str) -> None:
    cfg = compose_all(config_name, [])
    assert list(targets(OmegaConf.to_container(cfg, resolve=False)))
    assert not disallowed(cfg)


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_names_only_allowed_targets(group: str, option: str) -> None:
    assert not disallowed(compose_all("train", [f"{group}={option}"]))


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_names_only_allowed_targets(launcher: str) -> None:
    cfg = compose_all("train", [f"hydra/launcher={launcher}"])
    assert any(where == "hydra.launcher" for where, _ in targets(OmegaConf.to_container(cfg, resolve=False)))
    assert not disallowed(cfg)


# ---- 5. same seed, same data, CPU: the same run -------------------------------------------------
def seeded_run(output: Path, cache_dir: Path) -> dict[str, list[tuple[int, float]]]:
    overrides = [
        f"paths.output_dir={output}",
        f"paths.cache_dir={cache_dir}",
        *TINY,
        "data.num_workers=1",  # augmentation in a worker process: its seeding is part of the promise
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        train(compose("train", overrides=overrides))
    return event_scalars(output / "tensorboard")


def test_same_seed_same_data_gives_the_same_run(tmp_path: Path, cache_dir: Path) -> None:
    first = seeded_run(tmp_path / "a", cache_dir)
    second = seeded_run(tmp_path / "b", cache_dir)
    assert len(first["val/iou"]) == 2
    for tag in ("val/iou", "val/loss", "train/loss", "lr"):
        assert first[tag] == second[tag], tag  # bit for bit, not approximately
    weights = [
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for run in ("a", "b")
    ]
    assert_same_state(weights[0]["current_model_state"], weights[1]["current_model_state"], "weights")
