"""``petloc-eval ckpt_path=PATH [data=... data.root=... data.val_fraction=...]``: score a checkpoint.

The checkpoint's own datamodule config is rebuilt (same folder, seed and validation fraction, hence
the same split), command-line data overrides are applied on top, and Lightning's ``trainer.validate``
runs the module's ``validation_step``: the code that logged ``val/iou`` during training, so a
checkpoint re-evaluated on its split reproduces the logged numbers. Writes into ``output`` (default:
this run's Hydra folder): ``metrics.json``, ``per_image.csv``, ``iou_histogram.png`` and
``worst_k.png`` (the images with the lowest IoU, predicted box red, true box green).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from petloc import CONFIG_DIR
from petloc.callbacks import PerImageIoU, write_per_image_csv
from petloc.checkpoint import load_model
from petloc.data.datamodule import LocalizationDataModule
from petloc.run_dir import EvalDir
from petloc.viz import box_grid


def plot_histogram(ious: np.ndarray, path: Path) -> None:
    """Histogram of per-image IoU with the mean and the 0.5 / 0.75 thresholds marked."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.hist(ious, bins=20, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    ax.axvline(float(ious.mean()), color="tab:red", label=f"mean {ious.mean():.3f}")
    for threshold in (0.5, 0.75):
        ax.axvline(threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("IoU (predicted vs true box)")
    ax.set_ylabel("images")
    ax.set_title(f"{len(ious)} images: acc50 {np.mean(ious >= 0.5):.3f}, acc75 {np.mean(ious >= 0.75):.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_worst(
    datamodule: LocalizationDataModule,
    ious: np.ndarray,
    boxes: Tensor,
    indices: np.ndarray,
    k: int,
    path: Path,
) -> None:
    """A sheet of the ``k`` lowest-IoU images as the model saw them (red predicted, green true)."""
    order = np.argsort(ious, kind="stable")[:k]
    dataset = datamodule.val_dataloader().dataset
    samples = [dataset[int(indices[i])] for i in order]
    images = torch.stack([s["image"] for s in samples])
    targets = torch.stack([s["box"] for s in samples])
    grid = box_grid(images, boxes[torch.from_numpy(order)], targets, nrow=min(len(order), 8))
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Validate ``cfg.ckpt_path`` and write the reports into ``cfg.output``; returns the metrics."""
    module, model_cfg = load_model(cfg.ckpt_path, cfg)
    output = EvalDir(Path(cfg.output))
    output.root.mkdir(parents=True, exist_ok=True)
    datamodule: LocalizationDataModule = instantiate(model_cfg.data)
    collector = PerImageIoU()
    # A fresh single-device trainer: the training one may be DDP, whose sampler pads the split.
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=model_cfg.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        default_root_dir=output.root,
        callbacks=[collector],
    )
    (logged,) = trainer.validate(module, datamodule=datamodule)
    result = collector.result()
    ious, boxes, _, indices = result
    metrics: dict[str, Any] = {k: float(v) for k, v in logged.items() if k != "val/iou_best"}
    metrics["n_images"] = len(ious)
    output.metrics_json.write_text(json.dumps(metrics, indent=2, sort_keys=True))

    write_per_image_csv(output.per_image, datamodule.val_records, result)
    plot_histogram(ious, output.iou_histogram)
    if cfg.worst_k > 0:
        save_worst(datamodule, ious, boxes, indices, cfg.worst_k, output.worst_k)
    print(f"evaluated {cfg.ckpt_path} on {len(ious)} images -> {output.root}")
    print("metrics:", json.dumps({k: round(v, 4) for k, v in metrics.items()}, sort_keys=True))
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console script ``petloc-eval``."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
