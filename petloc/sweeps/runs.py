"""Run folders read back: every run below a folder (a run, a sweep, a folder of sweeps) as a
:class:`RunSummary`.

Where a run's files are is :class:`petloc.run_dir.RunDir`'s to say (from the run's own saved config).
Its scalars come from ``metrics.csv`` (exact epochs), or from the TensorBoard event files for a folder
without one; its per-image validation IoU from ``per_image_val.csv``; its seed and overrides from
``.hydra/``; its training time from ``metrics.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

from petloc.run_dir import NAMES, SAVED_CONFIG, RunDir

log = logging.getLogger(__name__)

VAL_IOU = "val/iou"
EPOCH = "epoch"

# (epoch, value) pairs in epoch order, one per epoch
Curve = list[tuple[int, float]]


@dataclass
class RunSummary:
    """What a comparison needs from one run folder; what a run never logged is ``None`` or empty."""

    run_dir: RunDir
    name: str
    overrides: list[str]
    curves: dict[str, Curve] = field(default_factory=dict)
    seed: int | None = None
    train_time_s: float | None = None
    # image id -> IoU of the validation the best checkpoint holds (per_image_val.csv)
    per_image: dict[str, float] | None = None

    @property
    def path(self) -> Path:
        return self.run_dir.root

    @property
    def label(self) -> str:
        """The overrides as Hydra joins them into a sweep folder's name; the folder name if there are none."""
        return ",".join(self.overrides) if self.overrides else self.path.name

    @property
    def configuration(self) -> tuple[str, ...]:
        """The overrides but ``seed``: what runs of one configuration share. A run without overrides
        is a configuration of its own (its path)."""
        if not self.overrides:
            return (str(self.path),)
        return tuple(o for o in self.overrides if o.split("=", 1)[0].lstrip("+~") != "seed")

    @property
    def iou_curve(self) -> Curve:
        """val/iou per validated epoch."""
        return self.curves.get(VAL_IOU, [])

    @property
    def best(self) -> tuple[int, float] | None:
        """(epoch, val/iou) of the best epoch; the earliest one on ties, as checkpointing keeps that one."""
        if not self.iou_curve:
            return None
        return max(self.iou_curve, key=lambda point: (point[1], -point[0]))

    @property
    def best_iou(self) -> float | None:
        """Best val/iou, the number a sweep is ranked by."""
        best = self.best
        return None if best is None else best[1]

    @property
    def best_epoch(self) -> int | None:
        """Epoch of the best val/iou, to tell an early peak (overfitting) from a still-rising curve."""
        best = self.best
        return None if best is None else best[0]

    @property
    def final_iou(self) -> float | None:
        """val/iou of the last evaluated epoch, which differs from the best one when a run degrades."""
        return self.iou_curve[-1][1] if self.iou_curve else None

    def at_best(self, metric: str) -> float | None:
        """``metric`` at the epoch of the best val/iou, the checkpoint a user keeps: its last value logged
        in that epoch or before (None if the run has no val/iou or never logged the metric by then)."""
        epoch = self.best_epoch
        if epoch is None:
            return None
        logged = [value for at, value in self.curves.get(metric, []) if at <= epoch]
        return logged[-1] if logged else None


# ---- finding run folders ---------------------------------------------------------------------------


def _within(folder: Path, parents: set[Path]) -> bool:
    return any(folder == parent or parent in folder.parents for parent in parents)


def find_runs(root: Path) -> list[RunDir]:
    """The run folders at or below ``root`` that a logger wrote into (``metrics.csv`` or event files).

    A folder holding Hydra's saved config is a run read by that config, wherever it put its files; a
    folder without one (a run of ``train(cfg)`` without Hydra) is found by the default names, unless it
    lies inside a run with a config (a logger folder of that run). Searching at any depth covers a
    single run, a sweep, and a folder holding several sweeps.
    """
    configured = {path.parent.parent for path in root.rglob(SAVED_CONFIG) if path.is_file()}
    by_default_names = {path.parent for path in root.rglob(NAMES["metrics_csv"]) if path.is_file()}
    by_default_names |= {path.parent for path in root.rglob(NAMES["tensorboard"]) if path.is_dir()}
    folders = configured | {f for f in by_default_names if not _within(f, configured)}
    runs = [RunDir.read(folder) for folder in sorted(folders)]
    return [run for run in runs if run.has_scalars()]


# ---- reading one run folder ------------------------------------------------------------------------


def read_overrides(path: Path) -> list[str]:
    """The job's command-line overrides from Hydra's ``overrides.yaml``; empty if absent."""
    if not path.is_file():
        return []
    loaded = yaml.safe_load(path.read_text())
    return [str(item) for item in loaded] if isinstance(loaded, list) else []


def read_seed(config: DictConfig) -> int | None:
    """The run's ``seed`` from its composed config (a seed left at its default counts too), or None."""
    seed = config.get("seed")
    return int(seed) if isinstance(seed, int) else None


def read_train_time(path: Path) -> float | None:
    """``train_time_s`` from ``metrics.json``: measured by the trainer, so it excludes set-up and pauses."""
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        log.warning("ignoring unreadable %s: %s", path, err)
        return None
    value = metrics.get("train_time_s") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None


