"""Helpers for the tests of sweeps and their reports: a fake sweep folder written the way Lightning's
TensorBoard logger writes one (``FakeRun``, ``write_run``, ``write_fake_sweep``, ``SWEEP``), run folders
written with the standard library the way petloc-train writes them (``CsvRun``, ``write_csv_run``:
``metrics.csv``, ``per_image_val.csv``, ``.hydra/``; a seeded sweep of them with planted differences,
``write_seeded_sweep``), real sweeps of ``petloc-train -m`` in a subprocess (``petloc_train``,
``job_dirs``, ``metrics_of``), and a client of the real TensorBoard server over any logdir, e.g. a real
training sweep (``tensorboard_server``, ``tensorboard_run_names``, ``wait_for_scalar_tags``,
``hparams_sessions``)."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from petloc.sweeps.runs import find_runs

T = TypeVar("T")

# ---- a fake sweep ------------------------------------------------------------------------------------

STEPS_PER_EPOCH = 10
T0 = 1_700_000_000.0  # wall times are explicit so train-time fallbacks are exact
COMMON_OVERRIDE = "trainer.max_epochs=8"


@dataclass(frozen=True)
class FakeRun:
    """One run to write: val/iou by epoch (float32-exact values) and what else its folder holds."""

    val_iou: Mapping[int, float]
    n_epochs: int = 4
    with_epoch_scalar: bool = True
    # Also log, at each val step, the next epoch's number a little later: the clash a training log can cause.
    epoch_clash: bool = False
    train_time_s: float | None = None
    hparams: Mapping[str, float | str] = field(default_factory=dict)
    first_wall_time: float = T0


def val_step(epoch: int) -> int:
    """Global step of the val metrics at the end of ``epoch`` (the last training step of that epoch)."""
    return (epoch + 1) * STEPS_PER_EPOCH - 1


def acc50_for(iou: float) -> float:
    """A val/acc50 derived from val/iou, so tests can predict the final value."""
    return min(1.0, iou + 0.125)


def write_run(run_dir: Path, run: FakeRun, overrides: list[str] | None = None) -> None:
    """Write a run folder: ``tensorboard/`` event files, ``.hydra/overrides.yaml`` and maybe metrics.json."""
    with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
        if run.hparams:
            # As Lightning's TensorBoardLogger.log_hyperparams: into the run's own event file, no subfolder.
            for summary in hparams(dict(run.hparams), {"val/iou_best": 0.0}):
                writer.file_writer.add_summary(summary)
        for epoch in range(run.n_epochs):
            train_step = epoch * STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2
            writer.add_scalar(
                "train/loss", 1.0 / (epoch + 1), train_step, walltime=run.first_wall_time + train_step
            )
            if run.with_epoch_scalar:
                writer.add_scalar("epoch", epoch, train_step, walltime=run.first_wall_time + train_step)
            if epoch not in run.val_iou:
                continue
            step = val_step(epoch)
            wall_time = run.first_wall_time + step
            writer.add_scalar("val/iou", run.val_iou[epoch], step, walltime=wall_time)
            writer.add_scalar("val/acc50", acc50_for(run.val_iou[epoch]), step, walltime=wall_time)
            if run.with_epoch_scalar:
                writer.add_scalar("epoch", epoch, step, walltime=wall_time)
            if run.epoch_clash:
                writer.add_scalar("epoch", epoch + 1, step, walltime=wall_time + 0.5)
    if overrides is not None:
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if run.train_time_s is not None:
        (run_dir / "metrics.json").write_text(json.dumps({"val/iou": 0.5, "train_time_s": run.train_time_s}))


def sweep_overrides(name: str) -> list[str]:
    """Overrides of a sweep job named like Hydra's job folder, plus one every job shares."""
    return [*Path(name).name.split(","), COMMON_OVERRIDE]


def write_fake_sweep(root: Path, runs: Mapping[str, FakeRun]) -> Path:
    """A multirun sweep folder: one run folder per entry, named by the (relative) key; returns ``root``."""
    for name, run in runs.items():
        write_run(root / name, run, sweep_overrides(name))
    return root


# Best first: giou 0.75 at epoch 5 (validated every 2nd epoch), the nested run 0.6875 at epoch 0,
# 0.25/giou 0.625 at epoch 3 (with hparams), 0.25/mse 0.5 at epoch 2 (metrics.json, clashing epochs).
SWEEP: dict[str, FakeRun] = {
    "alpha=0.25,loss=mse": FakeRun(
        {0: 0.25, 1: 0.375, 2: 0.5, 3: 0.4375}, epoch_clash=True, train_time_s=123.5
    ),
    "alpha=0.5,loss=giou": FakeRun({1: 0.375, 3: 0.625, 5: 0.75, 7: 0.6875}, n_epochs=8),
    "alpha=0.25,loss=giou": FakeRun(
        {0: 0.5, 1: 0.5625, 2: 0.59375, 3: 0.625}, hparams={"alpha": 0.25, "loss": "giou"}
    ),
    "seed_sweep/alpha=0.5,loss=mse": FakeRun({0: 0.6875, 1: 0.5, 2: 0.5, 3: 0.5}),
}
# SWEEP's runs best first, with each one's (best val/iou, its epoch), as the comment above says.
EXPECTED_ORDER = [
    "alpha=0.5,loss=giou",
    "seed_sweep/alpha=0.5,loss=mse",
    "alpha=0.25,loss=giou",
    "alpha=0.25,loss=mse",
]
EXPECTED_BEST = {
    "alpha=0.5,loss=giou": (0.75, 5),
    "seed_sweep/alpha=0.5,loss=mse": (0.6875, 0),
    "alpha=0.25,loss=giou": (0.625, 3),
    "alpha=0.25,loss=mse": (0.5, 2),
}

