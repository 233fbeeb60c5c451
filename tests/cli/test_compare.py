"""``petloc-compare`` on run folders written the way petloc-train writes them: ``metrics.csv``,
``per_image_val.csv`` and ``.hydra/`` written with the standard library (seeded sweeps, statistics,
paired comparisons), and TensorBoard-only folders written with TensorBoard's own writer the way
Lightning's logger writes them (the fake sweep of tests/sweep_helpers.py, which the TensorBoard server
test reads too). Statistics are checked against scipy.stats and numpy formulas."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from petloc.cli.compare import compare_runs, group_runs, main, plot_iou_curves
from tests.sweep_helpers import (
    COMMON_OVERRIDE,
    STEPS_PER_EPOCH,
    SWEEP,
    T0,
    CsvRun,
    FakeRun,
    acc50_for,
    acc75_for,
    sweep_overrides,
    val_step,
    write_csv_run,
    write_fake_sweep,
    write_run,
)

EXPECTED_ORDER = [
    "alpha=0.5,loss=giou",
    "seed_sweep/alpha=0.5,loss=mse",
    "alpha=0.25,loss=giou",
    "alpha=0.25,loss=mse",
]
EXPECTED_BEST = {
    "alpha=0.5,loss=giou": (0.75, 5),
    "seed_sweep/alpha=0.5,loss=mse": (0.6875, 0),
    "alpha=0.25,loss=giou": (0.625, 3),
    "alpha=0.25,loss=mse": (0.5, 2),
}


def expected_span(run: FakeRun) -> float:
    """Last minus first scalar wall time of a run written by ``write_run`` without epoch clashes."""
    last_step = max(val_step(max(run.val_iou)), (run.n_epochs - 1) * STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2)
    return float(last_step - STEPS_PER_EPOCH // 2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake sweep, written once for the module: writing event files is the slow part."""
    return write_fake_sweep(tmp_path_factory.mktemp("sweep"), SWEEP)


def test_compare_runs_reads_best_epoch_and_order(sweep: Path) -> None:
    runs = compare_runs([sweep])

    assert [run.name for run in runs] == EXPECTED_ORDER
    for run in runs:
        assert (run.best_iou, run.best_epoch) == EXPECTED_BEST[run.name]
        assert run.label == ",".join(sweep_overrides(run.name))
        written = SWEEP[run.name].val_iou
        assert run.iou_curve == sorted(written.items())
        assert run.final_iou == written[max(written)]
        assert run.at_best("val/acc50") == pytest.approx(acc50_for(EXPECTED_BEST[run.name][0]))
    times = {run.name: run.train_time_s for run in runs}
    assert times["alpha=0.25,loss=mse"] == 123.5
    assert times["alpha=0.5,loss=giou"] == expected_span(SWEEP["alpha=0.5,loss=giou"])
    assert times["alpha=0.25,loss=giou"] == expected_span(SWEEP["alpha=0.25,loss=giou"])


def test_plot_has_one_labelled_line_per_run(sweep: Path) -> None:
    fig = plot_iou_curves(group_runs(compare_runs([sweep])))

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


