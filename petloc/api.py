"""petloc from Python: train from a list of overrides, load a checkpoint and predict boxes.

::

    from petloc.api import load_model, train

    metrics = train(["data=voc", "data.root=PATH", "trainer.max_time=00:00:10:00"])
    model = load_model("outputs/train/<date>_<time>")  # the run's best checkpoint
    result = model.predict(["cat.jpg", PIL.Image.open("dog.png"), numpy_rgb_array])
    result.boxes, result.scores, result.classes

:func:`train` is ``petloc-train`` without the shell: the same config tree, run folder and files.
:meth:`Predictor.predict` is ``petloc-predict``'s inference: the same boxes for the same images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageFile

from petloc import CONFIG_DIR
from petloc import checkpoint as checkpoints
from petloc.data.images import ImageReader
from petloc.data.records import to_voc_pixels
from petloc.models.deployed import InferenceModel
from petloc.models.module import PetLocModule
from petloc.run_dir import RunDir

# What predict takes for one image: a file path, a PIL image, or a uint8 array (HxWx3 RGB, HxWx4
# RGBA or HxW grayscale).
ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray


@dataclass(frozen=True)
class Predictions:
    """One row per image, in the order given.

    ``boxes``: [N, 4] xmin, ymin, xmax, ymax in the image's own pixels, 1-based and inclusive like VOC
    XMLs, rounded to 0.1 pixel: the numbers ``petloc-predict`` writes. ``normalized``: the same boxes as
    fractions of the width and height (0-based, continuous). ``scores``: [N] the head's confidence.
    ``classes`` and ``class_probs`` ([N, C], the columns in :attr:`Predictor.class_names` order): the
    most likely class and every class's probability, or None for a box-only model.
    """

    boxes: np.ndarray
    normalized: np.ndarray
    scores: np.ndarray
    classes: list[str] | None
    class_probs: np.ndarray | None

    def __len__(self) -> int:
        return len(self.boxes)


class Predictor:
    """A trained model with the image reading of its run: what :func:`load_model` returns."""

    def __init__(self, module: PetLocModule, cfg: DictConfig, device: str = "auto") -> None:
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(auto if device == "auto" else device)
        self.model = InferenceModel(module).to(self.device)
        self.class_names: list[str] = list(module.class_names)
        # the datamodule only reads its config here: no file of the training set is opened
        self.reader: ImageReader = instantiate(cfg.data).image_reader()

    def read(self, image: ImageInput) -> tuple[np.ndarray, tuple[int, int]]:
        """(model input, (width, height) of the image). A path, or a PIL image opened from a file and
        not loaded yet, is read from the file exactly as validation reads it; other images from their
        pixels. Raises :data:`petloc.data.images.IMAGE_ERRORS` for a file that cannot be decoded."""
        if isinstance(image, str | os.PathLike):
            return self.reader(Path(image))
        if isinstance(image, Image.Image):
            if isinstance(image, ImageFile.ImageFile) and image.tile and image.filename:
                return self.reader(Path(image.filename))
            return self.reader.from_pixels(np.asarray(image.convert("RGB")))
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise TypeError(
                    f"an image array is uint8 HxW, HxWx3 or HxWx4, not {image.dtype} {image.shape}"
                )
            return self.reader.from_pixels(np.asarray(Image.fromarray(image).convert("RGB")))
        raise TypeError(f"not an image: {type(image).__name__} (a path, a PIL image or a uint8 array)")

    def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 16) -> Predictions:
        """Boxes for one image or a sequence of them (paths, PIL images, arrays, mixed)."""
        single = isinstance(images, str | os.PathLike | Image.Image | np.ndarray)
        read = [self.read(image) for image in ([images] if single else images)]  # type: ignore[union-attr]
        return self.predict_inputs([i for i, _ in read], [size for _, size in read], batch_size)

    def predict_inputs(
        self, inputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], batch_size: int = 16
    ) -> Predictions:
        """Boxes for model inputs of :meth:`read`, mapped to the pixels of images of ``sizes``."""
        batches = []
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.stack(inputs[start : start + batch_size])).to(self.device)
            with torch.inference_mode():
                batches.append([t.float().cpu() for t in self.model(batch)])
        outputs = [torch.cat(parts).numpy() for parts in zip(*batches, strict=True)]
        normalized = outputs[0] if outputs else np.zeros((0, 4), np.float32)
        pixels = [to_voc_pixels(box, w, h) for box, (w, h) in zip(normalized, sizes, strict=True)]
        probs = outputs[2] if len(outputs) > 2 else None
        return Predictions(
            boxes=np.array(pixels, dtype=np.float64).reshape(-1, 4),
            normalized=normalized,
            scores=outputs[1] if outputs else np.zeros(0, np.float32),
            classes=None if probs is None else [self.class_names[i] for i in probs.argmax(axis=1)],
            class_probs=probs,
        )


def load_model(
    checkpoint: str | os.PathLike[str], device: str = "auto", inference: Mapping[str, Any] | None = None
) -> Predictor:
    """A petloc checkpoint as a :class:`Predictor` on ``device`` ("auto": the GPU when there is one).

    ``checkpoint`` is a checkpoint file, or a run folder: its best checkpoint, where the run's own
    config put it (``checkpoints/best.ckpt`` by default; :class:`petloc.run_dir.RunDir`).

    ``inference`` changes the checkpoint's inference options (``{"refine": False}``; the keys of
    conf/inference/default.yaml), as ``inference.KEY=VALUE`` does for petloc-predict.
    """
    overrides = OmegaConf.create({"inference": dict(inference)}) if inference else None
    if Path(checkpoint).is_dir():
        checkpoint = RunDir.read(Path(checkpoint)).best_ckpt
    module, cfg = checkpoints.load_model(checkpoint, overrides)
    return Predictor(module, cfg, device)


def train(overrides: Sequence[str] = ()) -> dict[str, float]:
    """``petloc-train OVERRIDES`` from Python: composes conf/train.yaml with ``overrides`` (Hydra's
    syntax, e.g. ``["data=voc", "data.root=PATH", "hydra.run.dir=outputs/mine"]``), writes the same
    run folder and returns the final metrics (those of the run's metrics.json)."""
    from petloc.train import train as train_run  # Lightning and the models: only when training

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
        job = GlobalHydra.instance().hydra.run("train", train_run, list(overrides))  # type: ignore[union-attr]
    return job.return_value