# ---- run folders as petloc-train writes them -----------------------------------------------------

PER_IMAGE_HEADER = [
    "image",
    "iou",
    *(f"{kind}_{edge}" for kind in ("pred", "true") for edge in ("xmin", "ymin", "xmax", "ymax")),
]


@dataclass(frozen=True)
class CsvRun:
    """A run folder's metrics.csv (val scalars by epoch, one train/loss row per epoch), the per-image
    IoUs of its best validation (None: no per_image_val.csv) and its seed."""

    val_iou: Mapping[int, float]
    n_epochs: int = 4
    seed: int = 0
    per_image: Mapping[str, float] | None = None
    # epoch -> a later row for that epoch: what a resumed run logs when it trains an epoch again
    relogged: Mapping[int, float] = field(default_factory=dict)


def acc75_for(iou: float) -> float:
    """A val/acc75 derived from val/iou, so tests can predict the value at the best epoch."""
    return max(0.0, iou - 0.25)


def write_csv_run(run_dir: Path, run: CsvRun, overrides: list[str]) -> None:
    """``metrics.csv`` in the layout of Lightning's CSVLogger (sorted columns, a row per logging call,
    empty cells for scalars not in that call), ``per_image_val.csv``, ``.hydra/overrides.yaml`` and
    ``.hydra/config.yaml`` (its ``seed``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    columns = ["epoch", "step", "train/loss", "val/acc75", "val/iou"]
    rows: list[dict[str, float | int]] = []
    for epoch in range(run.n_epochs):
        step = val_step(epoch)
        if epoch in run.val_iou:
            iou = run.val_iou[epoch]
            rows.append({"epoch": epoch, "step": step, "val/acc75": acc75_for(iou), "val/iou": iou})
        rows.append({"epoch": epoch, "step": step, "train/loss": 1.0 / (epoch + 1)})
    for epoch, iou in run.relogged.items():
        rows.append({"epoch": epoch, "step": val_step(epoch), "val/acc75": acc75_for(iou), "val/iou": iou})
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    if run.per_image is not None:
        with (run_dir / "per_image_val.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(PER_IMAGE_HEADER)
            for image, iou in run.per_image.items():
                writer.writerow([image, f"{iou:.6f}", 0.25, 0.25, 0.75, 0.75, 0.25, 0.25, 0.75, 0.75])
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": run.seed, "alpha": 0.5}))


# ---- a seeded sweep of such folders, with planted differences -----------------------------------

SEEDS = (0, 1, 2)
N_IMAGES = 40
# validated after epochs 1, 3 and 4 (indices 0, 1, 2 if the epochs were not read), best at epoch 3
VALIDATED = (1, 3, 4)
BEST_EPOCH = 3
# per configuration: the shift of every image's IoU from the baseline's, and noise around it
SHIFTS = {"loss=giou": (0.0, 0.0), "loss=ciou": (0.1, 0.0), "loss=diou": (0.0, 0.0), "loss=mse": (-0.1, 0.05)}


def baseline_ious(seed: int) -> dict[str, float]:
    """The baseline's per-image IoUs; each seed validates its own images, as its own split does."""
    values = np.random.default_rng(100 + seed).uniform(0.2, 0.8, N_IMAGES)
    return {f"img{seed}_{i:02d}": round(float(v), 6) for i, v in enumerate(values)}


def seeded_run(configuration: str, seed: int) -> CsvRun:
    """A run whose best val/iou (at BEST_EPOCH) is the mean of its per-image IoUs."""
    shift, noise = SHIFTS[configuration]
    rng = np.random.default_rng(1000 * seed + len(configuration))
    per_image = {
        image: round(iou + shift + float(rng.normal(0, noise)) if noise else iou + shift, 6)
        for image, iou in baseline_ious(seed).items()
    }
    best = float(np.mean(list(per_image.values())))
    return CsvRun(
        {1: best - 0.125, BEST_EPOCH: best, 4: best - 0.0625}, n_epochs=5, seed=seed, per_image=per_image
    )


