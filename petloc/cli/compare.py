"""``petloc-compare``: which configurations of a sweep are better than which, beyond run-to-run noise.

Usage::

    petloc-compare DIR [DIR ...] [--metric SCALAR ...] [--baseline RUN|CONFIGURATION] [--out OUTDIR]

Every run folder below the DIRs is read: its scalars from ``metrics.csv`` (exact epochs), or from the
TensorBoard event files for a folder without one; its per-image validation IoU from
``per_image_val.csv``; its seed and overrides from ``.hydra/``. Runs whose overrides differ only by
``seed`` form one configuration. Per configuration: mean, standard deviation and 95% t interval of
the runs' best val/iou and of each ``--metric`` (its value at the epoch of the run's best val/iou).
With ``--baseline``, every configuration is compared with the baseline on the same validation images:
a bootstrap over images of the mean per-image IoU difference, with its 95% interval, the shares of
images better and worse, and a verdict (better / worse / not distinguishable: whether the interval
excludes 0). Writes into OUTDIR (default: the first DIR) ``comparison.csv`` (one row per
configuration), ``comparison_runs.csv`` (one row per run), ``comparison.md`` (both tables and the
runs that could not be ranked or paired, with the reason; also printed) and ``iou_curves.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

from petloc.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    PairedDifference,
    Spread,
    paired_bootstrap,
    t_interval,
)

VAL_IOU = "val/iou"
EPOCH = "epoch"
EVENT_FILE_GLOB = "events.out.tfevents.*"
SCALARS_CSV = "metrics.csv"
PER_IMAGE_CSV = "per_image_val.csv"

CSV_NAME = "comparison.csv"
RUNS_CSV_NAME = "comparison_runs.csv"
MARKDOWN_NAME = "comparison.md"
PLOT_NAME = "iou_curves.png"

# (epoch, value) pairs in epoch order, one per epoch
Curve = list[tuple[int, float]]


@dataclass
class RunSummary:
    """What the comparison needs from one run folder; what a run never logged is ``None`` or empty."""

    path: Path
    name: str
    overrides: list[str]
    curves: dict[str, Curve] = field(default_factory=dict)
    seed: int | None = None
    train_time_s: float | None = None
    # image id -> IoU of the validation best.ckpt holds (per_image_val.csv)
    per_image: dict[str, float] | None = None

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


# ---- reading run folders ---------------------------------------------------------------------------


def find_run_dirs(root: Path) -> list[Path]:
    """Run folders at or below ``root``: folders with a ``metrics.csv`` or event files in ``tensorboard/``.

    Searching at any depth covers a single run, a sweep, and a multirun folder holding several sweeps.
    """
    with_csv = {path.parent for path in [root / SCALARS_CSV, *root.rglob(SCALARS_CSV)] if path.is_file()}
    boards = [root / "tensorboard", *root.rglob("tensorboard")]
    with_events = {tb.parent for tb in boards if tb.is_dir() and any(tb.glob(EVENT_FILE_GLOB))}
    return sorted(with_csv | with_events)


def read_overrides(run_dir: Path) -> list[str]:
    """The job's command-line overrides from Hydra's ``.hydra/overrides.yaml``; empty if absent."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    loaded = yaml.safe_load(path.read_text())
    return [str(item) for item in loaded] if isinstance(loaded, list) else []


def read_seed(run_dir: Path) -> int | None:
    """The run's ``seed`` from Hydra's ``.hydra/config.yaml`` (the composed config: a seed left at its
    default counts too); None without one."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    loaded = yaml.safe_load(path.read_text())
    seed = loaded.get("seed") if isinstance(loaded, dict) else None
    return int(seed) if isinstance(seed, int) else None


def _metrics_train_time(run_dir: Path) -> float | None:
    """``train_time_s`` from ``metrics.json``: measured by the trainer, so it excludes set-up and pauses."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        print(f"petloc-compare: ignoring unreadable {path}: {err}", file=sys.stderr)
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


