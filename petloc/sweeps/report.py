"""A :class:`~petloc.sweeps.configurations.Comparison` as files: ``comparison.csv`` (one row per
configuration), ``comparison_runs.csv`` (one row per run), ``comparison.md`` (both tables and the runs
that could not be ranked or paired, with the reason) and ``iou_curves.png`` (:func:`write_report`).
"""

from __future__ import annotations

import csv
import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from petloc.sweeps.configurations import Comparison, Configuration
from petloc.sweeps.runs import VAL_IOU, RunSummary
from petloc.sweeps.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, Spread

CSV_NAME = "comparison.csv"
RUNS_CSV_NAME = "comparison_runs.csv"
MARKDOWN_NAME = "comparison.md"
PLOT_NAME = "iou_curves.png"
REPORT_FILES = (CSV_NAME, RUNS_CSV_NAME, MARKDOWN_NAME, PLOT_NAME)

Row = dict[str, str | float | int]


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


def configuration_rows(comparison: Comparison, metrics: Sequence[str]) -> list[Row]:
    """One CSV row per configuration, at full precision; missing values are empty."""
    rows = []
    configurations = comparison.configurations
    for configuration, short in zip(configurations, short_labels(configurations), strict=True):
        row: Row = {
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
        is_baseline = configuration is comparison.baseline
        row["verdict"] = paired.verdict if paired else ("baseline" if is_baseline else "")
        row["not_ranked"] = "; ".join(configuration.not_ranked)
        rows.append(row)
    return rows


def run_rows(runs: Sequence[RunSummary], metrics: Sequence[str]) -> list[Row]:
    """One CSV row per run, best val/iou first."""
    rows = []
    for run in runs:
        row: Row = {
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


def write_csv(rows: Sequence[Row], path: Path) -> None:
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


def format_markdown(comparison: Comparison, metrics: Sequence[str]) -> str:
    """The comparison as GitHub-flavoured Markdown: configurations, runs, what was not ranked."""
    configurations, baseline = comparison.configurations, comparison.baseline
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
        which = "" if comparison.baseline_named else " (the best configuration: no --baseline given)"
        lines.append(
            f"Against the baseline `{baseline_label}`{which}: mean per-image IoU difference on the same "
            f"validation images (runs paired by seed, pooled), its {percent} bootstrap interval over images "
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
        for run in comparison.runs
    ]
    lines += _table(header, align, body)

    not_ranked = [entry for configuration in configurations for entry in configuration.not_ranked]
    if not_ranked:
        lines += ["", "Not ranked or not paired:", ""] + [f"- {entry}" for entry in not_ranked]
    return "\n".join(lines) + "\n"


def legend_label(label: str, width: int = 50) -> str:
    """``label`` broken after its commas into lines of at most ``width`` characters (where its
    overrides allow): a long list of overrides on one line would squeeze the axes out of the figure."""
    parts = label.split(",")
    lines: list[str] = []
    for part in [p + "," for p in parts[:-1]] + parts[-1:]:
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
        else:
            lines.append(part)
    return "\n".join(lines)


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
            label=legend_label(f"{label} (n={n})" if n > 1 else label),
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


def write_report(comparison: Comparison, metrics: Sequence[str], out: Path) -> str:
    """Write :data:`REPORT_FILES` into ``out`` (created if missing); returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(comparison, metrics)
    (out / MARKDOWN_NAME).write_text(markdown)
    write_csv(configuration_rows(comparison, metrics), out / CSV_NAME)
    write_csv(run_rows(comparison.runs, metrics), out / RUNS_CSV_NAME)
    plot_iou_curves(comparison.configurations, out / PLOT_NAME)
    return markdown
