"""Lightning callbacks petloc configures by default (``conf/callbacks/``), and the per-image
validation record that training (``per_image_val.csv``) and ``petloc-eval`` (``per_image.csv``) write."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from lightning.pytorch.callbacks import LearningRateMonitor as LightningLearningRateMonitor
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from petloc.data.records import Record
from petloc.metrics import paired_box_iou

# One row per validation image. Boxes are normalized xyxy in [0, 1] of the image (the records'
# convention: continuous coordinates, independent of resizing); "image" is the record's image_id.
PER_IMAGE_COLUMNS = (
    "image",
    "iou",
    "pred_xmin",
    "pred_ymin",
    "pred_xmax",
    "pred_ymax",
    "true_xmin",
    "true_ymin",
    "true_xmax",
    "true_ymax",
)


class EMAWeightAveraging(LightningEMA):
    """Lightning's EMA of the weights, which uses the live weights until averaging has begun.

    With ``update_starting_at_step=N`` Lightning's callback still swaps its average in for every
    validation, checkpoint and the end of training, even before step N when that "average" is only
    the initial copy of the weights: a run shorter than N steps would validate, save and finish with
    untrained weights. Here validation, ``best.ckpt``/``last.ckpt``'s ``state_dict`` and the final
    model are the live weights until the first average exists, and the average from then on.
    """

    def _averaging(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaging():
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaging():
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaging():
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        averaging = self._averaging()
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        live = checkpoint.get("current_model_state")
        if live is None:
            return
        if not averaging:
            # the weights that were validated; resuming still finds Lightning's layout
            checkpoint["state_dict"] = live
            return
        # The average covers parameters and buffers only. Other module state (persistent metric
        # states such as val/iou_best's running max) lives in the live module; the averaged copy
        # still holds its initial value (-inf for a max), so it is taken from the live module.
        averaged = {name for name, _ in pl_module.named_parameters()}
        averaged |= {name for name, _ in pl_module.named_buffers()}
        for key in checkpoint["state_dict"].keys() - averaged:
            if key in live:
                checkpoint["state_dict"][key] = live[key]


class LearningRateMonitor(LightningLearningRateMonitor):
    """Lightning's learning-rate monitor, its rows dated like every other logged row: with the epoch.

    Lightning adds the epoch to what the module logs, but this callback writes to the loggers itself;
    without it, metrics.csv's ``epoch`` column would be empty on the learning-rate rows, and
    petloc-compare, which places every value by its epoch, could not read them.
    """

    def _extract_stats(self, trainer: L.Trainer, interval: str) -> dict[str, float]:
        stats = super()._extract_stats(trainer, interval)
        if stats:
            stats["epoch"] = trainer.current_epoch
        return stats


class CloseMosaic(L.Callback):
    """Stop mosaics for the last share of the training budget (``augment.mosaic_until``), as YOLO's
    ``close_mosaic`` does: the final, low learning-rate stretch fits the single-image distribution
    that validation and users' photos have. Progress is the module's share of its step or
    wall-clock budget, so a 10-minute run stops mosaics after ``mosaic_until`` x 10 minutes."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not datamodule.augment.mosaic:
            return
        datamodule.set_mosaic(pl_module.training_progress() < datamodule.augment.mosaic_until)


class PerImageIoU(L.Callback):
    """Keeps every validation image's predicted box, true box and IoU, as ``validation_step`` scored them.

    ``validation_step`` returns the boxes it scored, which Lightning hands to this callback with the
    batch: the per-image IoUs average to the logged ``val/iou`` without a second forward pass, with
    the weights that were validated (EMA swaps included). Each validation starts a fresh record.
    """

    def __init__(self) -> None:
        self.ious: list[Tensor] = []
        self.boxes: list[Tensor] = []
        self.targets: list[Tensor] = []
        self.indices: list[Tensor] = []

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ious, self.boxes, self.targets, self.indices = [], [], [], []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        pred = outputs["box"].detach().float()
        target = batch["box"].float()
        iou, _, _ = paired_box_iou(pred, target)
        self.ious.append(iou.cpu())
        self.boxes.append(pred.cpu())
        self.targets.append(target.cpu())
        self.indices.append(batch["index"].cpu())

    def result(self) -> tuple[np.ndarray, Tensor, Tensor, np.ndarray]:
        """(IoU [N], predicted boxes [N, 4], true boxes [N, 4], dataset index [N]) in validation order."""
        return (
            torch.cat(self.ious).numpy(),
            torch.cat(self.boxes),
            torch.cat(self.targets),
            torch.cat(self.indices).numpy(),
        )