def read_scalars_csv(path: Path) -> dict[str, Curve]:
    """Every scalar of a ``metrics.csv`` (Lightning's CSVLogger: a row per logging call, with its
    ``epoch`` and ``step``) as (epoch, value) curves. A value logged again for an epoch replaces the
    earlier one: a resumed run logs the epochs after its checkpoint again, and the later rows are
    the ones it continued from."""
    by_tag: dict[str, dict[int, float]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            epoch_text = row.get(EPOCH) or ""
            if not epoch_text:
                continue
            epoch = round(float(epoch_text))
            for tag, text in row.items():
                if tag in (EPOCH, "step") or not text:
                    continue
                by_tag.setdefault(tag, {})[epoch] = float(text)
    return {tag: sorted(values.items()) for tag, values in by_tag.items()}


def _tensorboard_curve(
    accumulator: EventAccumulator, tag: str, epochs_at_step: dict[int, list[tuple[float, float]]]
) -> Curve:
    """One scalar as (epoch, value) pairs in epoch order.

    Steps are global steps, not epochs: Lightning logs its ``epoch`` scalar at the same step as the
    metrics, so each point takes the epoch logged at its step, or its index when there is none.
    """
    by_epoch: dict[int, float] = {}
    # In logging order: the accumulator reads event files by name, which orders two files written in
    # the same second by a counter compared as text ("...10" before "...9").
    logged = sorted(accumulator.Scalars(tag), key=lambda e: e.wall_time)
    for index, event in enumerate(logged):
        # A training log can share the step; the epoch logged with this value is the closest in time.
        same_step = epochs_at_step.get(event.step, [])
        closest = min(same_step, key=lambda c: abs(c[0] - event.wall_time), default=None)
        epoch = index if closest is None else round(closest[1])
        # A resumed run logs the epochs after its checkpoint again, later: the later value is the one
        # the run continued from.
        by_epoch[epoch] = event.value
    return sorted(by_epoch.items())


def read_scalars_tensorboard(folder: Path) -> tuple[dict[str, Curve], float | None]:
    """Every scalar of the event files in ``folder`` (all of them, so resumed runs are read whole) as
    (epoch, value) curves, and the span of their wall times (None without scalars)."""
    # Keep every scalar (the default reservoir samples long runs) and just one image: none is needed.
    accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0, IMAGES: 1})
    accumulator.Reload()
    tags = [tag for tag in accumulator.Tags()[SCALARS] if tag != EPOCH]
    epochs_at_step: dict[int, list[tuple[float, float]]] = {}
    if EPOCH in accumulator.Tags()[SCALARS]:
        for event in accumulator.Scalars(EPOCH):
            epochs_at_step.setdefault(event.step, []).append((event.wall_time, event.value))
    curves = {tag: _tensorboard_curve(accumulator, tag, epochs_at_step) for tag in tags}
    wall_times = [event.wall_time for tag in tags for event in accumulator.Scalars(tag)]
    span = max(wall_times) - min(wall_times) if wall_times else None
    return curves, span


def read_per_image(path: Path) -> dict[str, float] | None:
    """A per-image CSV (``per_image_val.csv``) as image id -> IoU; None if the run has none."""
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return {row["image"]: float(row["iou"]) for row in csv.DictReader(handle)}


def read_run(run_dir: RunDir, name: str) -> RunSummary:
    """Read one run folder: scalars from ``metrics.csv``, else from the TensorBoard event files."""
    train_time_s = read_train_time(run_dir.metrics_json)
    if run_dir.metrics_csv.is_file():
        curves = read_scalars_csv(run_dir.metrics_csv)
    else:
        curves, span = read_scalars_tensorboard(run_dir.tensorboard)
        # Without the trainer's own measure, the span of the logged scalars approximates it.
        train_time_s = span if train_time_s is None else train_time_s
    return RunSummary(
        run_dir=run_dir,
        name=name,
        overrides=read_overrides(run_dir.overrides_yaml),
        curves=curves,
        seed=read_seed(run_dir.config),
        train_time_s=train_time_s,
        per_image=read_per_image(run_dir.per_image_val),
    )


def _run_name(run_dir: Path, base: Path) -> str:
    """The run's path relative to the compared folder(s); its own name when it is the folder itself."""
    relative = run_dir.relative_to(base).as_posix()
    return run_dir.name if relative == "." else relative


def read_runs(dirs: Sequence[Path]) -> list[RunSummary]:
    """Every run folder below ``dirs``, best val/iou first and runs without val/iou last.

    Names are relative to the single DIR, or to the common parent of several, so they stay distinct.
    """
    resolved = [Path(d).resolve() for d in dirs]
    if not resolved:
        return []
    base = Path(os.path.commonpath(resolved)) if len(resolved) > 1 else resolved[0]
    run_dirs = {run.root: run for d in resolved for run in find_runs(d)}
    summaries = [read_run(run_dirs[root], _run_name(root, base)) for root in sorted(run_dirs)]
    return sorted(summaries, key=lambda s: (s.best_iou is None, -(s.best_iou or 0.0), s.name))