def read_scalars_tensorboard(run_dir: Path) -> tuple[dict[str, Curve], float | None]:
    """Every scalar of the run's event files (all files in ``tensorboard/``, so resumed runs are read
    whole) as (epoch, value) curves, and the span of their wall times (None without scalars)."""
    # Keep every scalar (the default reservoir samples long runs) and just one image: none is needed.
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={SCALARS: 0, IMAGES: 1})
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
    """``per_image_val.csv`` as image id -> IoU; None if the run has none."""
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return {row["image"]: float(row["iou"]) for row in csv.DictReader(handle)}


def read_run(run_dir: Path, name: str) -> RunSummary:
    """Read one run folder: scalars from ``metrics.csv``, else from the TensorBoard event files."""
    train_time_s = _metrics_train_time(run_dir)
    scalars_csv = run_dir / SCALARS_CSV
    if scalars_csv.is_file():
        curves = read_scalars_csv(scalars_csv)
    else:
        curves, span = read_scalars_tensorboard(run_dir)
        # Without the trainer's own measure, the span of the logged scalars approximates it.
        train_time_s = span if train_time_s is None else train_time_s
    return RunSummary(
        path=run_dir,
        name=name,
        overrides=read_overrides(run_dir),
        curves=curves,
        seed=read_seed(run_dir),
        train_time_s=train_time_s,
        per_image=read_per_image(run_dir / PER_IMAGE_CSV),
    )


def _run_name(run_dir: Path, base: Path) -> str:
    """The run's path relative to the compared folder(s); its own name when it is the folder itself."""
    relative = run_dir.relative_to(base).as_posix()
    return run_dir.name if relative == "." else relative


def compare_runs(dirs: Sequence[Path]) -> list[RunSummary]:
    """Summarise every run folder below ``dirs``, best val/iou first and runs without val/iou last.

    Names are relative to the single DIR, or to the common parent of several, so they stay distinct.
    """
    resolved = [Path(d).resolve() for d in dirs]
    if not resolved:
        return []
    base = Path(os.path.commonpath(resolved)) if len(resolved) > 1 else resolved[0]
    run_dirs = sorted({run for d in resolved for run in find_run_dirs(d)})
    summaries = [read_run(run, _run_name(run, base)) for run in run_dirs]
    return sorted(summaries, key=lambda s: (s.best_iou is None, -(s.best_iou or 0.0), s.name))


# ---- configurations and their statistics ---------------------------------------------------------


