"""``petloc-compare``: one table and one plot for a sweep, read from the runs' TensorBoard event files.

The event files are the one record every run leaves, finished or killed, so the comparison is built
from them rather than from ``metrics.json`` (which only a finished run writes). Usage::

    petloc-compare DIR [DIR ...] [--out OUTDIR]

writes ``comparison.csv``, ``comparison.md`` and ``iou_curves.png`` into OUTDIR (default: the first DIR)
and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

VAL_IOU = "val/iou"
VAL_ACC50 = "val/acc50"
EPOCH = "epoch"
EVENT_FILE_GLOB = "events.out.tfevents.*"

CSV_NAME = "comparison.csv"
MARKDOWN_NAME = "comparison.md"
PLOT_NAME = "iou_curves.png"

# (CSV column, Markdown header): the CSV keeps machine-friendly names, the Markdown the scalar names.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "run"),
    ("overrides", "overrides"),
    ("best_val_iou", "best val/iou"),
    ("best_epoch", "epoch of best"),
    ("final_val_acc50", "final val/acc50"),
    ("final_val_iou", "final val/iou"),
    ("train_time_s", "train time (s)"),
)


@dataclass
class RunSummary:
    """What the comparison needs from one run folder; metrics a run never logged are ``None``."""

    path: Path
    name: str
    overrides: list[str]
    iou_curve: list[tuple[int, float]] = field(default_factory=list)
    final_acc50: float | None = None
    train_time_s: float | None = None

    @property
    def label(self) -> str:
        """The overrides as Hydra joins them into a sweep folder's name; the folder name if there are none."""
        return ",".join(self.overrides) if self.overrides else self.path.name

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

    def row(self) -> dict[str, str | int | float | None]:
        """The table row, keyed by the CSV column names."""
        return {
            "run": self.name,
            "overrides": self.label,
            "best_val_iou": self.best_iou,
            "best_epoch": self.best_epoch,
            "final_val_acc50": self.final_acc50,
            "final_val_iou": self.final_iou,
            "train_time_s": self.train_time_s,
        }


def find_run_dirs(root: Path) -> list[Path]:
    """Run folders at or below ``root``: any folder whose ``tensorboard/`` holds event files.

    Searching at any depth covers a single run, a sweep, and a multirun folder holding several sweeps.
    """
    candidates = [root / "tensorboard", *root.rglob("tensorboard")]
    return sorted({tb.parent for tb in candidates if tb.is_dir() and any(tb.glob(EVENT_FILE_GLOB))})


def read_overrides(run_dir: Path) -> list[str]:
    """The job's command-line overrides from Hydra's ``.hydra/overrides.yaml``; empty if absent."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    loaded = yaml.safe_load(path.read_text())
    return [str(item) for item in loaded] if isinstance(loaded, list) else []


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


def _iou_curve(accumulator: EventAccumulator, tags: set[str]) -> list[tuple[int, float]]:
    """val/iou as (epoch, value) pairs in epoch order.

    Steps are global steps, not epochs: Lightning logs its ``epoch`` scalar at the same step as the val
    metrics, so each point takes the epoch logged at its step, or its index when there is none.
    """
    if VAL_IOU not in tags:
        return []
    epochs_at_step: dict[int, list[tuple[float, float]]] = {}
    if EPOCH in tags:
        for event in accumulator.Scalars(EPOCH):
            epochs_at_step.setdefault(event.step, []).append((event.wall_time, event.value))
    by_epoch: dict[int, float] = {}
    # In logging order: the accumulator reads event files by name, which orders two files written in
    # the same second by a counter compared as text ("...10" before "...9").
    logged = sorted(accumulator.Scalars(VAL_IOU), key=lambda e: e.wall_time)
    for index, event in enumerate(logged):
        # A training log can share the step; the epoch logged with this val/iou is the closest in time.
        same_step = epochs_at_step.get(event.step, [])
        closest = min(same_step, key=lambda c: abs(c[0] - event.wall_time), default=None)
        epoch = index if closest is None else round(closest[1])
        # A resumed run logs the epochs after its checkpoint again, later: the later value is the one
        # the run continued from.
        by_epoch[epoch] = event.value
    return sorted(by_epoch.items())


def read_run(run_dir: Path, name: str) -> RunSummary:
    """Read one run's event files (every file in ``tensorboard/``, so resumed runs are read whole)."""
    # Keep every scalar (the default reservoir samples long runs) and just one image: none is needed.
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={SCALARS: 0, IMAGES: 1})
    accumulator.Reload()
    tags = set(accumulator.Tags()[SCALARS])
    summary = RunSummary(
        path=run_dir,
        name=name,
        overrides=read_overrides(run_dir),
        iou_curve=_iou_curve(accumulator, tags),
    )
    if VAL_ACC50 in tags:
        summary.final_acc50 = max(accumulator.Scalars(VAL_ACC50), key=lambda e: (e.wall_time, e.step)).value
    summary.train_time_s = _metrics_train_time(run_dir)
    if summary.train_time_s is None and tags:
        # Without the trainer's own measure, the span of the logged scalars approximates it.
        wall_times = [event.wall_time for tag in tags for event in accumulator.Scalars(tag)]
        summary.train_time_s = max(wall_times) - min(wall_times)
    return summary


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


