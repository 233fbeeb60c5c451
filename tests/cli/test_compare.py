"""The ``petloc-compare`` command: its output folder, what it prints, its exit status and its errors,
on sweep folders written by the tests (tests/sweep_helpers.py). What it computes is tested in
tests/sweeps/."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from petloc.cli.compare import main
from tests.sweep_helpers import COMMON_OVERRIDE, FakeRun, write_fake_sweep

REPORT = {"comparison.csv", "comparison_runs.csv", "comparison.md", "iou_curves.png"}


def test_main_writes_the_report_and_prints_its_markdown(
    tensorboard_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"

    assert main([str(tensorboard_sweep), "--out", str(out), "--metric", "val/acc50"]) == 0

    assert {p.name for p in out.iterdir()} == REPORT
    captured = capsys.readouterr()
    assert captured.out == (out / "comparison.md").read_text()
    assert "val/acc50 at best" in captured.out
    assert "4 run(s) in 4 configuration(s); wrote comparison.csv" in captured.err
    assert not (tensorboard_sweep / "comparison.csv").exists()


def test_main_defaults_out_to_first_dir(tmp_path: Path) -> None:
    root = write_fake_sweep(tmp_path / "sweep", {"alpha=0.5": FakeRun({0: 0.5})})

    assert main([str(root)]) == 0

    assert {p.name for p in root.iterdir()} >= REPORT


def test_runs_not_ranked_are_named_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_fake_sweep(
        tmp_path / "sweep", {"alpha=1.0": FakeRun({}, n_epochs=1), "alpha=0.5": FakeRun({0: 0.25})}
    )

    assert main([str(root)]) == 0

    reason = "alpha=1.0: no val/iou logged (stopped before its first validation)"
    assert f"petloc-compare: not ranked or not paired: {reason}" in capsys.readouterr().err


def test_without_baseline_the_best_configuration_is_the_baseline(
    seeded_csv_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(seeded_csv_sweep), "--out", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "(the best configuration: no --baseline given)" in printed
    with (tmp_path / "comparison.csv").open(newline="") as handle:
        verdicts = {row["configuration"]: row["verdict"] for row in csv.DictReader(handle)}
    assert verdicts["loss=ciou"] == "baseline"  # the planted +0.1
    assert set(verdicts.values()) == {"baseline", "worse"}


@pytest.mark.parametrize(
    ("baseline", "message"),
    [("loss=nothing", "matches no run or configuration"), (COMMON_OVERRIDE, "matches 4 configurations")],
)
def test_a_baseline_that_names_no_single_configuration_is_an_error(
    baseline: str, message: str, seeded_csv_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(seeded_csv_sweep), "--baseline", baseline, "--out", str(tmp_path)]) == 1

    assert message in capsys.readouterr().err
    assert not (tmp_path / "comparison.csv").exists()


def test_no_run_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "tensorboard").mkdir(parents=True)  # a tensorboard folder without event files

    assert main([str(tmp_path / "empty")]) != 0
    assert "no run folder" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) != 0
    assert f"petloc-compare: not a folder: {tmp_path / 'missing'}" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "comparison.csv").exists()