@dataclass
class Configuration:
    """Runs whose overrides differ only by ``seed``, and what the comparison found for them."""

    key: tuple[str, ...]
    runs: list[RunSummary]
    # against the baseline: the paired difference, or None (the baseline itself, or nothing to pair)
    paired: PairedDifference | None = None
    # runs of this configuration left out of the statistics or the pairing, with the reason
    not_ranked: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The overrides without the seed, comma-joined; the folder name of a run without overrides."""
        if not self.runs[0].overrides:
            return self.runs[0].name
        return ",".join(self.key)

    @property
    def ranked(self) -> list[RunSummary]:
        """The runs that logged val/iou."""
        return [run for run in self.runs if run.best_iou is not None]

    @property
    def seeds(self) -> list[int | None]:
        return sorted({run.seed for run in self.runs}, key=lambda s: (s is None, s or 0))

    def spread(self, metric: str | None = None) -> Spread | None:
        """Best val/iou (``metric=None``) or ``metric`` at the best epoch over the ranked runs."""
        values = [run.best_iou if metric is None else run.at_best(metric) for run in self.ranked]
        present = [value for value in values if value is not None]
        return t_interval(present) if present else None


def group_runs(runs: Iterable[RunSummary]) -> list[Configuration]:
    """Runs grouped by their overrides without ``seed``, best mean val/iou first."""
    groups: dict[frozenset[str], Configuration] = {}
    for run in runs:
        key = frozenset(run.configuration)
        if key not in groups:
            groups[key] = Configuration(run.configuration, [])
        groups[key].runs.append(run)
    for configuration in groups.values():
        configuration.runs.sort(key=lambda r: (r.seed is None, r.seed or 0, r.name))
        configuration.not_ranked = [
            f"{run.name}: no {VAL_IOU} logged (stopped before its first validation)"
            for run in configuration.runs
            if run.best_iou is None
        ]

    def order(configuration: Configuration) -> tuple[bool, float, str]:
        spread = configuration.spread()
        return (spread is None, -(spread.mean if spread else 0.0), configuration.label)

    return sorted(groups.values(), key=order)


def resolve_baseline(spec: str, configurations: Sequence[Configuration]) -> Configuration:
    """The configuration ``spec`` names: a run's name (its configuration), a configuration's label, or
    comma-separated overrides that only one configuration has all of (``loss=giou``)."""
    for configuration in configurations:
        if spec == configuration.label or any(spec == run.name for run in configuration.runs):
            return configuration
    wanted = {part for part in spec.split(",") if part}
    matches = [c for c in configurations if wanted <= set(c.key)]
    if len(matches) == 1:
        return matches[0]
    known = "; ".join(c.label for c in configurations)
    problem = "matches no run or configuration" if not matches else f"matches {len(matches)} configurations"
    raise ValueError(f"--baseline {spec!r} {problem}. Configurations: {known}")


def pair(candidate: Configuration, baseline: Configuration) -> tuple[list[float], list[str]]:
    """Per-image IoU differences (candidate minus baseline) of every pair of runs with the same seed,
    pooled, and the runs that could not be paired with the reason.

    Runs pair by seed because the seed also draws the train/validation split: runs of one seed
    validate on the same images, runs of two seeds in general do not. Pooling the pairs of all
    seeds (rather than averaging each image over seeds) keeps every run's images, also when each
    seed validates a different subset of the dataset.
    """
    differences: list[float] = []
    problems: list[str] = []
    for run in candidate.ranked:
        if run.per_image is None:
            problems.append(f"{run.name}: no {PER_IMAGE_CSV}")
            continue
        partners = [b for b in baseline.ranked if b.seed == run.seed]
        if not partners:
            seeds = ", ".join(str(seed) for seed in baseline.seeds)
            problems.append(f"{run.name}: no baseline run with seed {run.seed} (baseline seeds: {seeds})")
            continue
        for partner in partners:
            if partner.per_image is None:
                problems.append(f"{run.name}: its baseline partner {partner.name} has no {PER_IMAGE_CSV}")
            elif set(partner.per_image) != set(run.per_image):
                problems.append(f"{run.name}: different validation images than {partner.name}")
            else:
                differences.extend(run.per_image[i] - partner.per_image[i] for i in sorted(run.per_image))
    return differences, problems


def compare_with(configurations: Sequence[Configuration], baseline: Configuration) -> None:
    """Fill in every configuration's paired difference with ``baseline`` and what could not be paired."""
    for configuration in configurations:
        if configuration is baseline:
            continue
        differences, problems = pair(configuration, baseline)
        configuration.not_ranked += problems
        if len(differences) >= 2:
            configuration.paired = paired_bootstrap(differences)
        elif configuration.ranked and not problems:
            configuration.not_ranked.append(f"{configuration.label}: fewer than two images to pair")


# ---- tables ------------------------------------------------------------------------------------


def metric_column(metric: str) -> str:
    """A scalar name as a CSV column stem: ``val/acc75`` -> ``val_acc75``."""
    return re.sub(r"\W+", "_", metric).strip("_")


def shared_overrides(configurations: Sequence[Configuration]) -> list[str]:
    """The overrides every configuration has (a sweep's fixed settings), in the first one's order."""
    keys = [set(c.key) for c in configurations if c.runs[0].overrides]
    if len(configurations) < 2 or len(keys) != len(configurations):
        return []
    common = set.intersection(*keys)
    return [o for o in configurations[0].key if o in common]


