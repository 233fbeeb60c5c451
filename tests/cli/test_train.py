"""petloc-train (petloc.cli.train.main), the Hydra app around petloc.train.train: what it hands a
sweeper (the run's ``optimized_metric``, as metrics.json records it) and what ``petloc-train --help``
tells a user. (Training itself: tests/test_train.py; what a run prints: tests/test_console.py.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import petloc.cli.train
from petloc.cli.train import main
from tests.conftest import PETLOC_TRAIN, REPO

# one batch through train and val on a small synthetic set, single-process
FAST = ("debug=fast", "data.synthetic.n=48", "image_size=64", "data.num_workers=0")


def test_main_returns_the_metric_the_sweeper_optimizes(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Hydra hands a composed config straight to the task function, as its launchers do for each
    job; the Optuna sweeper reads what it returns."""
    value = main(make_cfg(*FAST, "optimized_metric=val/loss"))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert value == pytest.approx(written["val/loss"])


def test_main_returns_nothing_without_a_metric_to_optimize(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """optimized_metric=null (a run outside a search): nothing to return, whatever train reports.
    train is replaced by one that returns the metrics of a finished run."""
    monkeypatch.setattr(petloc.cli.train, "train", lambda cfg: {"val/iou": 0.5, "val/iou_best": 0.6})
    assert main(make_cfg("optimized_metric=null")) is None
    assert main(make_cfg("optimized_metric=val/iou")) == 0.5


@pytest.mark.slow
def test_help_lists_every_group_with_its_options_and_three_examples() -> None:
    result = subprocess.run([str(PETLOC_TRAIN), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    conf = REPO / "conf"
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        options = ", ".join(sorted(f.stem for f in group.glob("*.yaml")))
        assert f"{group.name}: {options}" in lines
    examples = lines[lines.index("Examples:") + 1 :]
    commands = [line.strip() for line in examples if line.startswith("  petloc-train ")]
    assert len(commands) == 3
    # each example composes: its groups, options and keys exist (the first value of a sweep)
    with initialize_config_dir(str(conf), version_base="1.3"):
        for command in commands:
            overrides = [arg for arg in shlex.split(command)[1:] if arg != "-m"]
            compose(
                "train", overrides=[re.sub(r",.*", "", arg) for arg in overrides], return_hydra_config=True
            )
