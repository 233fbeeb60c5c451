"""Box-aware albumentations pipelines.

Training images come from the decode cache (longest side ~1.25x ``image_size``), so every operation
here works on small uint8 arrays and costs little. Geometry ends in a stretch-resize to
``image_size`` x ``image_size``: normalized box coordinates are invariant to it, which is what makes
the mapping of predictions back to the original image exact.

The single box must survive every augmentation: crops are box-safe, and :func:`apply_with_box`
redraws a sample whose box an affine move pushed (mostly) out of view, falling back to the plain
resize, so no sample ever loses its target.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

# Grey fill for pixels an affine move brings in from outside the image (as YOLO's letterbox grey):
# reflected borders would show mirrored copies of the head, which a single-box target cannot explain.
FILL = 114


@dataclass(frozen=True)
class AugmentConfig:
    """One preset (``conf/augment/*.yaml``); probabilities in [0, 1], 0 turns an operation off."""

    name: str = "none"
    hflip: float = 0.0
    safe_crop: float = 0.0  # probability of a random box-safe crop instead of the whole image
    affine: float = 0.0  # probability of the scale/translate/rotate move below
    scale: tuple[float, float] = (1.0, 1.0)  # < 1 zooms out (object smaller, grey border)
    translate: float = 0.0  # fraction of the image side
    rotate: float = 0.0  # degrees, +-
    color: float = 0.0  # probability of colour jitter
    color_strength: float = 0.2  # brightness/contrast/saturation +- this, hue +- strength/4
    gray: float = 0.0
    blur: float = 0.0
    min_visibility: float = 0.6  # a draw that leaves less of the box in view is redrawn


def _bbox_params(min_visibility: float = 0.0) -> A.BboxParams:
    """Normalized xyxy boxes, clipped to the frame; albumentations drops a box whose visible share of
    its area falls under ``min_visibility``, which :func:`apply_with_box` turns into a redraw."""
    return A.BboxParams(
        format="albumentations",
        label_fields=["labels"],
        clip=True,
        min_visibility=min_visibility,
        check_each_transform=False,  # one check at the end: per-op checks cost ~10% of a CPU step
    )


def eval_transform(image_size: int) -> A.Compose:
    """Validation, evaluation and prediction: a stretch-resize to the square input, nothing else."""
    return A.Compose(
        [A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR)], bbox_params=_bbox_params()
    )


def train_transform(image_size: int, cfg: AugmentConfig) -> A.Compose:
    """Build the preset's pipeline; ``cfg.name == 'none'`` (all zeros) equals :func:`eval_transform`."""
    s = image_size
    ops: list[A.BasicTransform] = []
    if cfg.safe_crop > 0:
        ops.append(
            A.OneOf(
                [A.RandomSizedBBoxSafeCrop(s, s, erosion_rate=0.0, p=cfg.safe_crop), A.Resize(s, s)],
                p=1.0,
            )
        )
    else:
        ops.append(A.Resize(s, s))
    if cfg.affine > 0:
        ops.append(
            A.Affine(
                scale=cfg.scale,
                translate_percent=(-cfg.translate, cfg.translate),
                rotate=(-cfg.rotate, cfg.rotate),
                rotate_method="ellipse",
                border_mode=cv2.BORDER_CONSTANT,
                fill=FILL,
                p=cfg.affine,
            )
        )
    if cfg.hflip > 0:
        ops.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.color > 0:
        k = cfg.color_strength
        ops.append(A.ColorJitter(brightness=k, contrast=k, saturation=k, hue=k / 4, p=cfg.color))
    if cfg.gray > 0:
        ops.append(A.ToGray(p=cfg.gray))
    if cfg.blur > 0:
        ops.append(A.GaussianBlur(blur_limit=(3, 5), p=cfg.blur))
    return A.Compose(ops, bbox_params=_bbox_params(cfg.min_visibility))


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def apply_with_box(
    transform: A.Compose,
    fallback: A.Compose,
    image: np.ndarray,
    box: tuple[float, float, float, float],
    attempts: int = 5,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Apply ``transform`` keeping the box; returns (image, box, used_fallback).

    A draw whose box albumentations dropped (less than the preset's ``min_visibility`` in view) is
    redrawn; after ``attempts`` failures the plain ``fallback`` resize is used, so the sample keeps
    its box whatever the preset.
    """
    labels = [0]
    for _ in range(attempts):
        out = transform(image=image, bboxes=np.asarray([box], dtype=np.float32), labels=labels)
        if len(out["bboxes"]) == 1:
            new = np.asarray(out["bboxes"][0], dtype=np.float32)
            if _area(new) > 0:
                return out["image"], new, False
    out = fallback(image=image, bboxes=np.asarray([box], dtype=np.float32), labels=labels)
    return out["image"], np.asarray(out["bboxes"][0], dtype=np.float32), True
