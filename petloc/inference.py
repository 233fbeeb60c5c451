"""Inference on a trained checkpoint: safe loading, validation-exact preprocessing, pixel boxes.

``petloc-eval``, ``petloc-predict`` and ``petloc-export`` all start here, so a box scored in
evaluation, a box written to a CSV and a box computed by the exported ONNX graph come from the same
model, fed the same pixels:

- :func:`load_model` rebuilds the network from the config stored in the checkpoint (never from
  pickled objects) and fails with both configs named when the weights do not fit.
- :class:`ImageReader` turns an image file into exactly the input validation gives the model.
- :class:`InferenceModel` is the deployed graph: uint8 NHWC images in, normalized boxes, a
  confidence score and class probabilities out.
- :func:`to_voc_pixels` maps a normalized box back to the original image's 1-based VOC pixels.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from petloc.config import validate_config
from petloc.data.augment import eval_transform
from petloc.data.images import decode_image, probe_image
from petloc.models.factory import build_module, config_from_checkpoint
from petloc.models.module import PetLocModule

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """The file cannot be used as a petloc checkpoint; the message says why."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model built from the (overridden) config."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: tensors and plain values only, no code runs.

    Lightning checkpoints of petloc hold nothing else (the module saves plain hyper-parameters and
    the resolved config), so a file that needs the full unpickler is refused rather than trusted.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # what torch.save (and so Lightning) writes
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (not a torch.save zip archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is mostly advice to turn the protection off; keep only what was refused.
        reason = str(exc).partition("WeightsUnpickler error:")[2].strip().split(". ")[0]
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values; refusing to unpickle it "
            f"(torch.load weights_only=True): {reason}"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc


def merge_config(trained: DictConfig, overrides: DictConfig | None = None) -> DictConfig:
    """The checkpoint's training config with an app's command-line changes on top, resolved.

    ``overrides`` is the composed config of petloc-eval/-predict/-export. ``alpha``, when not null,
    sets the backbone's width. A ``backbone``, ``head`` or ``data`` node carrying ``_target_`` (a group
    chosen on the command line, e.g. ``data=oxford_pets``) replaces the checkpoint's node, and its
    interpolations (``${image_size}``, ``${seed}``, ``${augment}``) resolve against the checkpoint's
    values, so the model still sees the input size it was trained at. Any other such node
    (``data.root=PATH``, the app's ``paths``) changes only its non-null keys: null means "as trained".

    ``backbone.pretrained`` is forced off: the weights come from the checkpoint, nothing is downloaded.
    """
    cfg = OmegaConf.create(OmegaConf.to_container(trained, resolve=True))
    if overrides is not None:
        if overrides.get("alpha") is not None:
            cfg.alpha = overrides.alpha
            cfg.backbone.alpha = overrides.alpha
        for key in ("flip_test", "refine"):  # test-time options: null keeps the trained setting
            if overrides.get(key) is not None:
                cfg[key] = overrides[key]
        for group in ("backbone", "head", "data", "paths"):
            node = overrides.get(group)
            if node is None:
                continue
            values = OmegaConf.to_container(node, resolve=False)
            assert isinstance(values, dict)
            if "_target_" in values:
                cfg[group] = values
            else:
                cfg[group] = OmegaConf.merge(cfg[group], {k: v for k, v in values.items() if v is not None})
    OmegaConf.resolve(cfg)
    cfg.backbone.pretrained = False
    cfg.backbone.weights_file = None
    validate_config(cfg)
    return cfg


def describe_model(cfg: DictConfig) -> str:
    """``backbone=NAME alpha=A head=Class(k=v, ...)``: what decides the shapes of the weights."""
    head = {k: v for k, v in OmegaConf.to_container(cfg.head).items() if not k.startswith("_")}  # type: ignore[union-attr]
    params = ", ".join(f"{k}={v}" for k, v in head.items())
    return (
        f"backbone={cfg.backbone.name} alpha={cfg.backbone.alpha} "
        f"head={cfg.head._target_.rsplit('.', 1)[-1]}({params}) mode={cfg.mode.name}"
    )


def load_model(path: str | Path, overrides: DictConfig | None = None) -> tuple[PetLocModule, DictConfig]:
    """Rebuild the trained module from a checkpoint, in eval mode on the CPU; returns it and its config.

    The class names come from the checkpoint's hyper-parameters, so a class-aware model rebuilds
    (and names its classes) without the folder it was trained on.
    """
    checkpoint = read_checkpoint(path)
    trained = config_from_checkpoint(checkpoint)
    cfg = merge_config(trained, overrides)
    state = checkpoint["state_dict"]
    module = build_module(cfg, checkpoint.get("hyper_parameters", {}).get("class_names"))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = "\n    ".join(str(exc).strip().splitlines()[:4])
        raise CheckpointMismatchError(
            f"{path}: the checkpoint's weights do not fit the model built from the config.\n"
            f"  checkpoint: {describe_model(trained)}\n"
            f"  requested:  {describe_model(cfg)}\n"
            "Drop the command-line overrides that change the architecture (alpha, backbone, head).\n"
            f"  PyTorch says: {detail}"
        ) from exc
    return module.eval(), cfg


class ImageReader:
    """An image file -> the model's input, pixel for pixel what validation feeds it.

    Validation reads the decode cache (:func:`decode_image` to a longest side of
    ``round(image_size * cache_scale)``) and applies :func:`eval_transform` (a stretch-resize to the
    square input); this does the same two steps on the file, with sizes from the checkpoint's
    datamodule config.
    """

    def __init__(self, data_cfg: DictConfig) -> None:
        datamodule = instantiate(data_cfg)  # only reads the config: no file is touched
        self.max_side: int = datamodule.max_side
        self.transform = eval_transform(datamodule.image_size)

    def __call__(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """Return (uint8 HxWx3 input, (width, height) of the original file)."""
        _, _, width, height, _ = probe_image(path)
        image = decode_image(path, self.max_side)
        out = self.transform(image=image, bboxes=np.zeros((0, 4), np.float32), labels=[])
        return out["image"], (width, height)


def to_voc_pixels(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Normalized xyxy -> 1-based VOC pixels of the original image, rounded to 0.1 pixel.

    The inverse of the reader's normalization: pixel ``i`` covers ``[i - 1, i]``, so
    ``xmin = x0 * W + 1`` and ``xmax = x1 * W``; an XML box read and mapped back gives its own values.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        round(x0 * width + 1, 1),
        round(y0 * height + 1, 1),
        round(x1 * width, 1),
        round(y1 * height, 1),
    )


class InferenceModel(nn.Module):
    """The deployed graph: uint8 NHWC images -> ``(box [B, 4], score [B])`` (+ ``class_prob [B, C]``).

    Outputs are :meth:`PetLocModule.predict_boxes`'s, so predict and export return what evaluation
    scores.
    """

    def __init__(self, module: PetLocModule) -> None:
        super().__init__()
        self.module = module
        self.eval()

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in order (the ONNX graph's output names)."""
        return ["box", "score"] + (["class_prob"] if self.module.classifier is not None else [])

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        result = self.module.predict_boxes(images)
        return tuple(result[name] for name in self.output_names)
