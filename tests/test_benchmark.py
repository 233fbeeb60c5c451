"""Smoke test of ``scripts/benchmark.py`` at tiny sizes, so the benchmark cannot rot unnoticed.

Only the wiring and the JSON contract are checked (the names BENCHMARKS.md uses, consistent figures): speed
is never asserted in tests; the figures are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from petloc.data.formats import FORMATS
from tests.conftest import REPO

FIGURES = (
    "model_train_ips",
    "e2e_train_ips",
    "ratio_e2e_model",
    "loader_ips",
    "infer_ips",
    "infer_latency_ms",
    "cache_build_s",
    "peak_rss_mb",
)


def run_benchmark(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``scripts/benchmark.py ARGS`` in a subprocess, as a user runs it; it must exit 0."""
    command = [sys.executable, str(REPO / "scripts" / "benchmark.py"), *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_benchmark_prints_every_figure_for_the_config_it_measured(tmp_path: Path, cache_dir: Path) -> None:
    n, batch = 40, 8
    result = run_benchmark(
        tmp_path,
        "--steps=3",
        "--warmup=1",
        "--repeats=2",
        "--chunk=4",
        "data=synthetic_pets",
        f"data.synthetic.n={n}",
        "data.min_epoch_images=1",
        f"data.batch_size={batch}",
        "data.num_workers=0",
        "image_size=64",
        "alpha=0.5",
        f"paths.cache_dir={cache_dir}",
    )
    report = json.loads(result.stdout)

    for name in FIGURES:
        assert isinstance(report[name], float) and report[name] > 0, name
    e2e, model = report["e2e_train_ips"], report["model_train_ips"]
    # the ratio of the unrounded figures, to 3 decimals; the figures themselves are rounded to 0.1
    slack = 5e-4 + e2e / model * (0.05 / e2e + 0.05 / model) * 1.01
    assert abs(report["ratio_e2e_model"] - e2e / model) <= slack
    # every boxed image of the synthetic set went through the cold cache build (test images have none)
    assert 0 < report["cache_images"] <= n
    by_options = report["infer_by_options"]
    assert set(by_options) == {"default", "single_look", "flip_refine"}
    assert by_options["default"] == {
        "infer_ips": report["infer_ips"],
        "infer_latency_ms": report["infer_latency_ms"],
    }
    assert all(v["infer_ips"] > 0 and v["infer_latency_ms"] > 0 for v in by_options.values())
    config = report["config"]
    assert config["inference"] == {"flip": False, "refine": True, "refine_margin": 1.6, "refine_size": None}
    assert (config["alpha"], config["image_size"], config["batch_size"]) == (0.5, 64, batch)
    assert (config["steps"], config["warmup"]) == (3, 1)
    assert report["machine"]["cpus"] == os.cpu_count()


@pytest.mark.slow
def test_benchmark_fit_reports_what_a_time_budget_bought(tmp_path: Path, cache_dir: Path) -> None:
    """``--fit``: the whole training loop for a few seconds, with at least 64 images per epoch; the
    steps per epoch follow from the passes and the training images the run's report names."""
    batch = 8
    result = run_benchmark(
        tmp_path,
        "--fit=8",
        "data=synthetic_pets",
        "data.synthetic.n=40",
        "data.min_epoch_images=64",
        f"data.batch_size={batch}",
        "data.num_workers=0",
        "image_size=64",
        "alpha=0.25",
        f"paths.cache_dir={cache_dir}",
    )
    report = json.loads(result.stdout)
    found = re.search(r"training epoch: (\d+) passes over the (\d+) training images", result.stderr)
    assert found, result.stderr[-3000:]
    passes, images = int(found[1]), int(found[2])
    assert passes == math.ceil(64 / images) > 1
    per_epoch = passes * images // batch  # drop_last
    steps, epochs = report["fit_steps"], report["fit_epochs"]
    assert steps > 0 and per_epoch * (epochs - 1) < steps <= per_epoch * epochs  # the last epoch may be cut
    assert report["fit_steps_per_s"] == pytest.approx(steps / report["fit_seconds"], rel=0.02)
    assert report["fit_train_ips"] == pytest.approx(batch * report["fit_steps_per_s"], rel=0.02)
    assert report["config"]["batch_size"] == batch
    assert 0 < report["fit_step_share"] < 1  # validation, checkpoints and loading take the rest


@pytest.mark.slow
def test_benchmark_step_forms_times_each_form_at_the_runs_precision(tmp_path: Path, cache_dir: Path) -> None:
    """``--step-forms``: a median step time for each form of BENCHMARKS.md's table, the compiled
    form's first step (its compilation) apart, at the precision the overrides chose."""
    result = run_benchmark(
        tmp_path,
        "--step-forms",
        "--steps=2",
        "--chunk=1",
        "data=synthetic_pets",
        "data.synthetic.n=40",
        "data.batch_size=4",
        "data.num_workers=0",
        "image_size=64",
        "alpha=0.25",
        "trainer.precision=bf16-mixed",
        f"paths.cache_dir={cache_dir}",
    )
    report = json.loads(result.stdout)
    assert set(report["step_ms"]) == {"channels_last", "contiguous", "compiled"}
    assert all(ms > 0 for ms in report["step_ms"].values())
    assert report["compile_s"] > 0
    assert (report["config"]["batch_size"], report["config"]["precision"]) == (4, "bf16-mixed")


@pytest.mark.slow
def test_benchmark_readers_times_every_format_of_its_table(tmp_path: Path) -> None:
    """``--readers``: a row for every registered format, each one the table in BENCHMARKS.md holds."""
    report = json.loads(run_benchmark(tmp_path, "--readers=12").stdout)
    section = (
        (REPO / "BENCHMARKS.md").read_text().split("## Dataset readers at scale", 1)[1].split("\n## ")[0]
    )
    table = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    assert report["images"] == 12
    assert set(report["reader_s"]) == set(report["reader_ips"]) == set(FORMATS) == table
    assert all(ips > 0 for ips in report["reader_ips"].values())
