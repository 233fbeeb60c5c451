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
    mosaic: float = 0.0  # probability of a 2x2 mosaic of four training images (dense heads only)
    # A mosaic keeps a box with this much of it in view, lower than ``min_visibility``: a visible but
    # unlabelled head would teach the centre head that heads are background.
    mosaic_min_visibility: float = 0.25
    # share of the training budget after which mosaics stop (YOLO's close_mosaic): the last stretch
    # trains on the single-image distribution that validation sees
    mosaic_until: float = 1.0


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
    ops += _flip_and_colour_ops(cfg)
    return A.Compose(ops, bbox_params=_bbox_params(cfg.min_visibility))


def _flip_and_colour_ops(cfg: AugmentConfig) -> list[A.BasicTransform]:
    """The preset's operations after its geometry: shared by single images and mosaics."""
    ops: list[A.BasicTransform] = []
    if cfg.hflip > 0:
        ops.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.color > 0:
        k = cfg.color_strength
        ops.append(A.ColorJitter(brightness=k, contrast=k, saturation=k, hue=k / 4, p=cfg.color))
    if cfg.gray > 0:
        ops.append(A.ToGray(p=cfg.gray))
    if cfg.blur > 0:
        ops.append(A.GaussianBlur(blur_limit=(3, 5), p=cfg.blur))
    return ops


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


# A 2x2 mosaic holds at most four objects: every training sample carries this many box slots.
MAX_BOXES = 4


def photometric_transform(cfg: AugmentConfig) -> A.Compose:
    """The preset's flip and colour operations alone: what a mosaic gets after its own geometry."""
    return A.Compose(_flip_and_colour_ops(cfg), bbox_params=_bbox_params())


def mosaic(
    images: list[np.ndarray],
    boxes: list[tuple[float, float, float, float]],
    size: int,
    cfg: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """YOLO's mosaic for single-object images: four images tiled around a random centre, zoomed.

    Each image is resized to ``size`` x ``size`` (the stretch of the eval resize) and placed in one
    quadrant of a 2x ``size`` canvas with its corner at a random centre point; the output is a
    ``size`` window around the canvas centre, zoomed by a factor drawn from ``cfg.scale`` and moved by
    up to ``cfg.translate``, so objects appear at 0.5-1.3x their usual size among real surroundings
    (other pets, other rooms) instead of a grey border. Returns the image and the boxes (normalized
    xyxy, clipped to the frame) that keep at least ``cfg.mosaic_min_visibility`` of their area in view, the
    first image's box first; possibly none.
    """
    s = size
    canvas = np.full((2 * s, 2 * s, 3), FILL, dtype=np.uint8)
    xc, yc = (int(v) for v in rng.uniform(0.5 * s, 1.5 * s, size=2))
    placed = []
    for quadrant, image, box in zip(rng.permutation(4), images, boxes, strict=True):
        x0 = xc - s if quadrant % 2 == 0 else xc
        y0 = yc - s if quadrant < 2 else yc
        tile = cv2.resize(image, (s, s), interpolation=cv2.INTER_LINEAR)
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + s, 2 * s), min(y0 + s, 2 * s)
        canvas[cy0:cy1, cx0:cx1] = tile[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        placed.append(np.asarray(box, dtype=np.float64) * s + [x0, y0, x0, y0])
    zoom = rng.uniform(*cfg.scale)
    side = s / zoom
    wx0, wy0 = s + rng.uniform(-cfg.translate, cfg.translate, size=2) * s - side / 2
    matrix = np.float32([[zoom, 0, -wx0 * zoom], [0, zoom, -wy0 * zoom]])
    out = cv2.warpAffine(
        canvas,
        matrix,
        (s, s),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(FILL,) * 3,
    )
    # the part of each box inside both the canvas and the window, in output pixels
    lo = np.array([max(wx0, 0.0), max(wy0, 0.0)] * 2)
    hi = np.array([min(wx0 + side, 2.0 * s), min(wy0 + side, 2.0 * s)] * 2)
    kept = []
    for box in placed:
        visible = np.clip(box, lo, hi)
        area = _area(box)
        if area > 0 and _area(visible) >= cfg.mosaic_min_visibility * area:
            kept.append((visible - [wx0, wy0, wx0, wy0]) * zoom / s)
    return out, np.clip(np.asarray(kept, dtype=np.float32).reshape(-1, 4), 0.0, 1.0)
