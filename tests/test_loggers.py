"""petloc's CSV logger: metrics.csv in a run folder that already holds files, continued by a resumed run."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from petloc.loggers import RunCSVLogger


def log(folder: Path, *calls: tuple[dict[str, float], int]) -> None:
    """One logger's life as Lightning drives it: ``log_metrics`` per call, then ``finalize``."""
    logger = RunCSVLogger(save_dir=folder, name="", version="", flush_logs_every_n_steps=1)
    for metrics, step in calls:
        logger.log_metrics(metrics, step=step)
    logger.finalize("success")


def test_a_resumed_run_appends_to_its_metrics_csv_without_a_warning(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()  # Hydra writes its folder before training starts
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's logger warns that it will delete the file
        log(tmp_path, ({"epoch": 0, "train/loss": 1.5}, 4))
        # resumed: the same epoch again, and a scalar the first part never logged
        log(tmp_path, ({"epoch": 0, "train/loss": 1.25}, 4), ({"epoch": 1, "val/iou": 0.5}, 9))

    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {"epoch": "0", "step": "4", "train/loss": "1.5", "val/iou": ""},
        {"epoch": "0", "step": "4", "train/loss": "1.25", "val/iou": ""},
        {"epoch": "1", "step": "9", "train/loss": "", "val/iou": "0.5"},
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "metrics.csv"]
