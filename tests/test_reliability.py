"""Failures a long training run meets, reproduced for real: a SIGKILL mid-epoch, a loss that turns
NaN, untrusted configs, and the promise that a seeded run repeats itself.

Covered in tests/test_checkpoint.py and not repeated here: a crash or a full disk while a checkpoint
is written, a checkpoint holding a pickled object, and a checkpoint loaded under another architecture.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from petloc import CONFIG_DIR
from petloc.models.module import PetLocModule
from petloc.sweeps.runs import read_runs
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
    """The environment of a CLI child: ``tests`` importable (for :class:`ResumeProbe`)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


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
    (summary,) = read_runs([run])
    assert [e for e, _ in summary.iou_curve] == list(range(max_epochs))
    assert [v for e, v in summary.iou_curve if e > epoch] == pytest.approx(val_iou)
    assert summary.best_iou == pytest.approx(metrics["val/iou_best"])
    assert summary.per_image is not None
    per_image_mean = sum(summary.per_image.values()) / len(summary.per_image)
    assert per_image_mean == pytest.approx(metrics["val/iou_best"], abs=1e-5)


# ---- 2. a NaN loss: stop with a message, or skip the batch --------------------------------------
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


# ---- 3. configs instantiate only known code -----------------------------------------------------
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


# ---- 4. same seed, same data, CPU: the same run -------------------------------------------------
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
