"""``petloc-compare``: which configurations of a sweep are better than which, beyond run-to-run noise.

Usage::

    petloc-compare DIR [DIR ...] [--metric SCALAR ...] [--baseline RUN|CONFIGURATION] [--out OUTDIR]

Every run folder below the DIRs is read (:mod:`petloc.sweeps.runs`). Runs whose overrides differ only
by ``seed`` form one configuration: per configuration, the mean, standard deviation and 95% t interval
of the runs' best val/iou and of each ``--metric`` (its value at the epoch of the run's best val/iou).
Every configuration is compared on the same validation images with the baseline, ``--baseline`` or
else the best configuration: a bootstrap over images of the mean per-image IoU difference, with its
95% interval, the shares of images better and worse, and a verdict (better / worse / not
distinguishable: whether the interval excludes 0) (:mod:`petloc.sweeps.configurations`). Writes into
OUTDIR (default: the first DIR) comparison.csv, comparison_runs.csv, comparison.md (also printed) and
iou_curves.png (:mod:`petloc.sweeps.report`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from petloc.sweeps.configurations import compare
from petloc.sweeps.report import REPORT_FILES, write_report


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (1 when there is nothing to compare)."""
    parser = argparse.ArgumentParser(
        prog="petloc-compare",
        description="Compare runs and configurations (runs differing only by seed): writes "
        f"{', '.join(REPORT_FILES)}, and prints the Markdown.",
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
        "configuration's overrides, or overrides only one configuration has (e.g. loss=giou); "
        "default: the configuration with the best mean val/iou",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first DIR)")
    args = parser.parse_args(argv)

    try:
        comparison = compare(args.dirs, args.baseline)
    except ValueError as err:
        print(f"petloc-compare: {err}", file=sys.stderr)
        return 1
    out = args.out if args.out is not None else args.dirs[0]
    print(write_report(comparison, args.metric, out), end="")
    for configuration in comparison.configurations:
        for entry in configuration.not_ranked:
            print(f"petloc-compare: not ranked or not paired: {entry}", file=sys.stderr)
    print(
        f"petloc-compare: {len(comparison.runs)} run(s) in {len(comparison.configurations)} "
        f"configuration(s); wrote {', '.join(REPORT_FILES)} to {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
