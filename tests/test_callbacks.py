"""petloc's callbacks: EMA (the live weights until averaging begins, the average after), CloseMosaic,
LastCheckpoint (every run ends validated and checkpointed) and PerImageValidation (per_image_val.csv
of the best validation, its IoUs checked against torchvision)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torchvision.ops import box_iou

from petloc.callbacks import PerImageValidation
from petloc.cli.evaluate import evaluate
from petloc.train import train
from tests.conftest import event_scalars

TINY = (
    "image_size=64",
    "data.synthetic.n=60",
    "data.min_epoch_images=1",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_time=null",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",  # one validation per epoch (the default is every second)
    "trainer.enable_progress_bar=false",
)


def tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("start", [100, 0], ids=["before-averaging", "averaging"])
def test_checkpoint_holds_the_weights_that_were_validated(
    start: int, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """About 10 steps of `callbacks=ema`: with averaging from step 100 (its default) nothing is averaged
    yet, so validation and best.ckpt must use the trained live weights (Lightning's callback would give
    the initial copy); with averaging from step 0 they use the average, which differs from the live
    weights."""
    metrics = train(make_cfg(*TINY, "callbacks=ema", f"callbacks.ema.update_starting_at_step={start}"))
    assert 0 < metrics["global_step"] < 100
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    live_is_saved = tensors_equal(best["state_dict"], best["current_model_state"])
    assert live_is_saved == (start == 100)

    # the saved state_dict is what validation scored: petloc-eval reproduces the logged best val/iou
    scored = evaluate(make_cfg(f"ckpt_path={tmp_path / 'checkpoints' / 'best.ckpt'}", config_name="eval"))
    assert scored["val/iou"] == pytest.approx(metrics["val/iou_best"], abs=1e-4)


def test_mosaics_stop_after_their_share_of_the_budget(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """4 epochs, mosaics until half the budget: epochs 0 and 1 start at progress 0 and 0.25 and train
    on mosaics, epochs 2 and 3 (0.5, 0.75) on single images; train/mosaic logs the share per epoch."""
    train(make_cfg(*TINY, "trainer.max_epochs=4", "augment.mosaic=1.0", "augment.mosaic_until=0.5"))
    shares = [value for _, value in event_scalars(tmp_path / "tensorboard")["train/mosaic"]]
    assert len(shares) == 4
    assert min(shares[:2]) > 0.9 and max(shares[2:]) == 0.0, shares


# ---- every run ends with a validation and a checkpoint ------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def validated_epochs(run: Path) -> dict[int, float]:
    """val/iou by epoch from the run's metrics.csv."""
    return {
        int(row["epoch"]): float(row["val/iou"]) for row in read_csv(run / "metrics.csv") if row["val/iou"]
    }


def assert_ends_validated(run: Path, metrics: dict[str, float]) -> int:
    """The run's last epoch validated, its final metrics are that validation's, and both checkpoints
    hold it; returns that epoch."""
    logged = validated_epochs(run)
    last_epoch = max(int(row["epoch"]) for row in read_csv(run / "metrics.csv"))
    assert max(logged) == last_epoch, logged
    assert metrics["val/iou"] == pytest.approx(logged[last_epoch])
    assert json.loads((run / "metrics.json").read_text())["val/iou"] == pytest.approx(logged[last_epoch])
    assert [value for _, value in event_scalars(run / "tensorboard")["val/iou"]] == pytest.approx(
        list(logged.values())
    )
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (last_epoch, metrics["global_step"])
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "per_image_val.csv").is_file()
    return last_epoch


