"""``petloc-compare`` on real TensorBoard event files written the way Lightning's logger writes them
(the fake sweep of tests/sweep_helpers.py, which the TensorBoard server test reads too)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image
import pytest

from petloc.cli.compare import compare_runs, main, plot_iou_curves
from tests.sweep_helpers import (
    COMMON_OVERRIDE,
    STEPS_PER_EPOCH,
    SWEEP,
    T0,
    FakeRun,
    acc50_for,
    sweep_overrides,
    val_step,
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
        assert run.final_acc50 == pytest.approx(acc50_for(written[max(written)]))
    times = {run.name: run.train_time_s for run in runs}
    assert times["alpha=0.25,loss=mse"] == 123.5
    assert times["alpha=0.5,loss=giou"] == expected_span(SWEEP["alpha=0.5,loss=giou"])
    assert times["alpha=0.25,loss=giou"] == expected_span(SWEEP["alpha=0.25,loss=giou"])


def test_plot_has_one_labelled_line_per_run(sweep: Path) -> None:
    fig = plot_iou_curves(compare_runs([sweep]))

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

    with (out / "comparison.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == EXPECTED_ORDER
    for row in rows:
        assert (float(row["best_val_iou"]), int(row["best_epoch"])) == EXPECTED_BEST[row["run"]]
        assert row["overrides"] == ",".join(sweep_overrides(row["run"]))
    assert float(rows[-1]["train_time_s"]) == 123.5
    assert float(rows[0]["final_val_iou"]) == 0.6875

    stdout = capsys.readouterr().out
    markdown = (out / "comparison.md").read_text()
    assert stdout == markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert table_rows[0].startswith("| run | overrides | best val/iou | epoch of best")
    assert [row.split(" | ")[0].removeprefix("| ") for row in table_rows[1:]] == EXPECTED_ORDER
    assert "| 0.7500 | 5 |" in table_rows[1]

    png = out / "iou_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    height, width, _ = matplotlib.image.imread(png).shape
    assert height >= 400 and width >= 800
    assert not (sweep / "comparison.csv").exists()


def test_main_defaults_out_to_first_dir(tmp_path: Path) -> None:
    root = write_fake_sweep(tmp_path / "sweep", {"alpha=0.5": FakeRun({0: 0.5})})

    assert main([str(root)]) == 0

    assert {"comparison.csv", "comparison.md", "iou_curves.png"} <= {p.name for p in root.iterdir()}


def test_run_without_val_iou_is_listed_last_with_empty_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_fake_sweep(
        tmp_path / "sweep", {"alpha=1.0": FakeRun({}, n_epochs=1), "alpha=0.5": FakeRun({0: 0.25})}
    )

    assert main([str(root)]) == 0

    with (root / "comparison.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["alpha=0.5", "alpha=1.0"]
    empty = {rows[1][key] for key in ("best_val_iou", "best_epoch", "final_val_acc50", "final_val_iou")}
    assert empty == {""}
    assert "alpha=1.0" in capsys.readouterr().err
    assert (
        "| alpha=1.0 | alpha=1.0,trainer.max_epochs=8 |  |  |  |  |" in (root / "comparison.md").read_text()
    )


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


def test_several_dirs_get_distinct_names_and_labels(tmp_path: Path) -> None:
    first = write_fake_sweep(
        tmp_path / "sweep_a", {"alpha=0.5": FakeRun({0: 0.5}), "alpha=1.0": FakeRun({0: 0.375})}
    )
    second = write_fake_sweep(tmp_path / "sweep_b", {"alpha=0.5": FakeRun({0: 0.25})})

    runs = compare_runs([first, second])

    assert [run.name for run in runs] == ["sweep_a/alpha=0.5", "sweep_a/alpha=1.0", "sweep_b/alpha=0.5"]
    legend = plot_iou_curves(runs).axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [
        "alpha=0.5 (sweep_a/alpha=0.5)",
        "alpha=1.0",
        "alpha=0.5 (sweep_b/alpha=0.5)",
    ]


def test_no_run_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "tensorboard").mkdir(parents=True)  # a tensorboard folder without event files

    assert main([str(tmp_path / "empty")]) != 0
    assert "no run folder" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) != 0
    assert not (tmp_path / "empty" / "comparison.csv").exists()
