"""``petloc-predict ckpt_path=PATH input=IMG|DIR [output=DIR]``: boxes for new images.

Writes ``predictions.csv`` (``image,xmin,ymin,xmax,ymax,score`` [+ ``class,class_prob``]) with boxes
in the original image's pixels, 1-based and inclusive like the VOC XMLs, rounded to 0.1 pixel, and
a copy of each image with its box drawn in red under ``drawn/``. ``score`` is the head's confidence
(``PetLocModule.predict_boxes``: the centre head's softmax mass around the chosen cell, 1.0 for
global regression heads). Files that cannot be decoded are reported and skipped.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from petloc import CONFIG_DIR
from petloc.checkpoint import load_model
from petloc.data.images import IMAGE_ERRORS, decode_image, list_images
from petloc.data.records import to_voc_pixels
from petloc.models.inference import InferenceModel
from petloc.viz import draw_pair

log = logging.getLogger(__name__)

COLUMNS = ["image", "xmin", "ymin", "xmax", "ymax", "score"]
CLASS_COLUMNS = ["class", "class_prob"]


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def draw_prediction(path: Path, box: Sequence[float], target: Path) -> None:
    """Save the full-resolution image with the predicted box in red (line width grows with size)."""
    image = torch.from_numpy(decode_image(path).copy())  # PIL's array is read-only
    width = max(2, round(max(image.shape[:2]) / 200))
    drawn = draw_pair(image, torch.tensor(box), None, width=width)
    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(target)


def predict(cfg: DictConfig) -> Path:
    """Predict every image of ``cfg.input``; returns the path of predictions.csv."""
    module, model_cfg = load_model(cfg.ckpt_path, cfg)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if cfg.device == "auto" else cfg.device)
    model = InferenceModel(module).to(device)
    names = module.class_names
    reader = instantiate(model_cfg.data).image_reader()  # the datamodule only reads its config here
    files = list_images(cfg.input)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    drawn_dir = output / "drawn"
    if cfg.draw:
        drawn_dir.mkdir(exist_ok=True)

    rows: list[list[Any]] = []
    skipped: list[str] = []
    for chunk in _batches(files, cfg.batch_size):
        loaded = []
        for path in chunk:
            try:
                loaded.append((path, *reader(path)))
            except IMAGE_ERRORS as exc:
                log.warning("skipped %s: cannot decode it (%s)", path, exc)
                skipped.append(path.name)
        if not loaded:
            continue
        images = torch.from_numpy(np.stack([image for _, image, _ in loaded])).to(device)
        with torch.inference_mode():
            outputs = [t.float().cpu() for t in model(images)]
        for i, (path, _, (width, height)) in enumerate(loaded):
            box = outputs[0][i].tolist()
            row: list[Any] = [path.name, *to_voc_pixels(box, width, height), round(float(outputs[1][i]), 4)]
            if names:
                prob, label = outputs[2][i].max(dim=0)
                row += [names[int(label)], round(float(prob), 4)]
            rows.append(row)
            if cfg.draw:
                draw_prediction(path, box, drawn_dir / path.name)

    csv_path = output / "predictions.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + (CLASS_COLUMNS if names else []))
        writer.writerows(rows)
    print(f"{len(rows)} images -> {csv_path}" + (f"; skipped, cannot decode: {skipped}" if skipped else ""))
    return csv_path


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Console script ``petloc-predict``."""
    predict(cfg)


if __name__ == "__main__":
    main()
