"""petloc.train.train end to end on the synthetic set: wiring for every mode and head, and one real run
whose run folder (TensorBoard events, metrics.csv, checkpoints, metrics.json) is what README.md ("What a
run leaves") promises."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.ops import box_iou

from petloc import CONFIG_DIR
from petloc.checkpoint import CheckpointMismatchError
from petloc.models.module import PetLocModule
from petloc.train import init_weights, train
from tests.conftest import event_scalars
from tests.helpers import TrainedRun

# Small and single-process: the CI machine may be busy, and workers only add start-up time here.
SMALL = ("image_size=64", "data.num_workers=0")
FAST = ("debug=fast", "data.synthetic.n=48")  # one batch through train and val, on a small synthetic set
VAL_METRICS = ("val/iou", "val/iou_best", "val/acc50", "val/acc75", "val/iou_pooled", "val/iou_mean_box")
RUN_METRICS = (*VAL_METRICS, "train/loss", "val/loss", "lr")


def assert_metrics(metrics: dict[str, float], mode: str) -> None:
    expected = set(RUN_METRICS) | ({"val/cls_acc"} if mode != "box" else set())
    assert expected <= set(metrics), expected - set(metrics)
    assert all(math.isfinite(metrics[key]) for key in expected)
    for key in (*VAL_METRICS, *(["val/cls_acc"] if mode != "box" else [])):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["val/iou_best"] >= metrics["val/iou"]
    if mode == "box":
        assert "val/cls_acc" not in metrics


# every head and every mode at least once, in four runs
@pytest.mark.parametrize(
    ("mode", "head"), [("box", "center"), ("box", "dwsep"), ("species", "conv"), ("breed", "pooled")]
)
def test_fast_dev_run_trains_and_validates(
    mode: str, head: str, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    mosaic_off = ["augment.mosaic=0"] if head != "center" else []  # global heads cannot learn from mosaics
    metrics = train(make_cfg(*FAST, f"mode={mode}", f"head={head}", *SMALL, *mosaic_off))

    assert_metrics(metrics, mode)
    assert metrics["global_step"] == 1  # fast_dev_run: exactly one training batch
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == pytest.approx(metrics)


def scalars(folder: Path) -> dict[str, list[float]]:
    """Every scalar series in the event files of ``folder``, values only, in logging order."""
    return {tag: [value for _, value in series] for tag, series in event_scalars(folder).items()}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[dict[str, float], Path]:
    """One real two-epoch run (not fast_dev_run, so loggers and checkpoints are on), shared by the tests."""
    output = tmp_path_factory.mktemp("short-run")
    overrides = [
        f"paths.output_dir={output}",
        f"paths.cache_dir={cache_dir}",
        "mode=species",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",  # the checks below read one validation per epoch
        "trainer.max_time=null",
        "trainer.enable_progress_bar=false",
        "data.synthetic.n=60",
        "data.min_epoch_images=1",
        "data.batch_size=8",
        *SMALL,
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return train(cfg), output


def test_short_run_returns_and_writes_the_final_metrics(short_run: tuple[dict[str, float], Path]) -> None:
    metrics, output = short_run
    assert_metrics(metrics, "species")
    assert metrics["epochs"] == 2
    assert json.loads((output / "metrics.json").read_text()) == pytest.approx(metrics)


def test_short_run_logs_scalars_directly_in_tensorboard(short_run: tuple[dict[str, float], Path]) -> None:
    metrics, output = short_run
    tensorboard = output / "tensorboard"
    assert list(tensorboard.glob("events.out.tfevents.*")), "event files must lie directly in tensorboard/"
    assert not [p for p in tensorboard.iterdir() if p.is_dir()], "no version_N (or other) subfolders"

    logged = scalars(tensorboard)
    assert set(RUN_METRICS) | {"val/cls_acc"} <= set(logged)
    per_epoch = logged["val/iou"]  # the two validations, and nothing else (the test below)
    assert per_epoch[-1] == pytest.approx(metrics["val/iou"])
    assert max(per_epoch) == pytest.approx(metrics["val/iou_best"])


def test_metrics_csv_holds_the_scalars_tensorboard_holds(short_run: tuple[dict[str, float], Path]) -> None:
    """metrics.csv at the run folder's top: a row per logging call (with its epoch and step), and per
    scalar the same values, in the same order, as the event files."""
    _, output = short_run
    with (output / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    logged = scalars(output / "tensorboard")
    assert set(rows[0]) - {"step"} == set(logged)
    for tag, values in logged.items():
        assert [float(row[tag]) for row in rows if row[tag]] == pytest.approx(values), tag
    assert [int(row["epoch"]) for row in rows if row["val/iou"]] == [0, 1]


def test_tensorboard_holds_only_measured_values(short_run: tuple[dict[str, float], Path]) -> None:
    _, output = short_run
    assert len(scalars(output / "tensorboard")["val/iou"]) == 2  # one value per epoch, nothing else


def test_checkpoints_load_with_weights_only(short_run: tuple[dict[str, float], Path]) -> None:
    metrics, output = short_run
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(output / "checkpoints" / name, weights_only=True, map_location="cpu")
        assert checkpoint["state_dict"]
        assert checkpoint["petloc_config"]["mode"]["name"] == "species"
    best = torch.load(output / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    state = next(v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["monitor"] == "val/iou"
    assert float(state["best_model_score"]) == pytest.approx(metrics["val/iou_best"])


def test_the_mean_box_baseline_is_the_training_sets_mean_box(
    short_run: tuple[dict[str, float], Path],
) -> None:
    """val/iou_mean_box: the coordinate-wise mean of the run's training boxes, predicted for every
    validation image, scored with torchvision's IoU (the run's split rebuilt from its checkpoint)."""
    metrics, output = short_run
    config = torch.load(output / "checkpoints" / "last.ckpt", weights_only=True)["petloc_config"]
    datamodule = instantiate(OmegaConf.create(config).data)
    datamodule.setup("fit")
    train_boxes = torch.tensor([r.box for r in datamodule.train_records], dtype=torch.float64)
    val_boxes = torch.tensor([r.box for r in datamodule.val_records], dtype=torch.float64)
    expected = box_iou(train_boxes.mean(dim=0, keepdim=True), val_boxes)[0].mean()
    assert metrics["val/iou_mean_box"] == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(ValueError, match="no training records"):
        instantiate(OmegaConf.create(config).data).train_mean_box()  # before setup()


def test_init_from_copies_the_network_and_nothing_of_the_run(
    trained_run: TrainedRun,
    make_cfg: Callable[..., DictConfig],
) -> None:
    """A box-only run started from the tiny species checkpoint: every backbone and head tensor (BN
    statistics included) comes from the file, the species classifier is left out, and the run's own
    state (best val/iou so far, the mean-box baseline) stays fresh."""
    model = PetLocModule(make_cfg("alpha=0.25", "image_size=64", "mode=box"))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    stored = torch.load(trained_run.best, map_location="cpu", weights_only=True)["state_dict"]
    assert "classifier.weight" in stored and float(stored["val_iou_best.max_value"]) > 0

    init_weights(model, str(trained_run.best))

    network = [k for k in fresh if k.startswith(("backbone.", "head."))]
    assert network and any("running_mean" in k for k in network)
    for key in network:
        assert torch.equal(model.state_dict()[key], stored[key]), key
    assert model.classifier is None
    for key in set(fresh) - set(network):
        assert torch.equal(model.state_dict()[key], fresh[key]), key


def test_init_from_another_architecture_names_both(
    trained_run: TrainedRun,
    make_cfg: Callable[..., DictConfig],
) -> None:
    model = PetLocModule(make_cfg("alpha=0.5", "image_size=64"))
    with pytest.raises(CheckpointMismatchError) as error:
        init_weights(model, str(trained_run.best))
    message = str(error.value)
    assert f"init_from={trained_run.best}" in message
    assert "checkpoint: backbone=mobilenetv1 alpha=0.25" in message
    assert "this run:   backbone=mobilenetv1 alpha=0.5" in message


def test_train_starts_from_init_from(
    trained_run: TrainedRun,
    make_cfg: Callable[..., DictConfig],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="petloc.train"):
        metrics = train(make_cfg(*FAST, f"init_from={trained_run.best}"))
    assert metrics["global_step"] == 1
    assert f"init_from={trained_run.best}:" in caplog.text and "classifier.weight" in caplog.text


def test_the_plateau_schedule_steps_only_after_validating_epochs(make_cfg: Callable[..., DictConfig]) -> None:
    """Validation every second epoch (the default): the plateau schedule must not ask for a val/iou
    after an epoch that did not validate (it raised MisconfigurationException at epoch 1)."""
    cfg = make_cfg(
        "scheduler=plateau",
        "alpha=0.25",
        "data.synthetic.n=48",
        "data.min_epoch_images=1",
        "data.batch_size=8",
        "trainer.max_epochs=4",
        "trainer.max_time=null",
        "trainer.check_val_every_n_epoch=2",
        "trainer.enable_progress_bar=false",
        *SMALL,
    )
    metrics = train(cfg)
    assert metrics["epochs"] == 4 and 0 <= metrics["val/iou"] <= 1
