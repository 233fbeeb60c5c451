"""petloc.sweeps.runs: run folders read back. Oracles: folders written the way petloc-train writes them,
``metrics.csv``, ``per_image_val.csv`` and ``.hydra/`` with the standard library, event files with
TensorBoard's own writer (tests/sweep_helpers.py); and a real run whose config moved its event files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from petloc.cli.compare import main
from petloc.sweeps.runs import find_runs, read_runs
from tests.conftest import event_scalars
from tests.helpers import HydraRun
from tests.sweep_helpers import (
    EXPECTED_BEST,
    EXPECTED_ORDER,
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
    write_run,
)


def expected_span(run: FakeRun) -> float:
    """Last minus first scalar wall time of a run written by ``write_run`` without epoch clashes."""
    last_step = max(val_step(max(run.val_iou)), (run.n_epochs - 1) * STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2)
    return float(last_step - STEPS_PER_EPOCH // 2)


def test_read_runs_reads_best_epoch_and_order(tensorboard_sweep: Path) -> None:
    runs = read_runs([tensorboard_sweep])

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


def test_epoch_falls_back_to_index_without_epoch_scalar(tmp_path: Path) -> None:
    write_run(tmp_path / "run", FakeRun({1: 0.25, 3: 0.5, 5: 0.375}, n_epochs=6, with_epoch_scalar=False))

    (run,) = read_runs([tmp_path / "run"])

    assert run.name == "run"
    assert run.label == "run"  # no .hydra/overrides.yaml: the folder name
    assert run.iou_curve == [(0, 0.25), (1, 0.5), (2, 0.375)]
    assert (run.best_iou, run.best_epoch) == (0.5, 1)


def test_resumed_run_keeps_the_later_value_of_a_repeated_epoch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, FakeRun({0: 0.25, 1: 0.375, 2: 0.5, 3: 0.75}))
    # Killed after epoch 3, resumed from the epoch-1 checkpoint: epochs 2 and 3 are logged again, later.
    write_run(run_dir, FakeRun({2: 0.4375, 3: 0.5, 4: 0.625}, n_epochs=5, first_wall_time=T0 + 1000))

    (run,) = read_runs([run_dir])

    assert run.iou_curve == [(0, 0.25), (1, 0.375), (2, 0.4375), (3, 0.5), (4, 0.625)]
    assert (run.best_iou, run.best_epoch) == (0.625, 4)


def test_a_resumed_run_is_read_in_logging_order_whatever_its_files_are_named(tmp_path: Path) -> None:
    """The resumed part's event file written first (its name sorts first) but logged later: the
    values logged later still win."""
    run_dir = tmp_path / "run"
    write_run(run_dir, FakeRun({2: 0.4375, 3: 0.5, 4: 0.625}, n_epochs=5, first_wall_time=T0 + 1000))
    write_run(run_dir, FakeRun({0: 0.25, 1: 0.375, 2: 0.5, 3: 0.75}))

    (run,) = read_runs([run_dir])

    assert run.iou_curve == [(0, 0.25), (1, 0.375), (2, 0.4375), (3, 0.5), (4, 0.625)]


def test_metrics_csv_gives_exact_epochs_and_the_later_row_of_a_resumed_epoch(tmp_path: Path) -> None:
    # validated after epochs 1 and 3; resumed after a kill, epoch 3 was trained and logged again
    write_csv_run(tmp_path / "run", CsvRun({1: 0.5, 3: 0.75}, relogged={3: 0.625}), ["alpha=0.5"])

    (run,) = read_runs([tmp_path / "run"])

    assert run.iou_curve == [(1, 0.5), (3, 0.625)]
    assert run.curves["train/loss"] == [(e, 1.0 / (e + 1)) for e in range(4)]
    assert (run.best_iou, run.best_epoch, run.seed) == (0.625, 3, 0)
    assert run.at_best("val/acc75") == acc75_for(0.625)
    assert run.at_best("val/nothing") is None


def test_csv_and_tensorboard_only_folders_are_compared_together(tmp_path: Path) -> None:
    write_csv_run(tmp_path / "new", CsvRun({1: 0.5, 3: 0.75}), ["alpha=0.5"])
    write_run(tmp_path / "old", FakeRun({1: 0.25, 3: 0.375}), ["alpha=0.25"])

    runs = read_runs([tmp_path])

    assert [(run.name, run.best_iou, run.best_epoch) for run in runs] == [("new", 0.75, 3), ("old", 0.375, 3)]
    assert (runs[1].per_image, runs[1].seed) == (None, None)


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """``.hydra/config.yaml`` as Hydra saves it: interpolations left in, the output folder where the
    run was trained (not where the folder is now)."""
    saved = {"paths": {"output_dir": "/where/it/was/trained"}, **config}
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))


def test_runs_are_read_where_their_config_put_their_files(tmp_path: Path) -> None:
    """Event files in ``tb/``, metrics.csv in ``logs/``, per-image IoUs in ``val/images.csv``, as each
    run's saved config says; the CSV logger's ``logs/`` folder is no run of its own."""
    tensorboard = {"tensorboard": {"save_dir": "${paths.output_dir}", "name": "tb", "version": ""}}
    only_events = tmp_path / "sweep" / "alpha=0.25"
    write_run(only_events, FakeRun({0: 0.25, 1: 0.5}), ["alpha=0.25"])
    (only_events / "tensorboard").rename(only_events / "tb")
    write_config(only_events, {"seed": 3, "logger": tensorboard})
    both = tmp_path / "sweep" / "alpha=0.5"
    write_run(both, FakeRun({0: 0.125}), ["alpha=0.5"])
    (both / "tensorboard").rename(both / "tb")
    (both / "logs").mkdir()
    with (both / "logs" / "metrics.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["epoch", "step", "val/iou"], [0, 9, 0.5], [1, 19, 0.75]])
    (both / "val").mkdir()
    (both / "val" / "images.csv").write_text("image,iou\na.jpg,0.5\nb.jpg,0.25\n")
    csv_logger = {"csv": {"save_dir": "${paths.output_dir}/logs", "name": "", "version": ""}}
    per_image = {"per_image_val": {"path": "${paths.output_dir}/val/images.csv"}}
    write_config(both, {"seed": 4, "logger": {**tensorboard, **csv_logger}, "callbacks": per_image})

    found = find_runs(tmp_path)
    runs = {run.name: run for run in read_runs([tmp_path / "sweep"])}

    assert [(run.root, run.tensorboard) for run in found] == [
        (only_events, only_events / "tb"),
        (both, both / "tb"),
    ]
    assert found[1].metrics_csv == both / "logs" / "metrics.csv"
    assert set(runs) == {"alpha=0.25", "alpha=0.5"}
    assert (runs["alpha=0.25"].iou_curve, runs["alpha=0.25"].seed) == ([(0, 0.25), (1, 0.5)], 3)
    assert (runs["alpha=0.5"].iou_curve, runs["alpha=0.5"].seed) == ([(0, 0.5), (1, 0.75)], 4)
    assert runs["alpha=0.5"].per_image == {"a.jpg": 0.5, "b.jpg": 0.25}


@pytest.mark.slow
def test_compare_reads_a_real_run_whose_config_renamed_its_event_folder(
    hydra_run: HydraRun, tmp_path: Path
) -> None:
    """``logger=tensorboard logger.tensorboard.name=tb``: no metrics.csv, no tensorboard/ folder; the
    run's scalars are read from tb/ all the same."""
    run_dir = hydra_run.run_dir
    assert not (run_dir / "tensorboard").exists() and not (run_dir / "metrics.csv").exists()
    logged = event_scalars(run_dir / "tb")  # the oracle: TensorBoard's own reader
    assert logged["val/iou"][-1][1] == pytest.approx(hydra_run.metrics["val/iou"])

    (run,) = read_runs([run_dir])

    assert run.iou_curve == [(0, pytest.approx(hydra_run.metrics["val/iou"]))]
    assert [value for _, value in run.curves["val/acc50"]] == pytest.approx(
        [value for _, value in logged["val/acc50"]]
    )
    assert run.per_image is not None and len(run.per_image) > 0
    # petloc-compare itself, on the run's parent folder
    assert main([str(run_dir.parent), "--out", str(tmp_path)]) == 0
    with (tmp_path / "comparison_runs.csv").open(newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert float(row["best_val_iou"]) == pytest.approx(hydra_run.metrics["val/iou_best"], abs=1e-6)
    assert row["per_image_val"] == "yes"
