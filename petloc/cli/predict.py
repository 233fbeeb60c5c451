"""``petloc-predict ckpt_path=PATH input=IMG|DIR [output=DIR]``: boxes for new images.

Writes ``predictions.csv`` (``image,xmin,ymin,xmax,ymax,score`` [+ ``class,class_prob``]) with boxes
in the original image's pixels, 1-based and inclusive like the VOC XMLs, rounded to 0.1 pixel, and
a copy of each image with its box drawn in red under ``drawn/``. ``score`` is the head's confidence
(``PetLocModule.predict_boxes``: the centre head's softmax mass around the chosen cell, 1.0 for
global regression heads). Files that cannot be decoded are reported and skipped.

``format=NAME`` (any format petloc writes, :func:`petloc.data.formats.writable`) also writes the
predictions as a dataset of that format under ``OUTPUT/NAME/``, to correct in an annotation tool
(CVAT, Label Studio, labelImg) and train on: the images (hard-linked, else copied), each box, the
class in a class-aware mode (else ``object``) and the score where the format has a place for it.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image

from petloc import CONFIG_DIR
from petloc.api import Predictor
from petloc.checkpoint import load_model
from petloc.data.formats import FORMATS, writable
from petloc.data.images import IMAGE_ERRORS, decode_image, list_images
from petloc.data.records import Labelled
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
    if cfg.format is not None and cfg.format not in writable():
        raise ValueError(f"format={cfg.format!r}: allowed values are null or one of {writable()}")
    module, model_cfg = load_model(cfg.ckpt_path, cfg)
    predictor = Predictor(module, model_cfg, cfg.device)
    names = predictor.class_names
    files = list_images(cfg.input)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    drawn_dir = output / "drawn"
    if cfg.draw:
        drawn_dir.mkdir(exist_ok=True)

    rows: list[list[Any]] = []
    predicted: list[Labelled] = []
    skipped: list[str] = []
    for chunk in _batches(files, cfg.batch_size):
        loaded = []
        for path in chunk:
            try:
                loaded.append((path, *predictor.read(path)))
            except IMAGE_ERRORS as exc:
                log.warning("skipped %s: cannot decode it (%s)", path, exc)
                skipped.append(path.name)
        if not loaded:
            continue
        found = predictor.predict_inputs([image for _, image, _ in loaded], [size for _, _, size in loaded])
        for i, (path, _, (width, height)) in enumerate(loaded):
            score = round(float(found.scores[i]), 4)
            row: list[Any] = [path.name, *found.boxes[i].tolist(), score]
            if found.classes is not None and found.class_probs is not None:
                row += [found.classes[i], round(float(found.class_probs[i].max()), 4)]
            rows.append(row)
            box = tuple(float(v) for v in found.normalized[i])
            label = None if found.classes is None else found.classes[i]
            predicted.append(Labelled(path.name, path, width, height, (box,), (label,), (score,)))  # type: ignore[arg-type]
            if cfg.draw:
                draw_prediction(path, found.normalized[i].tolist(), drawn_dir / path.name)

    csv_path = output / "predictions.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + (CLASS_COLUMNS if names else []))
        writer.writerows(rows)
    print(f"{len(rows)} images -> {csv_path}" + (f"; skipped, cannot decode: {skipped}" if skipped else ""))
    if cfg.format is not None:
        FORMATS[cfg.format].write(predicted, names or [], output / cfg.format, "hardlink")  # type: ignore[misc]
        print(f"the predictions as a {cfg.format} dataset -> {output / cfg.format}")
    return csv_path


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Console script ``petloc-predict``."""
    predict(cfg)


if __name__ == "__main__":
    main()
