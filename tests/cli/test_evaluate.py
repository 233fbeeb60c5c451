"""petloc-eval: reproduces the logged validation metrics and writes its reports."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from petloc.cli.evaluate import evaluate
from petloc.config import ConfigError
from tests.helpers import TrainedRun  # the session's trained_run fixture (tests/conftest.py)

METRICS = {"val/iou", "val/acc50", "val/acc75", "val/iou_pooled", "val/iou_mean_box", "val/cls_acc"}


def logged(run_dir: Path, tag: str) -> list[float]:
    """A scalar's value at each validation of the run, from its TensorBoard event files.

    Only steps where ``val/loss`` was logged count: the training script also writes placeholder
    zeros of ``val/iou`` and friends at step 0 with the hyper-parameters.
    """
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    val_steps = [e.step for e in events.Scalars("val/loss")]
    by_step = {e.step: e.value for e in events.Scalars(tag)}
    return [by_step[step] for step in val_steps]


def read_per_image(path: Path) -> dict[str, float]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    boxes = [f"{kind}_{edge}" for kind in ("pred", "true") for edge in ("xmin", "ymin", "xmax", "ymax")]
    assert rows and list(rows[0]) == ["image", "iou", *boxes]
    return {row["image"]: float(row["iou"]) for row in rows}


def test_eval_reproduces_the_logged_val_iou_of_the_best_epoch(
    trained_run: TrainedRun,
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
) -> None:
    val_iou = logged(trained_run.run_dir, "val/iou")
    assert len(val_iou) == 2  # one value per epoch
    best_epoch = int(np.argmax(val_iou))
    stored = torch.load(trained_run.best, map_location="cpu", weights_only=True)["callbacks"]
    (best_score,) = [  # the best.ckpt callback (last.ckpt's has no monitor)
        float(v["best_model_score"]) for k, v in stored.items() if "'monitor': 'val/iou'" in k
    ]
    assert best_score == pytest.approx(val_iou[best_epoch], abs=1e-7)

    out = tmp_path / "eval"
    cfg = make_cfg(f"ckpt_path={trained_run.best}", f"output={out}", "worst_k=4", config_name="eval")
    metrics = evaluate(cfg)
    assert abs(metrics["val/iou"] - val_iou[best_epoch]) < 1e-4
    for name in METRICS - {"val/iou"}:  # the other metrics of that epoch too
        assert abs(metrics[name] - logged(trained_run.run_dir, name)[best_epoch]) < 1e-4, name
    assert json.loads((out / "metrics.json").read_text()) == metrics

    # 60 images, 20% validation per breed: the split the run was validated on
    assert metrics["n_images"] == 12
    assert metrics.keys() >= METRICS
    ious = read_per_image(out / "per_image.csv")
    assert len(ious) == metrics["n_images"]
    assert np.mean(list(ious.values())) == pytest.approx(metrics["val/iou"], abs=1e-6)
    assert np.mean([v >= 0.5 for v in ious.values()]) == pytest.approx(metrics["val/acc50"], abs=1e-6)
    # what training wrote for its best validation is what evaluating best.ckpt gives, image by image
    during_training = read_per_image(trained_run.run_dir / "per_image_val.csv")
    assert during_training.keys() == ious.keys()
    assert [during_training[image] for image in ious] == pytest.approx(list(ious.values()), abs=1e-4)
    with Image.open(out / "worst_k.png") as sheet:  # 4 tiles of 64 px, 2 px padding, one row
        assert sheet.size == (4 * 66 + 2, 66 + 2)
    with Image.open(out / "iou_histogram.png") as histogram:
        assert histogram.size[0] > 100


def test_eval_on_a_whole_folder_with_data_overrides(
    trained_run: TrainedRun,
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
) -> None:
    """``data=oxford_pets data.root=... data.val_fraction=1.0`` scores every boxed image of the folder."""
    cfg = make_cfg(
        f"ckpt_path={trained_run.best}",
        f"output={tmp_path}",
        "data=oxford_pets",
        f"data.root={trained_run.data_root}",
        "data.val_fraction=1.0",
        "data.batch_size=16",
        config_name="eval",
    )
    metrics = evaluate(cfg)
    boxed = {p.stem for p in (trained_run.data_root / "annotations" / "xmls").glob("*.xml")}
    ious = read_per_image(tmp_path / "per_image.csv")
    assert set(ious) == boxed and metrics["n_images"] == len(boxed) > 12
    assert np.mean(list(ious.values())) == pytest.approx(metrics["val/iou"], abs=1e-6)
    with Image.open(tmp_path / "worst_k.png") as sheet:  # 16 worst, 8 per row
        assert sheet.size == (8 * 66 + 2, 2 * 66 + 2)


def test_eval_with_worst_k_0_writes_no_sheet(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg(f"ckpt_path={trained_run.best}", f"output={tmp_path}", "worst_k=0", config_name="eval")
    evaluate(cfg)
    assert {p.name for p in tmp_path.iterdir()} >= {"metrics.json", "per_image.csv"}
    assert not (tmp_path / "worst_k.png").exists()


@pytest.mark.slow
def test_console_script_writes_into_its_hydra_run_folder(
    trained_run: TrainedRun,
    tmp_path: Path,
) -> None:
    script = shutil.which("petloc-eval", path=str(Path(sys.executable).parent))
    assert script is not None, "petloc-eval is not installed in this environment"
    result = subprocess.run(
        [script, f"ckpt_path={trained_run.best}", "worst_k=2", "progress=false"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "eval").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert abs(metrics["val/iou"] - max(logged(trained_run.run_dir, "val/iou"))) < 1e-4
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert {"per_image.csv", "iou_histogram.png", "worst_k.png"} <= {p.name for p in run_dir.iterdir()}


def test_eval_refuses_another_input_side_than_the_checkpoint_was_trained_at(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """The head reads normalized box sizes from extents in pixels, so another side scales every box."""
    cfg = make_cfg(
        f"ckpt_path={trained_run.best}", f"output={tmp_path}", "+data.image_size=96", config_name="eval"
    )
    with pytest.raises(
        ConfigError, match=r"data.image_size=96 differs from image_size=64.*drop data.image_size"
    ):
        evaluate(cfg)
    assert not (tmp_path / "metrics.json").exists()
