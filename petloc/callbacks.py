"""Lightning callbacks petloc configures by default (``conf/callbacks/``)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA


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