def write_per_image_csv(
    path: Path, records: Sequence[Record], result: tuple[np.ndarray, Tensor, Tensor, np.ndarray]
) -> None:
    """Write :class:`PerImageIoU`'s ``result`` as :data:`PER_IMAGE_COLUMNS`, in dataset order.

    Written beside ``path`` and renamed over it, so a run killed mid-write keeps the previous file.
    """
    ious, boxes, targets, indices = result
    order = np.argsort(indices, kind="stable")
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PER_IMAGE_COLUMNS)
        for i in order:
            coordinates = [*boxes[i].tolist(), *targets[i].tolist()]
            writer.writerow(
                [records[int(indices[i])].image_id, f"{ious[i]:.6f}", *(f"{v:.6f}" for v in coordinates)]
            )
    os.replace(temporary, path)


class PerImageValidation(PerImageIoU):
    """``per_image_val.csv``: every validation image's IoU and boxes from the validation that scored
    the best ``monitor`` value so far, i.e. the one ``checkpoints/best.ckpt`` holds.

    Each validation's per-image results are kept until its ``monitor`` value is known; the file is
    rewritten only when that value beats the best one (strictly, as ModelCheckpoint decides), so runs
    can be compared image by image (``petloc-compare --baseline``) without evaluating them again.
    The best value is saved in checkpoints, so a resumed run goes on from it. Under DDP each rank
    validates its share of the images; rank zero gathers and writes them all.
    """

    def __init__(self, path: str, monitor: str = "val/iou") -> None:
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best = -math.inf

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or trainer.fast_dev_run or value is None:
            return
        score = float(value)
        if not score > self.best:  # also False for NaN
            return
        self.best = score
        result = self.result()
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            shares: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, result)
            result = (
                np.concatenate([share[0] for share in shares]),
                torch.cat([share[1] for share in shares]),
                torch.cat([share[2] for share in shares]),
                np.concatenate([share[3] for share in shares]),
            )
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_per_image_csv(self.path, trainer.datamodule.val_records, result)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict["best"])


class LastCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` after every epoch, of a run whose last epoch always validates.

    Lightning validates only every ``check_val_every_n_epoch``-th epoch, so a run whose budget ends on
    another one (``trainer.max_epochs=1`` with validation every second epoch, ``trainer.max_time`` or
    ``trainer.max_steps`` in mid-epoch) would end without val/iou, without ``best.ckpt`` or with final
    metrics epochs old. Here the final epoch of ``max_epochs`` validates at its end, and the batch in
    which ``max_time`` (Lightning's Timer), ``max_steps`` or another callback stops the run validates
    before training ends. It is a checkpoint callback because Lightning runs those after all others,
    the Timer included, so it sees a stop decided in the same batch.
    """

    # the trainer's check_val_every_n_epoch, restored at the start of every epoch but a final one
    _every_n_epochs_to_validate: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._every_n_epochs_to_validate = trainer.check_val_every_n_epoch

    def _validate_this_epoch(self, trainer: L.Trainer) -> None:
        # None means validation by steps, where Lightning validates a stopping batch anyway
        if trainer.check_val_every_n_epoch is not None:
            trainer.check_val_every_n_epoch = 1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        trainer.check_val_every_n_epoch = self._every_n_epochs_to_validate
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
            self._validate_this_epoch(trainer)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        steps_done = trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps
        if trainer.should_stop or steps_done:
            # a stop request is what makes Lightning validate in mid-epoch
            trainer.should_stop = True
            self._validate_this_epoch(trainer)
