"""petloc.sweeps.configurations: runs grouped into configurations and paired with a baseline, on run
folders written with the standard library (tests/sweep_helpers.py) with planted per-image differences.
Statistics are checked against scipy.stats and numpy formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from petloc.sweeps.configurations import Comparison, Configuration, compare, group_runs
from petloc.sweeps.report import plot_iou_curves
from petloc.sweeps.runs import read_runs
from petloc.sweeps.stats import PairedDifference
from tests.sweep_helpers import (
    BEST_EPOCH,
    COMMON_OVERRIDE,
    N_IMAGES,
    SEEDS,
    SHIFTS,
    CsvRun,
    FakeRun,
    baseline_ious,
    seeded_run,
    write_csv_run,
    write_fake_sweep,
)


def by_label(comparison: Comparison) -> dict[str, Configuration]:
    """Configurations by their overrides without the one all share."""
    return {c.label.removesuffix(f",{COMMON_OVERRIDE}"): c for c in comparison.configurations}


def verdicts(comparison: Comparison) -> dict[str, str | None]:
    """Each configuration's verdict against the baseline (None: the baseline, or not paired)."""
    return {name: c.paired.verdict if c.paired else None for name, c in by_label(comparison).items()}


def paired(comparison: Comparison, name: str) -> PairedDifference:
    result = by_label(comparison)[name].paired
    assert result is not None, f"{name} was not paired"
    return result


def pooled_differences(name: str) -> list[float]:
    """The oracle: every seed's per-image IoU differences from the baseline's, pooled."""
    return [
        seeded_run(name, seed).per_image[image] - iou  # type: ignore[index]
        for seed in SEEDS
        for image, iou in baseline_ious(seed).items()
    ]


def test_runs_that_differ_only_by_seed_form_one_configuration(seeded_csv_sweep: Path) -> None:
    configurations = group_runs(read_runs([seeded_csv_sweep]))

    assert sorted(c.label for c in configurations) == sorted(f"{c},{COMMON_OVERRIDE}" for c in SHIFTS)
    for configuration in configurations:
        assert configuration.seeds == list(SEEDS)
        assert [run.best_epoch for run in configuration.runs] == [BEST_EPOCH] * 3  # the logged epoch
        best = [seeded_run(configuration.key[0], seed).val_iou[BEST_EPOCH] for seed in SEEDS]
        spread = configuration.spread()
        assert spread is not None and spread.n == 3
        assert spread.mean == pytest.approx(np.mean(best))
        assert spread.std == pytest.approx(np.std(best, ddof=1))
        low, high = stats.t.interval(0.95, df=2, loc=np.mean(best), scale=stats.sem(best))
        assert (spread.low, spread.high) == (pytest.approx(low), pytest.approx(high))


def test_several_dirs_get_distinct_names_and_repeated_configurations_are_grouped(tmp_path: Path) -> None:
    first = write_fake_sweep(
        tmp_path / "sweep_a", {"alpha=0.5": FakeRun({0: 0.5}), "alpha=1.0": FakeRun({0: 0.375})}
    )
    second = write_fake_sweep(tmp_path / "sweep_b", {"alpha=0.5": FakeRun({0: 0.25})})

    runs = read_runs([first, second])

    assert [run.name for run in runs] == ["sweep_a/alpha=0.5", "sweep_a/alpha=1.0", "sweep_b/alpha=0.5"]
    # the same overrides twice: two runs of one configuration, drawn as their mean with a band
    configurations = group_runs(runs)
    assert [[run.name for run in c.runs] for c in configurations] == [
        ["sweep_a/alpha=0.5", "sweep_b/alpha=0.5"],
        ["sweep_a/alpha=1.0"],
    ]
    legend = plot_iou_curves(configurations).axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["alpha=0.5 (n=2)", "alpha=1.0"]


