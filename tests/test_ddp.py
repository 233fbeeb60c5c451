"""Lightning DDP over two CPU processes (gloo), through the console script so Lightning's launcher
starts the second rank the way a user's run does: it trains, validates, writes checkpoints, and the
val/iou it logs is the one a single process computes on the same validation set.

The validation set here has an odd size on purpose: a DistributedSampler pads it to a multiple of the
world size by repeating images, which would weigh those images twice in every logged metric.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from petloc.cli.evaluate import evaluate
from petloc.data.datamodule import LocalizationDataModule
from tests.conftest import PETLOC_TRAIN, event_scalars

WORLD_SIZE, BATCH, EPOCHS = 2, 4, 2
# 54 synthetic images: 48 boxed, split 37 train / 11 validation (odd: see the module docstring)
N_SYNTHETIC = 54
# per-image metrics: exactly the single process's. val/loss is not among them: the centre head's loss
# is normalised over each batch, and the two ranks batch the validation set differently (6+5 images).
METRICS = ("val/iou", "val/acc50", "val/acc75", "val/iou_pooled", "val/iou_mean_box")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_logs_the_single_process_val_iou(
    tmp_path: Path, cache_dir: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    run = tmp_path / "run"
    command = [
        str(PETLOC_TRAIN),
        f"hydra.run.dir={run}",
        f"paths.cache_dir={cache_dir}",
        "trainer=ddp_cpu",
        f"trainer.devices={WORLD_SIZE}",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.check_val_every_n_epoch=1",  # one validation per epoch, each compared below
        "trainer.max_time=null",
        "trainer.enable_progress_bar=false",
        "image_size=64",
        f"data.synthetic.n={N_SYNTHETIC}",
        "data.min_epoch_images=1",
        f"data.batch_size={BATCH}",
        "data.num_workers=0",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=540)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert f"Starting with {WORLD_SIZE} processes" in output
    # every rank runs the training function; what it prints for the user is printed once
    for printed in ("config (whole in", "usable boxed images", "model: backbone=", "run folder: "):
        assert output.count(printed) == 1, printed

    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    datamodule: LocalizationDataModule = instantiate(OmegaConf.create(best["petloc_config"]).data)
    datamodule.setup("fit")
    n_train, n_val = len(datamodule.train_records), len(datamodule.val_records)
    assert n_val % WORLD_SIZE == 1

    # Each rank trained on its half of the training set: half the optimizer steps of one process.
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS
    assert metrics["global_step"] == EPOCHS * (math.ceil(n_train / WORLD_SIZE) // BATCH)

    scalars = event_scalars(run / "tensorboard")
    logged = {tag: [value for _, value in scalars[tag]] for tag in (*METRICS, "val/loss")}
    assert len(logged["val/iou"]) == EPOCHS
    best_epoch = max(range(EPOCHS), key=lambda e: logged["val/iou"][e])
    (score,) = [
        float(v["best_model_score"])
        for k, v in best["callbacks"].items()
        if "ModelCheckpoint" in k and v["monitor"] == "val/iou"
    ]
    assert score == pytest.approx(logged["val/iou"][best_epoch], abs=1e-7)
    # per_image_val.csv: both ranks' shares of the best validation, every val image once
    with (run / "per_image_val.csv").open(newline="") as handle:
        per_image = {row["image"]: float(row["iou"]) for row in csv.DictReader(handle)}
    assert sorted(per_image) == sorted(r.image_id for r in datamodule.val_records)
    assert sum(per_image.values()) / n_val == pytest.approx(logged["val/iou"][best_epoch], abs=1e-5)

    single = evaluate(
        make_cfg(
            f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
            f"output={tmp_path / 'eval'}",
            config_name="eval",
        )
    )
    assert single["n_images"] == n_val
    for name in METRICS:
        assert single[name] == pytest.approx(logged[name][best_epoch], abs=1e-5), name
    assert single["val/loss"] == pytest.approx(logged["val/loss"][best_epoch], rel=0.02)