def short_labels(configurations: Sequence[Configuration]) -> list[str]:
    """Each configuration's overrides without those all share: what tells them apart."""
    shared = set(shared_overrides(configurations))
    return [
        (",".join(o for o in c.key if o not in shared) or c.label) if c.runs[0].overrides else c.label
        for c in configurations
    ]


def _number(value: float | None) -> str | float:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def configuration_rows(
    configurations: Sequence[Configuration], metrics: Sequence[str], baseline: Configuration | None
) -> list[dict[str, str | float | int]]:
    """One CSV row per configuration, at full precision; missing values are empty."""
    rows = []
    for configuration, short in zip(configurations, short_labels(configurations), strict=True):
        row: dict[str, str | float | int] = {
            "configuration": short,
            "overrides": configuration.label,
            "runs": len(configuration.runs),
            "ranked_runs": len(configuration.ranked),
            "seeds": " ".join(str(seed) for seed in configuration.seeds if seed is not None),
        }
        for metric in (VAL_IOU, *metrics):
            spread = configuration.spread(None if metric == VAL_IOU else metric)
            stem = "best_val_iou" if metric == VAL_IOU else metric_column(metric)
            row[f"{stem}_mean"] = _number(spread.mean if spread else None)
            row[f"{stem}_std"] = _number(spread.std if spread else None)
            row[f"{stem}_ci_low"] = _number(spread.low if spread else None)
            row[f"{stem}_ci_high"] = _number(spread.high if spread else None)
        paired = configuration.paired
        row["iou_diff_mean"] = _number(paired.mean if paired else None)
        row["iou_diff_ci_low"] = _number(paired.low if paired else None)
        row["iou_diff_ci_high"] = _number(paired.high if paired else None)
        row["share_images_better"] = _number(paired.share_better if paired else None)
        row["share_images_worse"] = _number(paired.share_worse if paired else None)
        row["paired_images"] = paired.n if paired else ""
        row["verdict"] = paired.verdict if paired else ("baseline" if configuration is baseline else "")
        row["not_ranked"] = "; ".join(configuration.not_ranked)
        rows.append(row)
    return rows


def run_rows(runs: Sequence[RunSummary], metrics: Sequence[str]) -> list[dict[str, str | float | int]]:
    """One CSV row per run, best val/iou first."""
    rows = []
    for run in runs:
        row: dict[str, str | float | int] = {
            "run": run.name,
            "overrides": run.label,
            "seed": "" if run.seed is None else run.seed,
            "best_val_iou": _number(run.best_iou),
            "best_epoch": "" if run.best_epoch is None else run.best_epoch,
            "final_val_iou": _number(run.final_iou),
        }
        for metric in metrics:
            row[f"{metric_column(metric)}_at_best"] = _number(run.at_best(metric))
        row["train_time_s"] = _number(run.train_time_s)
        row["per_image_val"] = "yes" if run.per_image is not None else "no"
        rows.append(row)
    return rows