def test_baseline_marks_better_worse_and_not_distinguishable(seeded_csv_sweep: Path) -> None:
    comparison = compare([seeded_csv_sweep], "loss=giou")

    assert comparison.baseline is by_label(comparison)["loss=giou"] and comparison.baseline_named
    assert verdicts(comparison) == {
        "loss=giou": None,  # the baseline
        "loss=ciou": "better",  # the planted +0.1
        "loss=mse": "worse",
        "loss=diou": "not distinguishable",  # identical to the baseline
    }
    diou = paired(comparison, "loss=diou")
    assert (diou.low, diou.high) == (0.0, 0.0)
    for name in ("loss=ciou", "loss=mse"):
        pooled = pooled_differences(name)
        difference = paired(comparison, name)
        assert difference.n == len(SEEDS) * N_IMAGES
        assert difference.mean == pytest.approx(np.mean(pooled))
        assert difference.low < np.mean(pooled) < difference.high
        assert difference.share_better == pytest.approx(np.mean(np.asarray(pooled) > 0))
        assert difference.share_worse == pytest.approx(np.mean(np.asarray(pooled) < 0))
    ciou = paired(comparison, "loss=ciou")
    assert (ciou.mean, ciou.share_better) == (pytest.approx(0.1, abs=1e-5), 1.0)
    assert all(not c.not_ranked for c in comparison.configurations)


def test_without_a_baseline_the_best_configuration_is_the_baseline(seeded_csv_sweep: Path) -> None:
    comparison = compare([seeded_csv_sweep])

    # the planted +0.1 makes ciou the best; every other configuration is compared with it
    assert comparison.baseline is by_label(comparison)["loss=ciou"] and not comparison.baseline_named
    assert verdicts(comparison) == {
        "loss=ciou": None,
        "loss=giou": "worse",
        "loss=diou": "worse",
        "loss=mse": "worse",
    }
    assert paired(comparison, "loss=giou").mean == pytest.approx(-np.mean(pooled_differences("loss=ciou")))


def test_the_same_comparison_twice_gives_the_same_intervals(seeded_csv_sweep: Path) -> None:
    first, second = (compare([seeded_csv_sweep], "loss=giou,seed=1") for _ in range(2))

    assert first.baseline is not None and first.baseline.label == f"loss=giou,{COMMON_OVERRIDE}"
    assert [c.paired for c in first.configurations] == [c.paired for c in second.configurations]


def test_runs_that_cannot_be_ranked_or_paired_are_named_with_the_reason(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    giou = {seed: seeded_run("loss=giou", seed) for seed in (0, 1)}
    runs = {
        "loss=giou,seed=0": giou[0],
        "loss=giou,seed=1": giou[1],
        "loss=mse,seed=0": CsvRun({1: 0.5}, seed=0),  # no per_image_val.csv
        "loss=mse,seed=1": seeded_run("loss=mse", 1),
        "loss=sqrt_wh,seed=0": CsvRun({1: 0.5}, seed=0, per_image=baseline_ious(1)),  # seed 1's images
        "loss=smooth_l1,seed=0": CsvRun({}, n_epochs=1, seed=0),  # stopped before validating
        "loss=diou,seed=5": CsvRun({1: 0.5}, seed=5, per_image=baseline_ious(5)),
    }
    for name, run in runs.items():
        write_csv_run(root / name, run, name.split(","))

    comparison = compare([root], "loss=giou,seed=0")

    configurations = {c.label: c for c in comparison.configurations}
    assert configurations["loss=mse"].not_ranked == ["loss=mse,seed=0: no per_image_val.csv"]
    assert configurations["loss=sqrt_wh"].not_ranked == [
        "loss=sqrt_wh,seed=0: different validation images than loss=giou,seed=0"
    ]
    assert configurations["loss=smooth_l1"].not_ranked == [
        "loss=smooth_l1,seed=0: no val/iou logged (stopped before its first validation)"
    ]
    assert configurations["loss=diou"].not_ranked == [
        "loss=diou,seed=5: no baseline run with seed 5 (baseline seeds: 0, 1)"
    ]
    mse = paired(comparison, "loss=mse")
    assert (mse.verdict, mse.n) == ("worse", N_IMAGES)  # seed 1 still pairs
    assert all(configurations[c].paired is None for c in ("loss=sqrt_wh", "loss=smooth_l1", "loss=diou"))


@pytest.mark.parametrize(
    ("baseline", "message"),
    [("loss=nothing", "matches no run or configuration"), (COMMON_OVERRIDE, "matches 4 configurations")],
)
def test_a_baseline_that_names_no_single_configuration_is_an_error(
    baseline: str, message: str, seeded_csv_sweep: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        compare([seeded_csv_sweep], baseline)


def test_nothing_to_compare_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "tensorboard").mkdir(parents=True)  # a tensorboard folder without event files

    with pytest.raises(ValueError, match="no run folder"):
        compare([tmp_path / "empty"])
    with pytest.raises(ValueError, match=f"not a folder: {tmp_path / 'missing'}"):
        compare([tmp_path / "missing"])
