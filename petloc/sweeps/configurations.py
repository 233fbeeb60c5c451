"""Configurations: runs whose overrides differ only by ``seed``, and each one paired with a baseline
on the same validation images (:func:`compare`).

The baseline is the configuration the user names, or else the best one (by mean best val/iou), so a
comparison always says which configurations are worse than the best beyond run-to-run noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from petloc.run_dir import NAMES
from petloc.sweeps.runs import VAL_IOU, RunSummary, read_runs
from petloc.sweeps.stats import PairedDifference, Spread, paired_bootstrap, t_interval


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


def best_configuration(configurations: Sequence[Configuration]) -> Configuration | None:
    """The configuration with the highest mean best val/iou (the first on ties); None if no run has one."""
    scored = [(spread.mean, c) for c in configurations if (spread := c.spread()) is not None]
    return max(scored, key=lambda scored_one: scored_one[0], default=(None, None))[1]


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
            problems.append(f"{run.name}: no {run.run_dir.per_image_val.name}")
            continue
        partners = [b for b in baseline.ranked if b.seed == run.seed]
        if not partners:
            seeds = ", ".join(str(seed) for seed in baseline.seeds)
            problems.append(f"{run.name}: no baseline run with seed {run.seed} (baseline seeds: {seeds})")
            continue
        for partner in partners:
            if partner.per_image is None:
                missing = partner.run_dir.per_image_val.name
                problems.append(f"{run.name}: its baseline partner {partner.name} has no {missing}")
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


@dataclass
class Comparison:
    """The runs below the compared folders, their configurations (best first), and the baseline every
    other configuration was paired with (None when no run logged val/iou)."""

    runs: list[RunSummary]
    configurations: list[Configuration]
    baseline: Configuration | None
    # True: the baseline the user named; False: the best configuration
    baseline_named: bool


def compare(dirs: Sequence[Path], baseline: str | None = None) -> Comparison:
    """Read every run below ``dirs``, group the runs into configurations and pair each configuration
    with ``baseline`` (see :func:`resolve_baseline`), or with the best configuration when it is None.

    Raises ValueError when a DIR is not a folder, no run folder is below them, or ``baseline`` names
    no single configuration.
    """
    missing = [str(d) for d in dirs if not Path(d).is_dir()]
    if missing:
        raise ValueError(f"not a folder: {', '.join(missing)}")
    runs = read_runs(dirs)
    if not runs:
        raise ValueError(
            f"no run folder (one with {NAMES['metrics_csv']} or TensorBoard event files) found under "
            + ", ".join(map(str, dirs))
        )
    configurations = group_runs(runs)
    chosen = (
        resolve_baseline(baseline, configurations)
        if baseline is not None
        else best_configuration(configurations)
    )
    if chosen is not None:
        compare_with(configurations, chosen)
    return Comparison(runs, configurations, chosen, baseline_named=baseline is not None)
