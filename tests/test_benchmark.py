"""Smoke test of ``scripts/benchmark.py`` at tiny sizes, so the benchmark cannot rot unnoticed.

Only the wiring and the JSON contract are checked (the names BENCHMARKS.md uses, consistent figures): speed
is never asserted in tests; the figures are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_benchmark_prints_every_figure_for_the_config_it_measured(tmp_path: Path, cache_dir: Path) -> None:
    n, batch = 40, 8
    command = [
        sys.executable,
        str(REPO / "scripts" / "benchmark.py"),
        "--steps=3",
        "--warmup=1",
        "--repeats=2",
        "--chunk=4",
        "data=synthetic_pets",
        f"data.synthetic.n={n}",
        f"data.batch_size={batch}",
        "data.num_workers=0",
        "image_size=64",
        "alpha=0.5",
        f"paths.cache_dir={cache_dir}",
    ]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    for name in FIGURES:
        assert isinstance(report[name], float) and report[name] > 0, name
    ratio = report["e2e_train_ips"] / report["model_train_ips"]
    assert abs(report["ratio_e2e_model"] - ratio) < 2e-3  # rounded to 3 decimals
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
