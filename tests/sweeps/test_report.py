"""petloc.sweeps.report: a comparison as comparison.csv, comparison_runs.csv, comparison.md and
iou_curves.png, of the fake TensorBoard sweep and of run folders written with the standard library
(tests/sweep_helpers.py); the CSVs are read back with the csv module, the PNG with matplotlib."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from petloc.sweeps.configurations import compare, group_runs
from petloc.sweeps.report import plot_iou_curves, write_report
from petloc.sweeps.runs import read_runs
from tests.sweep_helpers import (
    BEST_EPOCH,
    COMMON_OVERRIDE,
    EXPECTED_BEST,
    EXPECTED_ORDER,
    N_IMAGES,
    SEEDS,
    SHIFTS,
    VALIDATED,
    FakeRun,
    acc75_for,
    seeded_run,
    sweep_overrides,
    write_fake_sweep,
)


def read_rows(path: Path, key: str) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row[key]: row for row in csv.DictReader(handle)}


def test_plot_has_one_labelled_line_per_run(tensorboard_sweep: Path) -> None:
    fig = plot_iou_curves(group_runs(read_runs([tensorboard_sweep])))

    ax = fig.axes[0]
    # The override shared by every job moves to the title; the legend keeps what differs.
    labels = [Path(name).name for name in EXPECTED_ORDER]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == labels
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert len(ax.get_lines()) == 4
    assert list(lines["alpha=0.5,loss=giou"].get_xdata()) == [1, 3, 5, 7]
    assert list(lines["alpha=0.5,loss=giou"].get_ydata()) == [0.375, 0.625, 0.75, 0.6875]
    assert COMMON_OVERRIDE in ax.get_title()
    assert ax.get_xlabel() == "epoch"
    assert "val/iou" in ax.get_ylabel()


def test_the_plot_draws_each_configurations_mean_with_a_band(seeded_csv_sweep: Path) -> None:
    configurations = group_runs(read_runs([seeded_csv_sweep]))

    ax = plot_iou_curves(configurations).axes[0]

    assert len(ax.get_lines()) == len(SHIFTS) == len(ax.collections)  # one band per configuration
    assert {line.get_color() for line in ax.get_lines()} == {f"C{i}" for i in range(len(SHIFTS))}
    lines = {str(line.get_label()): line for line in ax.get_lines()}
    mse = lines["loss=mse (n=3)"]
    assert list(mse.get_xdata()) == list(VALIDATED)
    best = [seeded_run("loss=mse", seed).val_iou[BEST_EPOCH] for seed in SEEDS]
    assert mse.get_ydata()[1] == pytest.approx(np.mean(best))


def test_long_labels_are_broken_after_their_commas(tmp_path: Path) -> None:
    overrides = [f"option_{i}=value_{i}" for i in range(8)]
    root = write_fake_sweep(tmp_path / "sweep", {",".join(overrides): FakeRun({0: 0.5})})

    (text,) = plot_iou_curves(group_runs(read_runs([root]))).axes[0].get_legend().get_texts()

    lines = text.get_text().split("\n")
    assert len(lines) > 1 and all(len(line) <= 50 for line in lines)
    assert "".join(lines) == ",".join([*overrides, COMMON_OVERRIDE])


def test_report_writes_csv_markdown_and_png(tensorboard_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"

    markdown = write_report(compare([tensorboard_sweep]), [], out)

    with (out / "comparison_runs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == EXPECTED_ORDER
    for row in rows:
        assert (float(row["best_val_iou"]), int(row["best_epoch"])) == EXPECTED_BEST[row["run"]]
        assert row["overrides"] == ",".join(sweep_overrides(row["run"]))
        assert row["per_image_val"] == "no"
    assert float(rows[-1]["train_time_s"]) == 123.5
    assert float(rows[0]["final_val_iou"]) == 0.6875
    with (out / "comparison.csv").open(newline="") as handle:
        configurations = list(csv.DictReader(handle))
    # one run each: its best val/iou is the mean, with no spread
    assert [float(row["best_val_iou_mean"]) for row in configurations] == [
        EXPECTED_BEST[name][0] for name in EXPECTED_ORDER
    ]
    assert {row["best_val_iou_std"] for row in configurations} == {""}

    assert (out / "comparison.md").read_text() == markdown
    runs_table = markdown.split("Runs, best first:")[1]
    table_rows = [line for line in runs_table.splitlines() if line.startswith("| ")]
    assert table_rows[0].startswith("| run | seed | best val/iou | epoch of best | final val/iou")
    assert [row.split(" | ")[0].removeprefix("| ") for row in table_rows[1:]] == EXPECTED_ORDER
    assert "| 0.7500 | 5 |" in table_rows[1]
    assert f"All runs: `{COMMON_OVERRIDE}`." in markdown

    png = out / "iou_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    height, width, _ = matplotlib.image.imread(png).shape
    assert height >= 400 and width >= 800
    assert not (tensorboard_sweep / "comparison.csv").exists()


def test_a_run_without_val_iou_is_listed_last_with_empty_cells(tmp_path: Path) -> None:
    root = write_fake_sweep(
        tmp_path / "sweep", {"alpha=1.0": FakeRun({}, n_epochs=1), "alpha=0.5": FakeRun({0: 0.25})}
    )

    markdown = write_report(compare([root]), [], root)

    rows = list(read_rows(root / "comparison_runs.csv", "run").values())
    assert [row["run"] for row in rows] == ["alpha=0.5", "alpha=1.0"]
    assert {rows[1][key] for key in ("best_val_iou", "best_epoch", "final_val_iou")} == {""}
    assert "| alpha=1.0 |  |  |  |  | 0.0 |" in markdown
    assert "- alpha=1.0: no val/iou logged (stopped before its first validation)" in markdown


def test_the_tables_show_the_baseline_and_each_verdict(seeded_csv_sweep: Path, tmp_path: Path) -> None:
    markdown = write_report(compare([seeded_csv_sweep], "loss=giou"), ["val/acc75"], tmp_path)

    rows = read_rows(tmp_path / "comparison.csv", "configuration")
    assert set(rows) == set(SHIFTS)  # labelled by what differs; the shared override is said once
    assert {name: row["verdict"] for name, row in rows.items()} == {
        "loss=giou": "baseline",
        "loss=ciou": "better",
        "loss=mse": "worse",
        "loss=diou": "not distinguishable",
    }
    assert [float(rows["loss=diou"][k]) for k in ("iou_diff_ci_low", "iou_diff_ci_high")] == [0.0, 0.0]
    assert float(rows["loss=ciou"]["iou_diff_mean"]) == pytest.approx(0.1, abs=1e-5)
    assert float(rows["loss=ciou"]["share_images_better"]) == 1.0
    assert int(rows["loss=ciou"]["paired_images"]) == len(SEEDS) * N_IMAGES
    # --metric: each run's val/acc75 at its best epoch, over the seeds
    acc75 = [acc75_for(seeded_run("loss=mse", seed).val_iou[BEST_EPOCH]) for seed in SEEDS]
    assert float(rows["loss=mse"]["val_acc75_mean"]) == pytest.approx(np.mean(acc75))
    assert float(rows["loss=mse"]["val_acc75_std"]) == pytest.approx(np.std(acc75, ddof=1))
    runs = read_rows(tmp_path / "comparison_runs.csv", "run")
    assert float(runs["loss=mse,seed=2"]["val_acc75_at_best"]) == pytest.approx(acc75[2])

    assert "Against the baseline `loss=giou`:" in markdown
    line = next(line for line in markdown.splitlines() if line.startswith("| loss=ciou |"))
    assert line.endswith("| 100% / 0% | better |")
    assert next(line for line in markdown.splitlines() if line.startswith("| loss=giou |")).endswith(
        "|  |  |  | baseline |"
    )
    assert "Not ranked" not in markdown


def test_without_a_baseline_the_tables_say_the_best_configuration_is_it(
    seeded_csv_sweep: Path, tmp_path: Path
) -> None:
    markdown = write_report(compare([seeded_csv_sweep]), [], tmp_path)

    rows = read_rows(tmp_path / "comparison.csv", "configuration")
    assert {name: row["verdict"] for name, row in rows.items()} == {
        "loss=ciou": "baseline",  # the planted +0.1: the best mean best val/iou
        "loss=giou": "worse",
        "loss=diou": "worse",
        "loss=mse": "worse",
    }
    assert "Against the baseline `loss=ciou` (the best configuration: no --baseline given):" in markdown
    table = [line for line in markdown.split("Runs, best first:")[0].splitlines() if line.startswith("| ")]
    assert table[1].startswith("| loss=ciou |") and table[1].endswith("| baseline |")


def test_a_configuration_that_cannot_be_paired_is_marked_so(tmp_path: Path) -> None:
    root = write_fake_sweep(
        tmp_path / "sweep", {"alpha=0.5": FakeRun({0: 0.5}), "alpha=1.0": FakeRun({0: 0.25})}
    )

    markdown = write_report(compare([root]), [], root)

    # event files only, no per_image_val.csv: ranked, but not paired with the best configuration
    assert read_rows(root / "comparison.csv", "configuration")["alpha=1.0"]["verdict"] == ""
    assert "| alpha=1.0 | 1 |  | 0.2500 |  |  |  |  | not paired |" in markdown
    assert "- alpha=1.0: no per_image_val.csv" in markdown