def _cell(value: str | int | float | None, decimals: int) -> str:
    """Markdown cell text: fixed decimals for floats, empty for a missing metric, pipes escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value).replace("|", "\\|")


def format_markdown(runs: Sequence[RunSummary]) -> str:
    """The comparison as a GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(header for _, header in COLUMNS) + " |",
        "|" + "|".join(":---" if key in ("run", "overrides") else "---:" for key, _ in COLUMNS) + "|",
    ]
    for run in runs:
        row = run.row()
        cells = [_cell(row[key], 1 if key == "train_time_s" else 4) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(runs: Sequence[RunSummary], path: Path) -> None:
    """The comparison as CSV at full precision, for pandas or a spreadsheet; missing metrics are empty."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[key for key, _ in COLUMNS])
        writer.writeheader()
        for run in runs:
            writer.writerow({key: "" if value is None else value for key, value in run.row().items()})


def _legend_labels(runs: Sequence[RunSummary]) -> tuple[list[str], list[str]]:
    """Per-run legend labels without the overrides every run shares, and those shared ones.

    A sweep usually repeats settings such as ``trainer.max_epochs=30`` in every job; shown once in the
    title instead, the legend keeps only what tells the curves apart. A run left with no label of its
    own, or sharing it with a run of another sweep, is named by its path so that no two curves look alike.
    """
    override_sets = [set(run.overrides) for run in runs]
    shared = set.intersection(*override_sets) if len(runs) > 1 and all(override_sets) else set()
    labels = [",".join(o for o in run.overrides if o not in shared) or run.name for run in runs]
    labels = [
        f"{label} ({run.name})" if labels.count(label) > 1 else label
        for run, label in zip(runs, labels, strict=True)
    ]
    return labels, [o for o in runs[0].overrides if o in shared]


def plot_iou_curves(runs: Sequence[RunSummary], path: Path | None = None) -> Figure:
    """val/iou per epoch, one line per run labelled by its overrides; saved to ``path`` if given.

    The figure is built without pyplot, so no GUI backend or global figure state is involved.
    """
    plotted = [run for run in runs if run.iou_curve]
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.add_subplot()
    labels, shared = _legend_labels(plotted) if plotted else ([], [])
    # 10 colours x 3 line styles keep up to 30 runs distinguishable.
    colours = [f"C{i}" for i in range(10)]
    styles = ["-", "--", ":"]
    for i, (run, label) in enumerate(zip(plotted, labels, strict=True)):
        epochs = [epoch for epoch, _ in run.iou_curve]
        values = [value for _, value in run.iou_curve]
        ax.plot(
            epochs,
            values,
            label=label,
            color=colours[i % len(colours)],
            linestyle=styles[(i // len(colours)) % len(styles)],
            marker="o" if len(epochs) <= 30 else None,
            markersize=3,
            linewidth=1.5,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("val/iou (mean per-image IoU)")
    title = f"val/iou per epoch, {len(plotted)} run(s)"
    if shared:
        # wrapped: a sweep over a dataset path would otherwise run off the figure
        title += "\n" + textwrap.fill("all runs: " + ", ".join(shared), width=110)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    if plotted:
        # Outside the axes so 20 labels never hide the curves; listed best run first.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="overrides")
    else:
        ax.text(0.5, 0.5, "no run logged val/iou", ha="center", va="center", transform=ax.transAxes)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (1 when there is nothing to compare)."""
    parser = argparse.ArgumentParser(
        prog="petloc-compare",
        description="Compare runs from their TensorBoard logs: writes comparison.csv, comparison.md "
        "and iou_curves.png, and prints the table.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a sweep folder or a run folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first DIR)")
    args = parser.parse_args(argv)

    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"petloc-compare: not a folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    runs = compare_runs(args.dirs)
    if not runs:
        print(
            f"petloc-compare: no run folder (one with tensorboard/{EVENT_FILE_GLOB}) found under "
            + ", ".join(map(str, args.dirs)),
            file=sys.stderr,
        )
        return 1
    without_iou = [run.name for run in runs if run.best_iou is None]
    if without_iou:
        print(
            f"petloc-compare: {len(without_iou)} run(s) have no {VAL_IOU} yet, listed last with empty "
            f"cells: {', '.join(without_iou)}",
            file=sys.stderr,
        )

    out = args.out if args.out is not None else args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    table = format_markdown(runs)
    (out / MARKDOWN_NAME).write_text(table)
    write_csv(runs, out / CSV_NAME)
    plot_iou_curves(runs, out / PLOT_NAME)
    print(table, end="")
    print(
        f"petloc-compare: {len(runs)} run(s); wrote {CSV_NAME}, {MARKDOWN_NAME}, {PLOT_NAME} to {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
