"""The LightningModule: timm backbone + pluggable box head (+ class branch), losses, metrics, logs."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from petloc.metrics import LocalizationMetrics
from petloc.models.heads import HeadOutput
from petloc.models.options import InferenceOptions
from petloc.models.refine import box_from_frame, crop_to_frame, refine_frame, rescale_box
from petloc.models.schedulers import lr_scheduler_config
from petloc.modes import Mode
from petloc.viz import box_grid

log = logging.getLogger(__name__)


class PetLocModule(L.LightningModule):
    """Single-object localization with an optional class branch, built from a run's config.

    ``config`` is the composed config of ``petloc-train`` (or one read back from a checkpoint): its
    ``backbone``, ``head``, ``loss`` and ``optimizer`` nodes are instantiated (the head and optimizer
    as Hydra partials), ``scheduler`` becomes Lightning's lr_scheduler dict when training starts
    (:func:`petloc.models.schedulers.lr_scheduler_config`), ``mode`` a :class:`~petloc.modes.Mode` and
    ``inference`` the :class:`~petloc.models.options.InferenceOptions`. ``class_names`` are the mode's
    classes (the datamodule's; none in box mode). The resolved config is what the checkpoint stores,
    so a checkpoint of any PetLocModule, trained by ``petloc-train`` or by a Trainer of one's own,
    rebuilds in eval, predict and export (:func:`petloc.checkpoint.load_model`).
    """

    def __init__(
        self, config: DictConfig | Mapping[str, Any], class_names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        resolved = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
        assert isinstance(resolved, dict)
        self.config: dict[str, Any] = resolved
        cfg = OmegaConf.create(resolved)
        self.mode = Mode.from_config(cfg.mode)
        self.class_names = self.mode.check_class_names(class_names)
        self.inference = InferenceOptions.from_config(cfg.inference)
        self.nan_policy: str = cfg.get("nan_policy", "stop")
        self.backbone_lr_scale: float = cfg.get("backbone_lr_scale", 1.0)
        self.log_images: int = cfg.get("log_images", 16)
        # The hyper-parameters hold only what the config cannot say, as plain values (checkpoints load
        # with torch.load(weights_only=True)): the class names, so predict names classes without the data.
        self.save_hyperparameters({"class_names": self.class_names}, logger=False)
        self.optimizer_factory: Callable[..., torch.optim.Optimizer] = instantiate(cfg.optimizer)
        # ``backbone`` returns a list of feature maps and carries timm's ``feature_info`` and
        # ``pretrained_cfg``; the head is built for its channels.
        self.backbone: nn.Module = instantiate(cfg.backbone)
        channels = self.backbone.feature_info.channels()
        self.head = instantiate(cfg.head)(in_channels=channels)
        self.box_loss: nn.Module = instantiate(cfg.loss)
        num_classes = len(self.class_names)
        self.classifier = nn.Linear(channels[-1], num_classes) if self.mode.classifies else None
        # The backbone's input normalization, saved with the weights: a checkpoint (and its ONNX
        # graph) normalizes as it was trained, whatever the config it is rebuilt from says.
        pretrained = self.backbone.pretrained_cfg
        mean, std = pretrained["mean"], pretrained["std"]
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1) * 255)
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

    def forward(
        self, images: Tensor, options: InferenceOptions | None = None
    ) -> tuple[HeadOutput, Tensor | None]:
        """In eval mode, with the test-time flip and the zoom-in refinement when they are on
        (``options``, else the run's ``inference``): what validation, eval, predict and export see. A
        refined output keeps the whole image's dense maps, score and class logits; only its box is the
        second look's (:mod:`petloc.models.refine`), so a dense head's val loss is its first look's
        and a global head's is that of the refined box."""
        options = options or self.inference
        x = self.preprocess(images)
        out, logits = self._views(x, options.flip)
        if options.refine and not self.training:
            frame = refine_frame(out.box.detach().clamp(0, 1), options.refine_margin)
            side = options.refine_size or x.shape[-1]
            zoomed, _ = self._views(crop_to_frame(x, frame, side), options.flip)
            crop_box = rescale_box(zoomed.box, x.shape[-1] / side)
            out = replace(out, box=box_from_frame(crop_box, frame))
        return out, logits

    def _views(self, x: Tensor, flip: bool) -> tuple[HeadOutput, Tensor | None]:
        """The network on ``x``, and in eval mode with ``flip`` also on its mirror image."""
        out, logits = self._predict(x)
        if flip and not self.training:
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

    def predict_boxes(self, images: Tensor, options: InferenceOptions | None = None) -> dict[str, Tensor]:
        """What eval, predict and export return, with ``options`` (else the run's ``inference``):
        ``box`` [B, 4] clipped to the frame, ``score`` [B] (the centre head's softmax mass around the
        chosen cell; 1.0 for global heads, which have no notion of confidence) and, in class-aware
        modes, ``class_prob`` [B, C]."""
        out, logits = self(images, options)
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
        boxes = batch["boxes"]
        valid = torch.arange(boxes.shape[1], device=boxes.device) < batch["num_boxes"].view(-1, 1)
        loss = self.head.loss(out, boxes, valid, self.box_loss)
        if logits is not None:
            labels = batch["label"]
            # A mosaic shows several pets but carries one image's label: it trains the boxes only.
            single = (~batch["mosaic"]).float()
            cross_entropy = F.cross_entropy(logits.float(), labels, reduction="none")
            cross_entropy = (cross_entropy * single).sum() / single.sum().clamp_min(1.0)
            loss = loss + self.mode.cls_weight * cross_entropy
        return loss, out, logits

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and datamodule.train_records:
            self.mean_box.copy_(datamodule.train_mean_box().to(self.mean_box))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss, _, _ = self._step(batch)
        if not torch.isfinite(loss):
            where = f"epoch {self.current_epoch}, step {self.global_step}, batch {batch_idx}"
            if self.nan_policy == "skip":
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

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Score one batch; returns the boxes it scored (``box``), for callbacks that keep per-image
        results (:class:`petloc.callbacks.PerImageIoU`)."""
        loss, out, logits = self._step(batch)
        target = batch["box"].float()
        pred = out.box.float().clamp(0, 1)
        self.val_loss(loss, weight=target.shape[0])  # a short last batch counts by its size
        self.val_metrics.update(pred, target)
        self.val_baseline.update(self.mean_box.expand_as(target), target)
        if logits is not None and self.val_cls_acc is not None:
            self.val_cls_acc.update(logits, batch["label"])
        if batch_idx == 0 and self.log_images:
            k = self.log_images
            self._image_grid = box_grid(batch["image"][:k], pred[:k], target[:k])
        return {"box": pred}

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
        checkpoint["petloc_config"] = self.config

    # ---- optimization ----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        # Two groups: a pretrained backbone is fine-tuned at backbone_lr_scale x the head's rate. Their
        # names label the per-step learning rates (lr/backbone, lr/head; callbacks.lr_monitor).
        head = [p for name, p in self.named_parameters() if not name.startswith("backbone.")]
        optimizer = self.optimizer_factory(
            params=[
                {"params": list(self.backbone.parameters()), "name": "backbone"},
                {"params": head, "name": "head"},
            ]
        )
        optimizer.param_groups[0]["lr"] *= self.backbone_lr_scale
        if not self.config.get("scheduler"):
            return optimizer
        scheduler = lr_scheduler_config(self.config["scheduler"], optimizer, self.training_progress)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

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
