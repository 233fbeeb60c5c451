"""Box-aware augmentation of training samples.

Training images come from the decode cache (longest side ~1.25x ``image_size``), so every operation
here works on small uint8 arrays. Geometry ends in a stretch to ``image_size`` x ``image_size``:
normalized box coordinates are invariant to it, which is what makes the mapping of predictions back
to the original image exact.

Geometry is composed here, not by albumentations: a box-safe crop, the stretch, a scale / translate /
rotate move and a flip make one affine map, applied to the pixels with one ``cv2.warpAffine`` and to
the boxes in closed form. A rotated box is the bounding box of its inscribed ellipse, rotated
(albumentations' ``ellipse`` rule: a head is round, so this is the tight box). albumentations'
per-call box bookkeeping (checking, converting, clipping and filtering a one-row array before and
after every pipeline) cost twice as much as the resize itself; here the boxes are a few lines of
arithmetic. Colour operations are albumentations' (their parameter draws and composition) and never
see a box; the colour jitter applies its four steps as one affine colour map (:class:`ColourJitter`).

The sample's own box must survive: a draw that leaves less than ``min_visibility`` of it in view is
redrawn, falling back to the plain stretch, so no sample ever loses its target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from petloc.data.images import resize_to_input
from petloc.data.records import MAX_OBJECTS

# Rec. 601 luma, the grey of torchvision's and albumentations' contrast and saturation
_GREY = np.array([0.299, 0.587, 0.114])
# every channel set to the grey of the pixel (saturation 0)
_TO_GREY = np.tile(_GREY, (3, 1))
# projection onto the grey axis and the cross product with its unit vector: a hue rotation's parts
_GREY_AXIS = np.full((3, 3), 1 / 3)
_AXIS_CROSS = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)
_EYE = np.eye(3)

# Grey fill for pixels an affine move brings in from outside the image (as YOLO's letterbox grey):
# reflected borders would show mirrored copies of the head, which a single-box target cannot explain.
FILL = 114


@dataclass(frozen=True)
class AugmentConfig:
    """One preset (``conf/augment/*.yaml``); probabilities in [0, 1], 0 turns an operation off."""

    name: str = "none"
    hflip: float = 0.0
    safe_crop: float = 0.0  # probability of a random crop that contains every box, before the stretch
    affine: float = 0.0  # probability of the scale/translate/rotate move below
    scale: tuple[float, float] = (1.0, 1.0)  # < 1 zooms out (object smaller, grey border); per axis
    translate: float = 0.0  # fraction of the image side, per axis
    rotate: float = 0.0  # degrees, +-
    color: float = 0.0  # probability of colour jitter
    color_strength: float = 0.2  # brightness/contrast/saturation +- this, hue +- strength/4
    gray: float = 0.0
    blur: float = 0.0
    min_visibility: float = 0.6  # a draw that leaves less of the sample's box in view is redrawn
    mosaic: float = 0.0  # probability of a 2x2 mosaic of four training images (dense heads only)
    # Any other object in view (a mosaic's other images, an image's other objects) keeps its box with
    # this much of it in view, lower than ``min_visibility``: a visible but unlabelled object would
    # teach the centre head that such objects are background.
    mosaic_min_visibility: float = 0.25
    # share of the training budget after which mosaics stop (YOLO's close_mosaic): the last stretch
    # trains on the single-image distribution that validation sees
    mosaic_until: float = 1.0


def _area(box: Sequence[float]) -> float:
    """Area of an xyxy box (0 for an inverted one)."""
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


UNIT_FRAME = (0.0, 0.0, 1.0, 1.0)


def _clip(box: Sequence[float], frame: Sequence[float] = UNIT_FRAME) -> tuple[float, float, float, float]:
    """The part of an xyxy box inside the xyxy ``frame``."""
    x0, y0, x1, y1 = frame
    return (
        min(max(box[0], x0), x1),
        min(max(box[1], y0), y1),
        min(max(box[2], x0), x1),
        min(max(box[3], y0), y1),
    )


def _in_view(box: Sequence[float], share: float, frame: Sequence[float] = UNIT_FRAME) -> bool:
    """Whether at least ``share`` of the box's (positive) area lies inside ``frame``."""
    area = _area(box)
    return area > 0 and _area(_clip(box, frame)) >= share * area


def _mirror(boxes: np.ndarray) -> np.ndarray:
    """Normalized xyxy boxes [K, 4] of the horizontally mirrored image: x -> 1 - x."""
    return np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)


# A 2x3 affine map (a, b, c, d, e, f): X = a x + b y + c, Y = d x + e y + f. Python floats: for the
# few numbers of one draw, numpy's per-call overhead would cost more than the arithmetic.
Affine = tuple[float, float, float, float, float, float]


def _draw_geometry(
    cfg: AugmentConfig, boxes: list[list[float]], width: int, height: int, size: int, rng: np.random.Generator
) -> Affine | None:
    """One draw of the preset's crop and move for an image of ``width`` x ``height`` with ``boxes``
    (pixels, xyxy): the map from source to output pixel coordinates (continuous: pixel ``i`` covers
    [i, i + 1]), or None for the plain stretch."""
    x0, y0, x1, y1 = 0.0, 0.0, float(width), float(height)
    cropped = rng.random() < cfg.safe_crop
    if cropped:
        # as albumentations' RandomSizedBBoxSafeCrop: each crop edge uniform between the image's edge
        # and the union of the boxes
        ux0, uy0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        ux1, uy1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        u0, u1, u2, u3 = rng.random(4).tolist()
        x0, y0, x1, y1 = ux0 * u0, uy0 * u1, ux1 + (width - ux1) * u2, uy1 + (height - uy1) * u3
    a, e = size / (x1 - x0), size / (y1 - y0)
    c, f = -x0 * a, -y0 * e
    if rng.random() < cfg.affine:
        # as albumentations' Affine: per-axis scale and rotation about the centre, then a shift:
        # out = R S (stretched - centre) + centre + shift
        sx, sy = rng.uniform(*cfg.scale, size=2).tolist()
        angle = math.radians(rng.uniform(-cfg.rotate, cfg.rotate))
        tx, ty = (rng.uniform(-cfg.translate, cfg.translate, size=2) * size).tolist()
        cos, sin, mid = math.cos(angle), math.sin(angle), size / 2
        m00, m01, m10, m11 = cos * sx, sin * sy, -sin * sx, cos * sy
        return (
            m00 * a,
            m01 * e,
            m00 * (c - mid) + m01 * (f - mid) + mid + tx,
            m10 * a,
            m11 * e,
            m10 * (c - mid) + m11 * (f - mid) + mid + ty,
        )
    return (a, 0.0, c, 0.0, e, f) if cropped else None


def _map_box(m: Affine, box: Sequence[float]) -> tuple[float, float, float, float]:
    """A box through the map ``m``: the bounding box of its inscribed ellipse, mapped (exact for any
    rotation; without one, the box's own corners)."""
    mx, my = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hx, hy = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2  # the ellipse's semi-axes
    cx, cy = m[0] * mx + m[1] * my + m[2], m[3] * mx + m[4] * my + m[5]
    rx, ry = math.hypot(m[0] * hx, m[1] * hy), math.hypot(m[3] * hx, m[4] * hy)
    return cx - rx, cy - ry, cx + rx, cy + ry


def augment_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    size: int,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    attempts: int = 5,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The preset's geometry on one image; returns (image, boxes, used_fallback).

    ``boxes`` are normalized xyxy [K, 4], the sample's own box first, then any other object in the
    image. A draw that leaves less than ``cfg.min_visibility`` of the first box in view is redrawn;
    after ``attempts`` such draws the plain stretch is used, so the sample keeps its box whatever the
    preset. The returned boxes are clipped to the frame: the first box, then the others that keep at
    least ``cfg.mosaic_min_visibility`` of their area in view.
    """
    h, w = image.shape[:2]
    pixels = (boxes * [w, h, w, h]).tolist()
    for _ in range(attempts):
        m = _draw_geometry(cfg, pixels, w, h, size, rng)
        flip = rng.random() < cfg.hflip
        if m is None:
            out, kept = resize_to_input(image, size), boxes.tolist()
        else:
            mapped = [tuple(v / size for v in _map_box(m, box)) for box in pixels]
            if not _in_view(mapped[0], cfg.min_visibility):
                continue
            kept = [mapped[0], *(b for b in mapped[1:] if _in_view(b, cfg.mosaic_min_visibility))]
            # cv2 maps pixel indices (pixel centres at i): the continuous map moved by half a pixel
            index = np.array(
                [
                    [m[0], m[1], m[2] + (m[0] + m[1] - 1) / 2],
                    [m[3], m[4], m[5] + (m[3] + m[4] - 1) / 2],
                ]
            )
            out = cv2.warpAffine(
                image,
                index,
                (size, size),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(FILL,) * 3,
            )
        kept_boxes = np.clip(np.asarray(kept, dtype=np.float32), 0.0, 1.0)
        if flip:
            return cv2.flip(out, 1), _mirror(kept_boxes), False
        return out, kept_boxes, False
    return resize_to_input(image, size), boxes.astype(np.float32), True


def colour_map(
    mean: Sequence[float],
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    order: Sequence[int],
) -> np.ndarray:
    """The affine RGB map [3, 4] (matrix, offset) of torchvision's colour jitter steps, composed in
    ``order`` (0 brightness, 1 contrast, 2 saturation, 3 hue), for an image whose mean colour is ``mean``.

    Each step is affine in the colour: brightness scales it, saturation blends it with its grey,
    contrast blends it with the image's mean grey (an affine function of ``mean`` through the steps
    before it), and the hue shift turns it about the grey axis by ``hue`` turns.
    """
    matrix, offset = _EYE, np.zeros(3)
    for step in order:
        if step == 0:
            matrix, offset = brightness * matrix, brightness * offset
        elif step == 1:
            grey = _GREY @ (matrix @ np.asarray(mean) + offset)
            matrix, offset = contrast * matrix, contrast * offset + (1 - contrast) * grey
        elif step == 2:
            keep = 1 - saturation
            matrix = saturation * matrix + keep * (_TO_GREY @ matrix)
            offset = saturation * offset + keep * (_TO_GREY @ offset)
        else:
            angle = 2 * math.pi * hue
            turn = math.cos(angle) * _EYE + math.sin(angle) * _AXIS_CROSS + (1 - math.cos(angle)) * _GREY_AXIS
            matrix, offset = turn @ matrix, turn @ offset
    return np.column_stack([matrix, offset]).astype(np.float32)


class ColourJitter(A.ColorJitter):
    """albumentations' ColorJitter (torchvision's: brightness, contrast and saturation factors and a
    hue shift in random order, with the same parameter draws) in one pass over the image.

    The parent makes a pass per step and takes the hue through HSV and back: 120 us on a 128-px
    image, a third of a training sample's loading. Here the four steps are one affine colour map
    (:func:`colour_map`) and one ``cv2.transform``: 35 us. Two differences follow: values are
    clipped once, after the last step, not after each; and the hue shift turns colours about the
    grey axis, where HSV moves them along a hexagon, so it moves a saturated colour less (a shift
    of 0.05 turns takes (200, 100, 50) to (187, 128, 35), HSV to (200, 145, 50)). Both keep grey
    pixels grey and a third of a turn is exactly a permutation of the channels.
    """

    def apply(
        self,
        img: np.ndarray,
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
        order: list[int],
        **params: object,
    ) -> np.ndarray:
        mean = cv2.mean(img)[:3]
        return cv2.transform(img, colour_map(mean, brightness, contrast, saturation, hue, order))


def colour_transform(cfg: AugmentConfig) -> A.Compose:
    """The preset's colour operations (albumentations'), applied after the geometry of every sample,
    single image or mosaic; they cannot move a box, so they never see one."""
    ops: list[A.BasicTransform] = []
    if cfg.color > 0:
        k = cfg.color_strength
        ops.append(ColourJitter(brightness=k, contrast=k, saturation=k, hue=k / 4, p=cfg.color))
    if cfg.gray > 0:
        ops.append(A.ToGray(p=cfg.gray))
    if cfg.blur > 0:
        ops.append(A.GaussianBlur(blur_limit=(3, 5), p=cfg.blur))
    return A.Compose(ops)


# Box slots of every training sample: a 2x2 mosaic of images with their objects.
MAX_BOXES = 4 * MAX_OBJECTS


def mosaic(
    images: list[np.ndarray],
    boxes: list[np.ndarray],
    size: int,
    cfg: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """YOLO's mosaic: four images tiled around a random centre, zoomed.

    Each image is stretched to ``size`` x ``size`` (the stretch of the eval resize) and placed in one
    quadrant of a 2x ``size`` grey canvas with its corner at a random centre point; the output is a
    ``size`` window around the canvas centre, zoomed by a factor drawn from ``cfg.scale``, moved by up
    to ``cfg.translate`` and mirrored with probability ``cfg.hflip``, so objects appear at 0.5-1.3x
    their usual size among real surroundings (other pets, other rooms) instead of a grey border.
    ``boxes`` holds each image's boxes (normalized xyxy [K, 4]). Returns the image and the boxes
    (clipped to the frame) that keep at least ``cfg.mosaic_min_visibility`` of their area in view,
    in the order of the images, the first image's first; possibly none.

    The canvas is never drawn: stretch and zoom are one resize of each image to its tile in the
    output, pasted where its quadrant falls in the window.
    """
    s = size
    out = np.full((s, s, 3), FILL, dtype=np.uint8)
    xc, yc = (int(v) for v in rng.uniform(0.5 * s, 1.5 * s, size=2))
    quadrants = rng.permutation(4).tolist()
    zoom = float(rng.uniform(*cfg.scale))
    wx0, wy0 = (s + rng.uniform(-cfg.translate, cfg.translate, size=2) * s - s / zoom / 2).tolist()
    flip = rng.random() < cfg.hflip
    # Everything in output pixels, rounded once: the tile side, the point where the tiles meet, and
    # the part of the window the canvas covers. Pixels and boxes use these same integers.
    tile = max(round(s * zoom), 1)
    mid_x, mid_y = round((xc - wx0) * zoom), round((yc - wy0) * zoom)
    lo_x, lo_y = max(round(-wx0 * zoom), 0), max(round(-wy0 * zoom), 0)
    hi_x, hi_y = min(round((2 * s - wx0) * zoom), s), min(round((2 * s - wy0) * zoom), s)
    window = (lo_x, lo_y, hi_x, hi_y)
    kept = []
    for quadrant, image, image_boxes in zip(quadrants, images, boxes, strict=True):
        x0 = mid_x - tile if quadrant % 2 == 0 else mid_x
        y0 = mid_y - tile if quadrant < 2 else mid_y
        for bx0, by0, bx1, by1 in np.asarray(image_boxes).reshape(-1, 4).tolist():
            box = (bx0 * tile + x0, by0 * tile + y0, bx1 * tile + x0, by1 * tile + y0)
            if _in_view(box, cfg.mosaic_min_visibility, window):
                kept.append(tuple(v / s for v in _clip(box, window)))
        rx0, ry0, rx1, ry1 = max(x0, lo_x), max(y0, lo_y), min(x0 + tile, hi_x), min(y0 + tile, hi_y)
        if rx1 > rx0 and ry1 > ry0:
            resized = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_LINEAR)
            out[ry0:ry1, rx0:rx1] = resized[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0]
    kept = np.clip(np.asarray(kept, dtype=np.float32).reshape(-1, 4), 0.0, 1.0)
    if flip:
        return cv2.flip(out, 1), _mirror(kept)
    return out, kept
