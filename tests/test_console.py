"""What a user reads: the console of a real ``petloc-train`` run, and the same lines in its train.log.

The run is a user's (the console script in a subprocess, progress bar on, limited by wall-clock time)
so that every library message reaches the console as it would; its event file and metrics.csv also
show the per-step learning rate's warm-up.
"""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PETLOC_TRAIN, event_scalars

WARMUP_STEPS = 8


@dataclass(frozen=True)
class Run:
    """A finished run: where it ran, its run folder and what it printed."""

    cwd: Path
    folder: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def time_limited_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Run:
    """An 8-second run on 48 synthetic images (at least the warm-up's steps on a loaded machine)."""
    cwd = tmp_path_factory.mktemp("console")
    run = cwd / "outputs" / "run"
    command = [
        str(PETLOC_TRAIN),
        f"hydra.run.dir={run}",
        f"paths.cache_dir={cache_dir}",
        "data.synthetic.n=48",
        "data.min_epoch_images=1",
        "image_size=64",
        "alpha=0.25",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_time=00:00:00:08",
        # the warm-up's steps whatever the machine's load: Lightning stops at max_time only past min_steps
        f"+trainer.min_steps={WARMUP_STEPS}",
        "trainer.check_val_every_n_epoch=1",
        "trainer.log_every_n_steps=1",
        f"scheduler.scheduler.warmup_steps={WARMUP_STEPS}",
    ]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return Run(cwd, run, result.stdout, result.stderr)


@pytest.mark.slow
def test_a_run_prints_its_config_report_and_model_once_then_where_it_went(
    time_limited_run: Run,
) -> None:
    cwd, run, output = time_limited_run.cwd, time_limited_run.folder, time_limited_run.stdout
    lines = output.replace("\r", "\n").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("config (")]
    reports = [i for i, line in enumerate(lines) if re.match(r"dataset .*: 48 images, \d+ usable", line)]
    models = [i for i, line in enumerate(lines) if line.startswith("model: backbone=mobilenetv1 alpha=0.25")]
    assert len(starts) == len(reports) == len(models) == 1, output[-4000:]
    assert starts[0] < reports[0] < models[0]
    # the compact tree: a line per group, classes by name, with this run's values
    tree = lines[starts[0] + 1 : reports[0]]
    assert any(line.startswith("  trainer: Trainer ") for line in tree)
    assert any("max_time=00:00:00:08" in line for line in tree)
    assert len(tree) < 60

    # the last two lines: the run folder and the TensorBoard command for it, both usable as printed
    folder_line, tensorboard_line = [line for line in lines if line.strip()][-2:]
    shown = folder_line.removeprefix("run folder: ")
    assert (cwd / shown).resolve() == run.resolve()
    assert shlex.split(tensorboard_line.removeprefix("TensorBoard: ")) == ["tensorboard", "--logdir", shown]
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_run_prints_no_noise(time_limited_run: Run) -> None:
    output = time_limited_run.stdout + time_limited_run.stderr
    assert re.search(r"Epoch \d+", output), "no progress bar at all"
    assert not re.search(r"Epoch \d+/\d+", output), "the epoch count of a time-limited run"
    for noise in ("Tip:", "litlogger", "LeafSpec", "FLOPs", "deprecated"):
        assert noise not in output


# The first line of each message of petloc.console, as printed.
CONSOLE_LINES = ("config (whole in", "dataset ", "model: ", "final metrics: ", "run folder: ")


@pytest.mark.slow
def test_train_log_holds_the_console_lines_printed_once(time_limited_run: Run) -> None:
    """Hydra's job log of the run folder gets each console line through the logger petloc.console;
    the terminal shows each line once, as printed, around the progress bar."""
    log = (time_limited_run.folder / "train.log").read_text()
    output = (time_limited_run.stdout + time_limited_run.stderr).replace("\r", "\n")
    for start in CONSOLE_LINES:
        (printed,) = [line for line in output.splitlines() if line.startswith(start)]
        assert output.count(printed) == 1, printed
        assert f"[petloc.console][INFO] - {printed}\n" in log, printed
    # the lines after a message's first one follow it in the log as on the terminal
    lines = output.splitlines()
    folder_line = next(line for line in lines if line.startswith("run folder: "))
    assert f"{folder_line}\n{lines[lines.index(folder_line) + 1]}\n" in log
    assert re.search(r"Epoch \d+", output), "the progress bar"


@pytest.mark.slow
def test_the_learning_rate_is_logged_every_step_through_the_warm_up(
    time_limited_run: Run,
) -> None:
    scalars = event_scalars(time_limited_run.folder / "tensorboard")
    head, backbone = scalars["lr/head"], scalars["lr/backbone"]
    assert [step for step, _ in head[:WARMUP_STEPS]] == list(range(WARMUP_STEPS))
    # backbone_lr_scale 1.0: both groups get the step's one reading of the time-based schedule
    assert [v for _, v in backbone] == pytest.approx([v for _, v in head], rel=1e-6)
    # step s runs at (s + 1) / warmup_steps of conf/optimizer/adamw.yaml's lr 0.02, times the cosine
    # decay over the run's 8 seconds (1 at the first step, below 1 after it)
    ramp = [0.02 * (step + 1) / WARMUP_STEPS for step in range(WARMUP_STEPS)]
    warm_up = [value for _, value in head[:WARMUP_STEPS]]
    assert warm_up[0] == pytest.approx(ramp[0], rel=1e-4)
    assert all(value <= limit * (1 + 1e-4) for value, limit in zip(warm_up, ramp, strict=True))
    assert max(warm_up) > 3 * warm_up[0]
    # metrics.csv has the same rates, each row dated with its epoch like every other row
    with (time_limited_run.folder / "metrics.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["lr/head"]]
    assert [float(row["lr/head"]) for row in rows] == pytest.approx([v for _, v in head])
    epochs = [int(row["epoch"]) for row in rows]
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] > 0