def test_a_run_shorter_than_the_validation_interval_ends_validated(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """One epoch, validation every second epoch (the default): the epoch validates anyway, and
    per_image_val.csv holds that validation: every val image once, its true box, and IoUs that
    torchvision computes from the written boxes and that average to the logged val/iou."""
    cfg = make_cfg(*TINY, "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=2")
    metrics = train(cfg)

    assert assert_ends_validated(tmp_path, metrics) == 0
    rows = read_csv(tmp_path / "per_image_val.csv")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert [row["image"] for row in rows] == [r.image_id for r in datamodule.val_records]
    pred = torch.tensor([[float(row[f"pred_{k}"]) for k in ("xmin", "ymin", "xmax", "ymax")] for row in rows])
    true = torch.tensor([[float(row[f"true_{k}"]) for k in ("xmin", "ymin", "xmax", "ymax")] for row in rows])
    torch.testing.assert_close(true, torch.tensor([r.box for r in datamodule.val_records]), atol=1e-5, rtol=0)
    ious = torch.tensor([float(row["iou"]) for row in rows])
    torch.testing.assert_close(ious, box_iou(pred, true).diagonal(), atol=1e-4, rtol=0)
    assert float(ious.mean()) == pytest.approx(metrics["val/iou_best"], abs=1e-5)


def test_a_time_limited_run_ends_with_a_validation_of_its_final_epoch(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """trainer.max_time stops the run in mid-epoch, long before the 1000th epoch would validate:
    the stopping batch validates, so the final metrics are the final epoch's."""
    metrics = train(
        make_cfg(
            *TINY,
            "trainer.max_epochs=10000",
            "trainer.max_time=00:00:00:03",
            "trainer.check_val_every_n_epoch=1000",
        )
    )

    assert_ends_validated(tmp_path, metrics)
    assert len(validated_epochs(tmp_path)) == 1


def test_a_run_stopped_by_max_steps_in_mid_epoch_validates(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    metrics = train(make_cfg(*TINY, "trainer.max_steps=3", "trainer.check_val_every_n_epoch=2"))

    assert metrics["global_step"] == 3
    assert assert_ends_validated(tmp_path, metrics) == 0


# ---- per_image_val.csv follows the best validation ----------------------------------------------


def validate(callback: PerImageValidation, pred: Tensor, target: Tensor) -> float:
    """One validation of two batches seen by ``callback``; returns the mean IoU it logs as val/iou."""
    ious = box_iou(pred, target).diagonal()
    trainer = SimpleNamespace(
        callback_metrics={"val/iou": ious.mean()},
        sanity_checking=False,
        fast_dev_run=False,
        world_size=1,
        is_global_zero=True,
        datamodule=SimpleNamespace(val_records=[SimpleNamespace(image_id=f"img{i}") for i in range(4)]),
    )
    module = nn.Module()
    callback.on_validation_start(trainer, module)  # type: ignore[arg-type]
    for indices in (torch.tensor([2, 3]), torch.tensor([0, 1])):  # not in dataset order
        batch = {"box": target[indices], "index": indices}
        callback.on_validation_batch_end(trainer, module, {"box": pred[indices]}, batch, 0)  # type: ignore[arg-type]
    callback.on_validation_end(trainer, module)  # type: ignore[arg-type]
    return float(ious.mean())


def test_per_image_val_is_rewritten_only_when_val_iou_improves(tmp_path: Path) -> None:
    path = tmp_path / "per_image_val.csv"
    target = torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 4)
    good = torch.tensor(
        [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.25], [0.0, 0.0, 0.25, 0.5], [0.25] * 2 + [0.5] * 2]
    )
    callback = PerImageValidation(str(path))

    first = validate(callback, good * 0.5, target)
    written = path.read_text()
    assert validate(callback, good * 0.25, target) < first  # worse: the file stays
    assert path.read_text() == written
    best = validate(callback, good, target)  # better: rewritten
    rows = read_csv(path)
    assert [row["image"] for row in rows] == ["img0", "img1", "img2", "img3"]
    assert [float(row["iou"]) for row in rows] == pytest.approx([1.0, 0.5, 0.5, 0.25])
    assert sum(float(row["iou"]) for row in rows) / 4 == pytest.approx(best)

    # a resumed run remembers the best value: a worse first validation after resuming keeps the file
    resumed = PerImageValidation(str(path))
    resumed.load_state_dict(callback.state_dict())
    validate(resumed, good * 0.5, target)
    assert read_csv(path) == rows