def write_seeded_sweep(root: Path) -> Path:
    """``-m loss=giou,ciou,diou,mse seed=0,1,2`` as folders, written with the standard library."""
    for configuration in SHIFTS:
        for seed in SEEDS:
            overrides = [configuration, f"seed={seed}", COMMON_OVERRIDE]
            write_csv_run(root / f"{configuration},seed={seed}", seeded_run(configuration, seed), overrides)
    return root


# ---- real sweeps: petloc-train -m in a subprocess -----------------------------------------------

PETLOC_TRAIN = Path(sys.executable).with_name("petloc-train")
SWEEP_TIMEOUT_S = 300
# CI-sized runs of two one-batch epochs. The lr warm-up ends at step 1, so the two steps move the
# validated weights: each job of a sweep then ends with its own metrics.
TINY = (
    "image_size=64",
    "data.synthetic.n=60",
    "data.min_epoch_images=1",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",  # one validation per epoch (the default is every second)
    "trainer.max_time=null",
    "scheduler.scheduler.warmup_steps=1",
    "trainer.enable_progress_bar=false",
)
SMALL = (*TINY, "data.num_workers=0")


def petloc_train(cwd: Path, *overrides: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``petloc-train -m OVERRIDES`` run in ``cwd``, the sweep written to ``cwd/sweep``."""
    command = [str(PETLOC_TRAIN), "-m", f"hydra.sweep.dir={cwd / 'sweep'}", *overrides]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S, check=False
    )


def output_tail(result: subprocess.CompletedProcess[str]) -> str:
    """The end of a command's output, for assertion messages."""
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


def job_dirs(sweep: Path) -> dict[str, Path]:
    """A sweep's job folders by name: the folders Hydra wrote the job's ``.hydra/`` config into."""
    return {path.name: path for path in sorted(sweep.iterdir()) if (path / ".hydra").is_dir()}


def metrics_of(job: Path) -> dict[str, float]:
    """The job's final metrics.json."""
    return json.loads((job / "metrics.json").read_text())


# ---- the real TensorBoard server ---------------------------------------------------------------------

# The console script installed next to this interpreter: the same ``tensorboard`` a user runs.
TENSORBOARD = Path(sys.executable).with_name("tensorboard")
READY_TIMEOUT_S = 60.0
HPARAMS_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now, so parallel test runs do not collide on 6006."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout_s: float = 10.0) -> Any:
    """GET ``url`` and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.load(response)


def wait_for(fetch: Callable[[], T | None], what: str, timeout_s: float = READY_TIMEOUT_S) -> T:
    """Call ``fetch`` until it returns something truthy; TensorBoard loads event files in the background."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = fetch()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"TensorBoard did not serve {what} within {timeout_s:.0f} s")
        time.sleep(0.5)


@contextmanager
def tensorboard_server(logdir: Path, timeout_s: float = READY_TIMEOUT_S) -> Iterator[str]:
    """Run ``tensorboard --logdir logdir`` on a free local port; yield its base URL once it answers.

    The server is terminated on exit, also when the body fails. ``--load_fast=false`` keeps the pure
    Python loader, so no separate data-server process is left behind.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--load_fast=false"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            if process.poll() is not None:
                log.seek(0)
                output = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"TensorBoard exited with {process.returncode}:\n{output}")
            try:
                get_json(f"{base_url}/data/runs", timeout_s=2.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False
            return True

        try:
            wait_for(answers, "/data/runs", timeout_s)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tensorboard_run_names(logdir: Path) -> set[str]:
    """The run names TensorBoard gives the run folders below ``logdir``: their event folders' paths."""
    return {run.tensorboard.relative_to(logdir).as_posix() for run in find_runs(logdir)}


def wait_for_scalar_tags(
    base_url: str, runs: set[str], tag: str = "val/iou", timeout_s: float = READY_TIMEOUT_S
) -> dict[str, dict[str, Any]]:
    """``/data/plugin/scalars/tags`` once every run in ``runs`` is loaded and lists ``tag``."""

    def loaded() -> dict[str, dict[str, Any]] | None:
        tags: dict[str, dict[str, Any]] = get_json(f"{base_url}/data/plugin/scalars/tags")
        return tags if all(tag in tags.get(run, {}) for run in runs) else None

    return wait_for(loaded, f"the {tag} tag of {len(runs)} run(s)", timeout_s)


def hparams_request(route: str, request: dict[str, Any]) -> str:
    """URL path of an hparams plugin call: the plugin takes its request proto as JSON in ``?request=``."""
    return f"/data/plugin/hparams/{route}?" + urllib.parse.urlencode({"request": json.dumps(request)})


def hparams_sessions(base_url: str) -> dict[str, dict[str, Any]]:
    """Run name -> hparams of every session the hparams plugin lists (the runs that logged hparams)."""
    request = {"experimentName": "", "allowedStatuses": HPARAMS_STATUSES, "startIndex": 0, "sliceSize": 1000}
    groups = get_json(base_url + hparams_request("session_groups", request)).get("sessionGroups", [])
    return {session["name"]: group["hparams"] for group in groups for session in group["sessions"]}
