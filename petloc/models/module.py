"""The LightningModule: timm backbone + pluggable box head (+ class branch), losses, metrics, logs."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from petloc.metrics import LocalizationMetrics
from petloc.models.heads import HeadOutput
from petloc.models.refine import DEFAULT_MARGIN, box_from_frame, crop_to_frame, refine_frame
from petloc.viz import box_grid

log = logging.getLogger(__name__)


class PetLocModule(L.LightningModule):
    """Single-object localization with an optional class branch.

    ``backbone`` is any module returning a list of feature maps and carrying timm's
    ``feature_info`` and ``pretrained_cfg``; ``head`` is a partial taking ``in_channels``;
    ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: Callable[..., nn.Module],
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        mode: str = "box",
        class_names: list[str] | None = None,
        cls_weight: float = 1.0,
        image_size: int = 128,
        log_images: int = 16,
        nan_policy: str = "stop",
        flip_test: bool = False,
        refine: bool = False,
        refine_margin: float = DEFAULT_MARGIN,
        backbone_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        # Only plain values go into the checkpoint's hyper-parameters, so checkpoints load with
        # torch.load(weights_only=True); the model is rebuilt from the run's Hydra config instead.
        self.save_hyperparameters(ignore=["backbone", "head", "loss", "optimizer", "scheduler"], logger=False)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config: dict[str, Any] = {}
        self.backbone = backbone
        channels = backbone.feature_info.channels()
        self.head = head(in_channels=channels)
        self.box_loss = loss
        # the names travel in the checkpoint's hyper-parameters: predict names classes without the data
        num_classes = len(class_names or [])
        if mode != "box" and num_classes < 2:
            raise ValueError(f"mode={mode!r} needs at least two class names, got {class_names!r}")
        self.classifier = nn.Linear(channels[-1], num_classes) if mode != "box" else None
        cfg = backbone.pretrained_cfg
        self.register_buffer("pixel_mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg["std"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("mean_box", torch.tensor([0.25, 0.25, 0.75, 0.75]))
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_metrics = LocalizationMetrics()
        self.val_baseline = LocalizationMetrics()
        self.val_iou_best = MaxMetric()
        self.val_iou_best.persistent(True)  # a resumed run remembers its best val/iou
        self.skipped_batches = 0
        self._total_steps: float | None = None
        self.val_cls_acc = MulticlassAccuracy(num_classes, average="micro") if self.classifier else None

    # ---- forward ---------------------------------------------------------------------------
    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 NHWC -> normalized float NCHW in channels_last memory (a view, no copy)."""
        x = images.permute(0, 3, 1, 2).float()
        return ((x - self.pixel_mean) / self.pixel_std).contiguous(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> tuple[HeadOutput, Tensor | None]:
        """In eval mode, with the test-time flip and the zoom-in refinement when they are on: what
        validation, eval, predict and export see. A refined output keeps the whole image's dense maps,
        score and class logits; only its box is the second look's (:mod:`petloc.models.refine`), so a
        dense head's val loss is its first look's and a global head's is that of the refined box."""
        x = self.preprocess(images)
        out, logits = self._views(x)
        if self.hparams.refine and not self.training:
            frame = refine_frame(out.box.detach().float().clamp(0, 1), self.hparams.refine_margin)
            zoomed, _ = self._views(crop_to_frame(x, frame))
            out = replace(out, box=box_from_frame(zoomed.box.float(), frame).to(out.box.dtype))
        return out, logits

    def _views(self, x: Tensor) -> tuple[HeadOutput, Tensor | None]:
        """The network on ``x``, and in eval mode with ``flip_test`` also on its mirror image."""
        out, logits = self._predict(x)
        if self.hparams.flip_test and not self.training:
            # test-time flip: the mirrored image votes too (validation, eval, predict and export alike)
            mirrored, mirrored_logits = self._predict(x.flip(-1))
            out = self.head.merge_mirrored(out, mirrored)
            if logits is not None and mirrored_logits is not None:
                logits = (logits + mirrored_logits) / 2
        return out, logits

    def _predict(self, x: Tensor) -> tuple[HeadOutput, Tensor | None]:
        features = self.backbone(x)
        logits = self.classifier(features[-1].mean(dim=(2, 3))) if self.classifier is not None else None
        return self.head(features), logits

    def predict_boxes(self, images: Tensor) -> dict[str, Tensor]:
        """What eval, predict and export return: ``box`` [B, 4] clipped to the frame, ``score`` [B]
        (the centre head's softmax mass around the chosen cell; 1.0 for global heads, which have no
        notion of confidence) and, in class-aware modes, ``class_prob`` [B, C]."""
        out, logits = self(images)
        box = out.box.float().clamp(0, 1)
        # a probability mass: clamped, as a sum of float32 softmax terms can exceed 1 by rounding
        score = out.score.float().clamp(0, 1) if out.score is not None else box.new_ones(box.shape[0])
        result = {"box": box, "score": score}
        if logits is not None:
            result["class_prob"] = torch.softmax(logits.float(), dim=1)
        return result

    # ---- training --------------------------------------------------------------------------
    def _step(self, batch: dict[str, Tensor]) -> tuple[Tensor, HeadOutput, Tensor | None]:
        out, logits = self(batch["image"])
        boxes = batch["boxes"].to(out.box.dtype)
        valid = torch.arange(boxes.shape[1], device=boxes.device) < batch["num_boxes"].view(-1, 1)
        loss = self.head.loss(out, boxes, valid, self.box_loss)
        if logits is not None:
            labels = batch["label"]
            # A mosaic shows several pets but carries one image's label: it trains the boxes only.
            single = (~batch["mosaic"]).float()
            cross_entropy = F.cross_entropy(logits.float(), labels, reduction="none")
            cross_entropy = (cross_entropy * single).sum() / single.sum().clamp_min(1.0)
            loss = loss + self.hparams.cls_weight * cross_entropy
        return loss, out, logits

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and datamodule.train_records:
            self.mean_box.copy_(datamodule.train_mean_box().to(self.mean_box))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss, _, _ = self._step(batch)
        if not torch.isfinite(loss):
            where = f"epoch {self.current_epoch}, step {self.global_step}, batch {batch_idx}"
            if self.hparams.nan_policy == "skip":
                self.skipped_batches += 1
                log.warning("non-finite loss (%s) at %s: batch skipped (nan_policy=skip)", loss.item(), where)
                self.log("train/skipped_batches", float(self.skipped_batches))
                return None  # Lightning skips the backward pass and optimizer step
            raise FloatingPointError(
                f"non-finite loss ({loss.item()}) at {where}. Lower optimizer.lr, keep "
                "trainer.gradient_clip_val, or set nan_policy=skip to drop such batches."
            )
        self.train_loss(loss.detach())
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        # share of mosaic samples: shows in TensorBoard when augment.mosaic_until stopped them
        self.log("train/mosaic", batch["mosaic"].float().mean(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, out, logits = self._step(batch)
        target = batch["box"].float()
        pred = out.box.float().clamp(0, 1)
        self.val_loss(loss, weight=target.shape[0])  # a short last batch counts by its size
        self.val_metrics.update(pred, target)
        self.val_baseline.update(self.mean_box.expand_as(target), target)
        if logits is not None and self.val_cls_acc is not None:
            self.val_cls_acc.update(logits, batch["label"])
        if batch_idx == 0 and self.hparams.log_images:
            k = self.hparams.log_images
            self._image_grid = box_grid(batch["image"][:k], pred[:k], target[:k])

    def on_validation_epoch_end(self) -> None:
        m = self.val_metrics.compute()
        self.val_iou_best(m["iou"])
        values = {
            "val/loss": self.val_loss.compute(),
            "val/iou": m["iou"],
            "val/iou_best": self.val_iou_best.compute(),
            "val/acc50": m["acc50"],
            "val/acc75": m["acc75"],
            "val/iou_pooled": m["iou_pooled"],
            "val/iou_mean_box": self.val_baseline.compute()["iou"],
        }
        if self.val_cls_acc is not None:
            values["val/cls_acc"] = self.val_cls_acc.compute()
            self.val_cls_acc.reset()
        self.log("val/iou", values.pop("val/iou"), prog_bar=True)
        self.log_dict(values)
        if not self.trainer.sanity_checking and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[-1]["lr"])  # the head's
        for metric in (self.val_loss, self.val_metrics, self.val_baseline):
            metric.reset()
        grid = getattr(self, "_image_grid", None)
        experiment = getattr(self.logger, "experiment", None)
        if grid is not None and hasattr(experiment, "add_image") and not self.trainer.sanity_checking:
            experiment.add_image("val/boxes", grid, global_step=self.current_epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["petloc_config"] = self.run_config

    # ---- optimization ----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        # Two groups: a pretrained backbone is fine-tuned at backbone_lr_scale x the head's rate.
        head = [p for name, p in self.named_parameters() if not name.startswith("backbone.")]
        optimizer = self.optimizer_factory(
            params=[{"params": list(self.backbone.parameters())}, {"params": head}]
        )
        optimizer.param_groups[0]["lr"] *= self.hparams.backbone_lr_scale
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val/iou", "interval": "epoch"},
            }
        if isinstance(scheduler, BudgetCosineLR):
            scheduler.bind(self.training_progress)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_progress(self) -> float:
        """Share of the training budget used, by steps or by wall-clock (``trainer.max_time``)."""
        trainer = self.trainer
        shares = []
        if self._total_steps is None:  # Lightning recomputes this property on every access
            self._total_steps = float(trainer.estimated_stepping_batches)
        total = self._total_steps
        if math.isfinite(total) and total > 0:
            shares.append(trainer.global_step / total)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # trainer.max_time's
        remaining = timer.time_remaining("train") if timer is not None else None
        if remaining is not None:
            elapsed = timer.time_elapsed("train")
            shares.append(elapsed / max(elapsed + remaining, 1e-9))
        return min(max(shares, default=0.0), 1.0)


class BudgetCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up, then cosine decay over the training *budget*.

    A 10-minute ``trainer.max_time`` run has no step count known in advance, so the decay follows
    whichever budget is closer to exhaustion: steps (max_epochs/max_steps) or wall-clock time.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 100, min_factor: float = 0.02):
        self.warmup_steps = warmup_steps
        self.min_factor = min_factor
        self._progress: Callable[[], float] = lambda: 0.0
        super().__init__(optimizer, self._factor)

    def bind(self, progress: Callable[[], float]) -> None:
        self._progress = progress

    def _factor(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, self.warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * self._progress()))
        return warm * (self.min_factor + (1 - self.min_factor) * cosine)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("_progress", None)
        return state