def write_csv(rows: Sequence[dict[str, str | float | int]], path: Path) -> None:
    """Rows as CSV at full precision, for pandas or a spreadsheet."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def _cell(text: str | int | float | None) -> str:
    """Markdown cell text with pipes escaped."""
    return "" if text is None else str(text).replace("|", "\\|")


def _fixed(value: float | None, decimals: int = 4) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def _spread_cells(spread: Spread | None) -> list[str]:
    """``mean ± std`` and ``[low, high]`` (the mean alone for a single run)."""
    if spread is None:
        return ["", ""]
    if spread.std is None or spread.low is None or spread.high is None:
        return [_fixed(spread.mean), ""]
    return [f"{spread.mean:.4f} ± {spread.std:.4f}", f"[{spread.low:.4f}, {spread.high:.4f}]"]


def _table(header: Sequence[str], align: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def format_markdown(
    runs: Sequence[RunSummary],
    configurations: Sequence[Configuration],
    metrics: Sequence[str],
    baseline: Configuration | None,
) -> str:
    """The comparison as GitHub-flavoured Markdown: configurations, runs, what was not ranked."""
    percent = f"{CONFIDENCE:.0%}"
    measured = f"Best {VAL_IOU}"
    if metrics:
        measured += " and " + ", ".join(f"`{m}`" for m in metrics) + " (at the epoch of each run's best)"
    lines = [
        f"Configurations: runs whose overrides differ only by `seed`. {measured}: mean ± standard "
        f"deviation over the runs, and the {percent} t interval of the mean."
    ]
    labels = short_labels(configurations)
    if baseline is not None:
        baseline_label = labels[list(configurations).index(baseline)]
        lines.append(
            f"Against the baseline `{baseline_label}`: mean per-image IoU difference on the same validation "
            f"images (runs paired by seed, pooled), its {percent} bootstrap interval over images "
            f"({BOOTSTRAP_RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED}), the shares of images better / "
            "worse, and the verdict: better or worse when the interval excludes 0."
        )
    shared = shared_overrides(configurations)
    if shared:
        lines.append("All runs: " + ", ".join(f"`{o}`" for o in shared) + ".")
    lines.append("")

    header = ["configuration", "runs", "seeds", f"best {VAL_IOU}", f"{percent} CI"]
    align = [":---", "---:", ":---", "---:", "---:"]
    for metric in metrics:
        header += [metric, f"{percent} CI"]
        align += ["---:", "---:"]
    if baseline is not None:
        header += ["Δ IoU vs baseline", f"{percent} CI", "images better / worse", "verdict"]
        align += ["---:", "---:", "---:", ":---"]
    body = []
    for configuration, short in zip(configurations, labels, strict=True):
        seeds = ",".join(str(seed) for seed in configuration.seeds if seed is not None)
        row = [short, str(len(configuration.runs)), seeds, *_spread_cells(configuration.spread())]
        for metric in metrics:
            row += _spread_cells(configuration.spread(metric))
        if baseline is not None:
            paired = configuration.paired
            if configuration is baseline:
                row += ["", "", "", "baseline"]
            elif paired is None:
                row += ["", "", "", "not paired"]
            else:
                row += [
                    f"{paired.mean:+.4f}",
                    f"[{paired.low:+.4f}, {paired.high:+.4f}]",
                    f"{paired.share_better:.0%} / {paired.share_worse:.0%}",
                    paired.verdict,
                ]
        body.append(row)
    lines += _table(header, align, body)

    lines += ["", "Runs, best first:", ""]
    header = ["run", "seed", f"best {VAL_IOU}", "epoch of best", f"final {VAL_IOU}"]
    header += [f"{m} at best" for m in metrics] + ["train time (s)"]
    align = [":---"] + ["---:"] * (len(header) - 1)
    body = [
        [
            run.name,
            "" if run.seed is None else str(run.seed),
            _fixed(run.best_iou),
            "" if run.best_epoch is None else str(run.best_epoch),
            _fixed(run.final_iou),
            *(_fixed(run.at_best(m)) for m in metrics),
            _fixed(run.train_time_s, 1),
        ]
        for run in runs
    ]
    lines += _table(header, align, body)

    not_ranked = [entry for configuration in configurations for entry in configuration.not_ranked]
    if not_ranked:
        lines += ["", "Not ranked or not paired:", ""] + [f"- {entry}" for entry in not_ranked]
    return "\n".join(lines) + "\n"


# ---- the plot ----------------------------------------------------------------------------------


def plot_iou_curves(configurations: Sequence[Configuration], path: Path | None = None) -> Figure:
    """val/iou per epoch: each configuration's mean over its runs, with a band from the lowest to the
    highest run, one colour per configuration; saved to ``path`` if given.

    At each epoch the mean and band are over the runs that validated it (time-limited runs may end
    on different epochs). The figure is built without pyplot, so no GUI backend or global state.
    """
    plotted = [c for c in configurations if c.ranked]
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.add_subplot()
    labels = short_labels(plotted) if plotted else []
    # 10 colours x 3 line styles keep up to 30 configurations distinguishable.
    colours = [f"C{i}" for i in range(10)]
    styles = ["-", "--", ":"]
    for i, (configuration, label) in enumerate(zip(plotted, labels, strict=True)):
        by_epoch: dict[int, list[float]] = {}
        for run in configuration.ranked:
            for epoch, value in run.iou_curve:
                by_epoch.setdefault(epoch, []).append(value)
        epochs = sorted(by_epoch)
        values = [np.asarray(by_epoch[e]) for e in epochs]
        colour = colours[i % len(colours)]
        n = len(configuration.ranked)
        ax.plot(
            epochs,
            [v.mean() for v in values],
            label=f"{label} (n={n})" if n > 1 else label,
            color=colour,
            linestyle=styles[(i // len(colours)) % len(styles)],
            marker="o" if len(epochs) <= 30 else None,
            markersize=3,
            linewidth=1.5,
        )
        if n > 1:
            ax.fill_between(
                epochs, [v.min() for v in values], [v.max() for v in values], color=colour, alpha=0.2
            )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("val/iou (mean per-image IoU)")
    title = (
        f"val/iou per epoch, {len(plotted)} configuration(s): mean of the runs, band from lowest to highest"
    )
    shared = shared_overrides(plotted)
    if shared:
        # wrapped: a sweep over a dataset path would otherwise run off the figure
        title += "\n" + textwrap.fill("all runs: " + ", ".join(shared), width=110)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    if plotted:
        # Outside the axes so 20 labels never hide the curves; listed best configuration first.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="overrides")
    else:
        ax.text(0.5, 0.5, "no run logged val/iou", ha="center", va="center", transform=ax.transAxes)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


# ---- the command -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (1 when there is nothing to compare)."""
    parser = argparse.ArgumentParser(
        prog="petloc-compare",
        description="Compare runs and configurations (runs differing only by seed): writes comparison.csv, "
        "comparison_runs.csv, comparison.md and iou_curves.png, and prints the Markdown.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a sweep folder or a run folder")
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="SCALAR",
        help="another scalar to tabulate, at each run's best val/iou epoch (e.g. val/acc75); repeatable",
    )
    parser.add_argument(
        "--baseline",
        metavar="RUN|CONFIGURATION",
        help="compare every configuration with this one on the same validation images: a run's name, a "
        "configuration's overrides, or overrides only one configuration has (e.g. loss=giou)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first DIR)")
    args = parser.parse_args(argv)

    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"petloc-compare: not a folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    runs = compare_runs(args.dirs)
    if not runs:
        print(
            f"petloc-compare: no run folder (one with {SCALARS_CSV} or tensorboard/{EVENT_FILE_GLOB}) found "
            "under " + ", ".join(map(str, args.dirs)),
            file=sys.stderr,
        )
        return 1
    configurations = group_runs(runs)
    baseline = None
    if args.baseline is not None:
        try:
            baseline = resolve_baseline(args.baseline, configurations)
        except ValueError as err:
            print(f"petloc-compare: {err}", file=sys.stderr)
            return 1
        compare_with(configurations, baseline)

    out = args.out if args.out is not None else args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(runs, configurations, args.metric, baseline)
    (out / MARKDOWN_NAME).write_text(markdown)
    write_csv(configuration_rows(configurations, args.metric, baseline), out / CSV_NAME)
    write_csv(run_rows(runs, args.metric), out / RUNS_CSV_NAME)
    plot_iou_curves(configurations, out / PLOT_NAME)
    print(markdown, end="")
    for configuration in configurations:
        for entry in configuration.not_ranked:
            print(f"petloc-compare: not ranked or not paired: {entry}", file=sys.stderr)
    print(
        f"petloc-compare: {len(runs)} run(s) in {len(configurations)} configuration(s); wrote {CSV_NAME}, "
        f"{RUNS_CSV_NAME}, {MARKDOWN_NAME}, {PLOT_NAME} to {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