def test_main_writes_csv_markdown_and_png(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"

    assert main([str(sweep), "--out", str(out)]) == 0

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

    stdout = capsys.readouterr().out
    markdown = (out / "comparison.md").read_text()
    assert stdout == markdown
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
    assert not (sweep / "comparison.csv").exists()


def test_main_defaults_out_to_first_dir(tmp_path: Path) -> None:
    root = write_fake_sweep(tmp_path / "sweep", {"alpha=0.5": FakeRun({0: 0.5})})

    assert main([str(root)]) == 0

    written = {"comparison.csv", "comparison_runs.csv", "comparison.md", "iou_curves.png"}
    assert written <= {p.name for p in root.iterdir()}


def test_run_without_val_iou_is_listed_last_with_empty_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_fake_sweep(
        tmp_path / "sweep", {"alpha=1.0": FakeRun({}, n_epochs=1), "alpha=0.5": FakeRun({0: 0.25})}
    )

    assert main([str(root)]) == 0

    with (root / "comparison_runs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["alpha=0.5", "alpha=1.0"]
    assert {rows[1][key] for key in ("best_val_iou", "best_epoch", "final_val_iou")} == {""}
    reason = "alpha=1.0: no val/iou logged (stopped before its first validation)"
    assert reason in capsys.readouterr().err
    markdown = (root / "comparison.md").read_text()
    assert "| alpha=1.0 |  |  |  |  | 0.0 |" in markdown
    assert f"- {reason}" in markdown


def test_epoch_falls_back_to_index_without_epoch_scalar(tmp_path: Path) -> None:
    write_run(tmp_path / "run", FakeRun({1: 0.25, 3: 0.5, 5: 0.375}, n_epochs=6, with_epoch_scalar=False))

    (run,) = compare_runs([tmp_path / "run"])

    assert run.name == "run"
    assert run.label == "run"  # no .hydra/overrides.yaml: the folder name
    assert run.iou_curve == [(0, 0.25), (1, 0.5), (2, 0.375)]
    assert (run.best_iou, run.best_epoch) == (0.5, 1)


def test_resumed_run_keeps_the_later_value_of_a_repeated_epoch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, FakeRun({0: 0.25, 1: 0.375, 2: 0.5, 3: 0.75}))
    # Killed after epoch 3, resumed from the epoch-1 checkpoint: epochs 2 and 3 are logged again, later.
    write_run(run_dir, FakeRun({2: 0.4375, 3: 0.5, 4: 0.625}, n_epochs=5, first_wall_time=T0 + 1000))

    (run,) = compare_runs([run_dir])

    assert run.iou_curve == [(0, 0.25), (1, 0.375), (2, 0.4375), (3, 0.5), (4, 0.625)]
    assert (run.best_iou, run.best_epoch) == (0.625, 4)


def test_a_resumed_run_is_read_in_logging_order_whatever_its_files_are_named(tmp_path: Path) -> None:
    """The resumed part's event file written first (its name sorts first) but logged later: the
    values logged later still win."""
    run_dir = tmp_path / "run"
    write_run(run_dir, FakeRun({2: 0.4375, 3: 0.5, 4: 0.625}, n_epochs=5, first_wall_time=T0 + 1000))
    write_run(run_dir, FakeRun({0: 0.25, 1: 0.375, 2: 0.5, 3: 0.75}))

    (run,) = compare_runs([run_dir])

    assert run.iou_curve == [(0, 0.25), (1, 0.375), (2, 0.4375), (3, 0.5), (4, 0.625)]


def test_several_dirs_get_distinct_names_and_repeated_configurations_are_grouped(tmp_path: Path) -> None:
    first = write_fake_sweep(
        tmp_path / "sweep_a", {"alpha=0.5": FakeRun({0: 0.5}), "alpha=1.0": FakeRun({0: 0.375})}
    )
    second = write_fake_sweep(tmp_path / "sweep_b", {"alpha=0.5": FakeRun({0: 0.25})})

    runs = compare_runs([first, second])

    assert [run.name for run in runs] == ["sweep_a/alpha=0.5", "sweep_a/alpha=1.0", "sweep_b/alpha=0.5"]
    # the same overrides twice: two runs of one configuration, drawn as their mean with a band
    configurations = group_runs(runs)
    assert [[run.name for run in c.runs] for c in configurations] == [
        ["sweep_a/alpha=0.5", "sweep_b/alpha=0.5"],
        ["sweep_a/alpha=1.0"],
    ]
    legend = plot_iou_curves(configurations).axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["alpha=0.5 (n=2)", "alpha=1.0"]


def test_no_run_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "tensorboard").mkdir(parents=True)  # a tensorboard folder without event files

    assert main([str(tmp_path / "empty")]) != 0
    assert "no run folder" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) != 0
    assert not (tmp_path / "empty" / "comparison.csv").exists()


# ---- seeded sweeps from metrics.csv and per_image_val.csv ----------------------------------------

SEEDS = (0, 1, 2)
N_IMAGES = 40
# validated after epochs 1, 3 and 4 (indices 0, 1, 2 if the epochs were not read), best at epoch 3
VALIDATED = (1, 3, 4)
BEST_EPOCH = 3
# per configuration: the shift of every image's IoU from the baseline's, and noise around it
SHIFTS = {"loss=giou": (0.0, 0.0), "loss=ciou": (0.1, 0.0), "loss=diou": (0.0, 0.0), "loss=mse": (-0.1, 0.05)}


def baseline_ious(seed: int) -> dict[str, float]:
    """The baseline's per-image IoUs; each seed validates its own images, as its own split does."""
    values = np.random.default_rng(100 + seed).uniform(0.2, 0.8, N_IMAGES)
    return {f"img{seed}_{i:02d}": round(float(v), 6) for i, v in enumerate(values)}


def seeded_run(configuration: str, seed: int) -> CsvRun:
    """A run whose best val/iou (at BEST_EPOCH) is the mean of its per-image IoUs."""
    shift, noise = SHIFTS[configuration]
    rng = np.random.default_rng(1000 * seed + len(configuration))
    per_image = {
        image: round(iou + shift + float(rng.normal(0, noise)) if noise else iou + shift, 6)
        for image, iou in baseline_ious(seed).items()
    }
    best = float(np.mean(list(per_image.values())))
    return CsvRun(
        {1: best - 0.125, BEST_EPOCH: best, 4: best - 0.0625}, n_epochs=5, seed=seed, per_image=per_image
    )


@pytest.fixture(scope="module")
def seeded_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``-m loss=giou,ciou,diou,mse seed=0,1,2`` as folders, written with the standard library."""
    root = tmp_path_factory.mktemp("seeded")
    for configuration in SHIFTS:
        for seed in SEEDS:
            overrides = [configuration, f"seed={seed}", COMMON_OVERRIDE]
            write_csv_run(root / f"{configuration},seed={seed}", seeded_run(configuration, seed), overrides)
    return root


def read_rows(path: Path, key: str) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row[key]: row for row in csv.DictReader(handle)}


def test_runs_that_differ_only_by_seed_form_one_configuration(seeded_sweep: Path) -> None:
    configurations = group_runs(compare_runs([seeded_sweep]))

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


def test_baseline_marks_better_worse_and_not_distinguishable(
    seeded_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"

    assert (
        main([str(seeded_sweep), "--baseline", "loss=giou", "--metric", "val/acc75", "--out", str(out)]) == 0
    )

    rows = read_rows(out / "comparison.csv", "configuration")
    assert set(rows) == set(SHIFTS)  # labelled by what differs; the shared override is said once
    assert rows["loss=giou"]["verdict"] == "baseline"
    assert rows["loss=ciou"]["verdict"] == "better"  # the planted +0.1
    assert rows["loss=mse"]["verdict"] == "worse"
    assert rows["loss=diou"]["verdict"] == "not distinguishable"  # identical to the baseline
    assert [float(rows["loss=diou"][k]) for k in ("iou_diff_ci_low", "iou_diff_ci_high")] == [0.0, 0.0]
    for name in ("loss=ciou", "loss=mse"):
        pooled = [
            seeded_run(name, seed).per_image[image] - iou  # type: ignore[index]
            for seed in SEEDS
            for image, iou in baseline_ious(seed).items()
        ]
        row = rows[name]
        assert int(row["paired_images"]) == len(SEEDS) * N_IMAGES
        assert float(row["iou_diff_mean"]) == pytest.approx(np.mean(pooled))
        assert float(row["iou_diff_ci_low"]) < np.mean(pooled) < float(row["iou_diff_ci_high"])
        assert float(row["share_images_better"]) == pytest.approx(np.mean(np.asarray(pooled) > 0))
        assert float(row["share_images_worse"]) == pytest.approx(np.mean(np.asarray(pooled) < 0))
    assert float(rows["loss=ciou"]["iou_diff_mean"]) == pytest.approx(0.1, abs=1e-5)
    assert float(rows["loss=ciou"]["share_images_better"]) == 1.0
    # --metric: each run's val/acc75 at its best epoch, over the seeds
    acc75 = [acc75_for(seeded_run("loss=mse", seed).val_iou[BEST_EPOCH]) for seed in SEEDS]
    assert float(rows["loss=mse"]["val_acc75_mean"]) == pytest.approx(np.mean(acc75))
    assert float(rows["loss=mse"]["val_acc75_std"]) == pytest.approx(np.std(acc75, ddof=1))

    markdown = (out / "comparison.md").read_text()
    assert capsys.readouterr().out == markdown
    assert "Against the baseline `loss=giou`" in markdown
    line = next(line for line in markdown.splitlines() if line.startswith("| loss=ciou |"))
    assert line.endswith("| 100% / 0% | better |")
    assert "Not ranked" not in markdown
    runs = read_rows(out / "comparison_runs.csv", "run")
    assert float(runs["loss=mse,seed=2"]["val_acc75_at_best"]) == pytest.approx(acc75[2])


def test_the_same_comparison_twice_gives_the_same_intervals(seeded_sweep: Path, tmp_path: Path) -> None:
    for out in ("a", "b"):
        assert main([str(seeded_sweep), "--baseline", "loss=giou,seed=1", "--out", str(tmp_path / out)]) == 0

    first = (tmp_path / "a" / "comparison.csv").read_text()
    assert first == (tmp_path / "b" / "comparison.csv").read_text()
    assert read_rows(tmp_path / "a" / "comparison.csv", "configuration")["loss=giou"]["verdict"] == "baseline"


def test_the_plot_draws_each_configurations_mean_with_a_band(seeded_sweep: Path) -> None:
    configurations = group_runs(compare_runs([seeded_sweep]))

    ax = plot_iou_curves(configurations).axes[0]

    assert len(ax.get_lines()) == len(SHIFTS) == len(ax.collections)  # one band per configuration
    assert {line.get_color() for line in ax.get_lines()} == {f"C{i}" for i in range(len(SHIFTS))}
    lines = {str(line.get_label()): line for line in ax.get_lines()}
    mse = lines["loss=mse (n=3)"]
    assert list(mse.get_xdata()) == list(VALIDATED)
    best = [seeded_run("loss=mse", seed).val_iou[BEST_EPOCH] for seed in SEEDS]
    assert mse.get_ydata()[1] == pytest.approx(np.mean(best))


def test_runs_that_cannot_be_ranked_or_paired_are_named_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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

    assert main([str(root), "--baseline", "loss=giou,seed=0"]) == 0

    reasons = [
        "loss=mse,seed=0: no per_image_val.csv",
        "loss=sqrt_wh,seed=0: different validation images than loss=giou,seed=0",
        "loss=smooth_l1,seed=0: no val/iou logged (stopped before its first validation)",
        "loss=diou,seed=5: no baseline run with seed 5 (baseline seeds: 0, 1)",
    ]
    err = capsys.readouterr().err
    markdown = (root / "comparison.md").read_text()
    for reason in reasons:
        assert reason in err
        assert f"- {reason}" in markdown
    rows = read_rows(root / "comparison.csv", "configuration")
    assert rows["loss=mse"]["verdict"] == "worse"  # seed 1 still pairs
    assert int(rows["loss=mse"]["paired_images"]) == N_IMAGES
    assert rows["loss=mse"]["not_ranked"] == reasons[0]
    assert {rows[c]["verdict"] for c in ("loss=sqrt_wh", "loss=smooth_l1", "loss=diou")} == {""}
    assert "| loss=diou | 1 | 5 | 0.5000 |  |  |  |  | not paired |" in markdown


@pytest.mark.parametrize(
    ("baseline", "message"),
    [("loss=nothing", "matches no run or configuration"), (COMMON_OVERRIDE, "matches 4 configurations")],
)
def test_a_baseline_that_names_no_single_configuration_is_an_error(
    baseline: str, message: str, seeded_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(seeded_sweep), "--baseline", baseline, "--out", str(tmp_path)]) == 1

    assert message in capsys.readouterr().err
    assert not (tmp_path / "comparison.csv").exists()


def test_metrics_csv_gives_exact_epochs_and_the_later_row_of_a_resumed_epoch(tmp_path: Path) -> None:
    # validated after epochs 1 and 3; resumed after a kill, epoch 3 was trained and logged again
    write_csv_run(tmp_path / "run", CsvRun({1: 0.5, 3: 0.75}, relogged={3: 0.625}), ["alpha=0.5"])

    (run,) = compare_runs([tmp_path / "run"])

    assert run.iou_curve == [(1, 0.5), (3, 0.625)]
    assert run.curves["train/loss"] == [(e, 1.0 / (e + 1)) for e in range(4)]
    assert (run.best_iou, run.best_epoch, run.seed) == (0.625, 3, 0)
    assert run.at_best("val/acc75") == acc75_for(0.625)
    assert run.at_best("val/nothing") is None


def test_csv_and_tensorboard_only_folders_are_compared_together(tmp_path: Path) -> None:
    write_csv_run(tmp_path / "new", CsvRun({1: 0.5, 3: 0.75}), ["alpha=0.5"])
    write_run(tmp_path / "old", FakeRun({1: 0.25, 3: 0.375}), ["alpha=0.25"])

    runs = compare_runs([tmp_path])

    assert [(run.name, run.best_iou, run.best_epoch) for run in runs] == [("new", 0.75, 3), ("old", 0.375, 3)]
    assert (runs[1].per_image, runs[1].seed) == (None, None)
