"""The embedded default dataset: synthetic cat and dog heads in the Oxford-IIIT Pet layout.

``make train`` must work on a fresh machine with no download, so petloc draws its own pets. The set
is written in exactly the layout of the real dataset (``images/``, ``annotations/xmls/``,
``list.txt``, ``trainval.txt``, ``test.txt``) so that one reader serves both, and every code path
that real data takes (XML parsing, 1-based boxes, the test split without boxes, breed and species
ids) is exercised by the default run too.

The task is made learnable but not trivial: the head is the only object with a face (eyes, nose,
mouth), while the body attached to it and the distractors (ellipses, polygons and face-less head-like
blobs) have the same fur colours, so colour alone does not find the box.

Generation is deterministic: image ``i`` depends only on ``(seed, i)`` through its own child seed,
all randomness comes from numpy ``Generator`` s, and pixels are drawn with OpenCV's integer
rasterizer, so the same ``(n, seed)`` gives byte-identical files with the same library versions.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from petloc.data.convert import convert, empty_folder
from petloc.data.formats import FORMATS, detect_format

__all__ = [
    "SYNTHETIC_BREEDS",
    "SYNTHETIC_VERSION",
    "Head",
    "SyntheticScene",
    "compose_scene",
    "generate_synthetic_pets",
    "image_rng",
    "synthesize",
    "write_annotations",
]

# Bump when the drawing changes: it is part of the cache marker, so old caches are regenerated.
SYNTHETIC_VERSION = 1

JPEG_QUALITY = 90
TEST_FRACTION = 0.1

_COMPLETE = ".complete"  # written last; records the parameters, so a mismatch means "regenerate"
_MARKER_HEAD = "petloc synthetic pets"
_SHIFT = 3  # fractional bits of the fixed-point coordinates given to OpenCV's drawing functions
_ONE = 1 << _SHIFT

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class _Breed:
    """How one synthetic breed looks; colours are RGB."""

    name: str
    species: str  # "cat" or "dog"
    fur: RGB
    ears: RGB  # outer ear colour (dark "points" for Siamese, dark floppy ears for dogs)
    accent: RGB  # colour of the breed's pattern (mask, stripes, bib, blaze, spots)
    ear_inner: RGB  # cats: inner ear; dogs: muzzle
    iris: RGB
    nose: RGB
    pattern: str  # "points" | "stripes" | "tuxedo" | "blaze" | "spots" | "plain"
    ear_size: float  # cats: ear height; dogs: half-length of the floppy ear (face radius = 1)


# Sorted alphabetically ignoring case, so that the position + 1 is the CLASS-ID, as in list.txt.
_BREEDS: tuple[_Breed, ...] = (
    _Breed("beagle_synth", "dog", (190, 120, 55), (105, 62, 32), (246, 244, 238), (246, 244, 238),
           (90, 55, 25), (25, 20, 20), "blaze", 0.82),
    _Breed("dalmatian_synth", "dog", (246, 246, 242), (28, 28, 30), (22, 22, 24), (236, 236, 230),
           (70, 45, 25), (20, 20, 20), "spots", 0.56),
    _Breed("labrador_synth", "dog", (100, 62, 36), (72, 44, 24), (100, 62, 36), (140, 98, 66),
           (160, 110, 45), (40, 25, 20), "plain", 0.5),
    _Breed("Siamese_synth", "cat", (238, 226, 202), (80, 55, 42), (92, 64, 50), (150, 100, 95),
           (80, 150, 235), (85, 62, 60), "points", 0.78),
    _Breed("Tabby_synth", "cat", (222, 142, 62), (222, 142, 62), (146, 78, 24), (242, 172, 162),
           (125, 190, 70), (230, 130, 130), "stripes", 0.6),
    _Breed("Tuxedo_synth", "cat", (32, 32, 36), (32, 32, 36), (242, 242, 242), (205, 130, 140),
           (232, 200, 50), (230, 140, 150), "tuxedo", 0.64),
)  # fmt: skip

SYNTHETIC_BREEDS: list[tuple[str, str]] = [(b.name, b.species) for b in _BREEDS]

# A fixed polygon for the unit circle; computed once so every ellipse uses the same vertices.
_N_CIRCLE = 40
_CIRCLE = np.array(
    [(math.cos(2 * math.pi * k / _N_CIRCLE), math.sin(2 * math.pi * k / _N_CIRCLE)) for k in range(_N_CIRCLE)]
)


@dataclass(frozen=True)
class _Part:
    """A shape in a head's local frame (face centre at the origin, face radius 1, y down)."""

    points: np.ndarray  # float (N, 2)
    color: RGB
    width: float | None = None  # None: filled polygon; else an open polyline this wide (local units)


@dataclass(frozen=True)
class _Shape:
    """A shape ready for OpenCV: fixed-point image coordinates (``_SHIFT`` fractional bits)."""

    points: np.ndarray  # int32 (N, 2)
    color: RGB
    thickness: int  # -1: filled polygon; else open polyline width in pixels

    def draw(self, img: np.ndarray, color: RGB | int | None = None) -> None:
        """Draw antialiased, so edges look photographic and the mask covers every touched pixel."""
        c = self.color if color is None else color
        if self.thickness < 0:
            cv2.fillPoly(img, [self.points], c, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(img, [self.points], False, c, self.thickness, cv2.LINE_AA, _SHIFT)


@dataclass(frozen=True)
class _Pose:
    """Maps a local frame to the image: scale each axis, rotate, then translate."""

    cx: float
    cy: float
    sx: float
    sy: float
    cos: float = 1.0
    sin: float = 0.0

    def apply(self, pts: np.ndarray) -> np.ndarray:
        x = pts[:, 0] * self.sx
        y = pts[:, 1] * self.sy
        return np.stack([self.cx + x * self.cos - y * self.sin, self.cy + x * self.sin + y * self.cos], 1)


@dataclass
class SyntheticScene:
    """One image before encoding, with the head kept apart so it can be drawn or left out.

    ``background`` already holds the background texture, the distractors and the body; the head is
    drawn over it and a shared grain is added last. Rendering with ``draw_head=False`` changes exactly
    the head's pixels, which is what the tests use to check the box against the picture.
    """

    breed_index: int
    background: np.ndarray  # (H, W, 3) uint8 RGB
    head: list[_Shape]
    grain: np.ndarray  # (H, W, 1) int16, added after the head so it looks like one photograph
    truncated: bool  # the head reaches outside the image (VOC's <truncated>)

    @property
    def width(self) -> int:
        return int(self.background.shape[1])

    @property
    def height(self) -> int:
        return int(self.background.shape[0])

    def render(self, draw_head: bool = True) -> np.ndarray:
        """The final RGB uint8 image, with or without the head."""
        img = self.background.copy()
        if draw_head:
            for shape in self.head:
                shape.draw(img)
        return np.clip(img.astype(np.int16) + self.grain, 0, 255).astype(np.uint8)

    def head_mask(self) -> np.ndarray:
        """Boolean (H, W) mask of every pixel the head touches, ears included."""
        mask = np.zeros((self.height, self.width), np.uint8)
        for shape in self.head:
            shape.draw(mask, 255)
        return mask > 0

    def box(self) -> tuple[int, int, int, int]:
        """Tight head box as VOC writes it: (xmin, ymin, xmax, ymax), 1-based inclusive pixels."""
        mask = self.head_mask()
        cols = np.flatnonzero(mask.any(0))
        rows = np.flatnonzero(mask.any(1))
        return int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1


def image_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of image ``index``: a child of ``seed``, independent of how many images are made."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0) -> np.ndarray:
    pts = _CIRCLE * (rx, ry)
    if angle_deg:
        c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
        pts = np.stack([pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], 1)
    return pts + np.array([cx, cy])


def _mirror(pts: np.ndarray) -> np.ndarray:
    return pts * (-1.0, 1.0)


def _shade(color: RGB, gain: float, tint: np.ndarray) -> RGB:
    """Apply the image's lighting (brightness gain and colour cast) to a palette colour."""
    c = np.clip(np.rint(np.asarray(color, float) * gain + tint), 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def _cat_ears(rng: np.random.Generator, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointed triangular ears (left ear; the right one is its mirror): outer and inner triangle."""
    tip = (-0.8 + rng.uniform(-0.12, 0.12), -0.8 - height * rng.uniform(0.88, 1.12))
    outer = np.array([(-0.99, -0.16), tip, (-0.16, -0.8)])
    centre = outer.mean(0)
    inner = centre + (outer - centre) * 0.55 + (0.0, 0.05)
    return outer, inner


def _dog_ear(rng: np.random.Generator, length: float) -> np.ndarray:
    """A floppy ear hanging beside the face (left ear), its bottom flared outwards."""
    tilt = rng.uniform(10, 25)
    return _ellipse(-0.9, -0.62 + length, 0.3 * rng.uniform(0.9, 1.15), length, tilt)


def _cat_head(rng: np.random.Generator, b: _Breed, col: dict[str, RGB]) -> list[_Part]:
    """A cat's head: pointed ears, round face, almond eyes with slit pupils, small nose, whiskers."""
    outer, inner = _cat_ears(rng, b.ear_size)
    parts = [_Part(outer, col["ears"]), _Part(_mirror(outer), col["ears"])]
    parts += [_Part(inner, col["ear_inner"]), _Part(_mirror(inner), col["ear_inner"])]
    parts.append(_Part(_ellipse(0, 0, 1.0, 0.86), col["fur"]))
    if b.pattern == "points":
        parts.append(_Part(_ellipse(0, 0.25, 0.5, 0.45), col["accent"]))
    elif b.pattern == "stripes":
        for x in (-0.25, 0.0, 0.25):
            parts.append(_Part(np.array([(x, -0.79), (x * 0.7, -0.45)]), col["accent"], 0.08))
        for side in (-1.0, 1.0):
            for y0, y1 in ((-0.05, 0.02), (0.18, 0.2)):
                parts.append(_Part(np.array([(0.93 * side, y0), (0.62 * side, y1)]), col["accent"], 0.07))
    elif b.pattern == "tuxedo":
        parts.append(_Part(_ellipse(0, 0.45, 0.55, 0.38), col["accent"]))
        parts.append(_Part(np.array([(-0.13, 0.15), (0.13, 0.15), (0.0, -0.45)]), col["accent"]))
    eye_y = rng.uniform(-0.14, -0.02)
    for side in (-1.0, 1.0):
        x = 0.4 * side
        parts.append(_Part(_ellipse(x, eye_y, 0.2, 0.13), col["iris"]))
        parts.append(_Part(_ellipse(x, eye_y, 0.045, 0.11), (12, 12, 12)))
        parts.append(_Part(_ellipse(x + 0.06, eye_y - 0.05, 0.035, 0.035), (250, 250, 250)))
    parts.append(_Part(np.array([(-0.11, 0.2), (0.11, 0.2), (0.0, 0.32)]), col["nose"]))
    line = (40, 30, 30) if sum(col["fur"]) > 200 else (200, 200, 200)
    parts.append(_Part(np.array([(0.0, 0.32), (0.0, 0.4)]), line, 0.035))
    mouth = np.array([(-0.15, 0.46), (-0.07, 0.47), (0.0, 0.4), (0.07, 0.47), (0.15, 0.46)])
    parts.append(_Part(mouth, line, 0.035))
    whisker = (245, 245, 245) if sum(col["fur"]) < 450 else (60, 60, 60)
    for dy in (-0.06, 0.0, 0.06):
        w = np.array([(0.25, 0.38 + dy), (0.78, 0.28 + 1.5 * dy)])
        parts += [_Part(w, whisker, 0.018), _Part(_mirror(w), whisker, 0.018)]
    return parts


def _dog_head(rng: np.random.Generator, b: _Breed, col: dict[str, RGB]) -> list[_Part]:
    """A dog's head: floppy ears, long face, pale muzzle, round eyes, big black nose."""
    ear = _dog_ear(rng, b.ear_size * rng.uniform(0.9, 1.1))
    parts = [_Part(ear, col["ears"]), _Part(_mirror(ear), col["ears"])]
    parts.append(_Part(_ellipse(0, 0, 1.0, 1.05), col["fur"]))
    if b.pattern == "blaze":
        parts.append(_Part(np.array([(-0.1, -0.75), (0.1, -0.75), (0.26, 0.2), (-0.26, 0.2)]), col["accent"]))
    elif b.pattern == "spots":
        for _ in range(int(rng.integers(5, 11))):
            r = rng.uniform(0.06, 0.13)
            a = rng.uniform(0, 2 * math.pi)
            d = math.sqrt(rng.uniform(0, 1)) * (0.93 - r)  # keeps the spot inside the face
            spot = _ellipse(d * math.cos(a), d * math.sin(a), r, r * rng.uniform(0.8, 1.2))
            parts.append(_Part(spot, col["accent"]))
    parts.append(_Part(_ellipse(0, 0.5, 0.5, 0.4), col["ear_inner"]))
    eye_y = rng.uniform(-0.26, -0.14)
    for side in (-1.0, 1.0):
        x = 0.38 * side
        parts.append(_Part(_ellipse(x, eye_y, 0.13, 0.13), col["iris"]))
        parts.append(_Part(_ellipse(x, eye_y, 0.08, 0.08), (10, 10, 10)))
        parts.append(_Part(_ellipse(x + 0.04, eye_y - 0.04, 0.035, 0.035), (250, 250, 250)))
    parts.append(_Part(_ellipse(0, 0.32, 0.18, 0.12), col["nose"]))
    parts.append(_Part(_ellipse(0.05, 0.28, 0.05, 0.03), (120, 120, 120)))
    if rng.random() < 0.35:
        parts.append(_Part(_ellipse(0, 0.8, 0.12, 0.13), (225, 95, 110)))
    line = (30, 25, 25)
    parts.append(_Part(np.array([(0.0, 0.44), (0.0, 0.62)]), line, 0.035))
    mouth = np.array([(-0.25, 0.68), (-0.1, 0.72), (0.0, 0.62), (0.1, 0.72), (0.25, 0.68)])
    parts.append(_Part(mouth, line, 0.035))
    return parts


def _blob_head(rng: np.random.Generator, color: RGB) -> list[_Part]:
    """A face-less head-like silhouette (ears + face, no features): a distractor."""
    if rng.random() < 0.5:
        outer, _ = _cat_ears(rng, rng.uniform(0.5, 0.8))
        ears = [outer, _mirror(outer)]
        face = _ellipse(0, 0, 1.0, 0.86)
    else:
        ear = _dog_ear(rng, rng.uniform(0.45, 0.85))
        ears = [ear, _mirror(ear)]
        face = _ellipse(0, 0, 1.0, 1.05)
    ear_color = _shade(color, rng.uniform(0.6, 1.1), np.zeros(3))
    return [_Part(e, ear_color) for e in ears] + [_Part(face, color)]


def _extent(parts: list[_Part]) -> tuple[float, float, float, float]:
    pts = np.concatenate([p.points for p in parts])
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    return float(x0), float(y0), float(x1), float(y1)


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.rint(pts * _ONE).astype(np.int32)


def _to_shapes(parts: list[_Part], pose: _Pose) -> list[_Shape]:
    scale = math.sqrt(pose.sx * pose.sy)
    return [
        _Shape(
            _fixed(pose.apply(p.points)), p.color, -1 if p.width is None else max(1, round(p.width * scale))
        )
        for p in parts
    ]


def _fit_pose(
    rng: np.random.Generator,
    parts: list[_Part],
    side: float,
    w: int,
    h: int,
    overhang: float = 0.0,
    cut: bool = False,
) -> tuple[_Pose, tuple[float, float, float, float]]:
    """Tilt and scale ``parts`` so their box's longer side is ``side`` px, and place them in the image.

    ``overhang`` is the largest share of the rotated box's width (height) that may fall outside the
    image on either side; 0 keeps the object inside. ``cut`` pushes 10-35% of it out over one random
    border instead. Returns the pose and the rotated box (x0, y0, x1, y1), which may reach outside.
    """
    x0, y0, x1, y1 = _extent(parts)
    lw, lh = x1 - x0, y1 - y0
    aspect = rng.uniform(0.75, 1.33)
    sx, sy = math.sqrt(aspect), 1 / math.sqrt(aspect)
    theta = math.radians(rng.uniform(-15, 15)) if rng.random() < 0.7 else 0.0
    c, si = math.cos(theta), math.sin(theta)
    hw = (abs(c) * lw * sx + abs(si) * lh * sy) / 2
    hh = (abs(si) * lw * sx + abs(c) * lh * sy) / 2
    s = side / (2 * max(hw, hh))  # the rotated box's longer side is exactly `side`
    sx, sy, hw, hh = sx * s, sy * s, hw * s, hh * s

    def centre(half: float, size: int) -> float:
        lo, hi = half * (1 - 2 * overhang), size - 1 - half * (1 - 2 * overhang)
        return (size - 1) / 2 if lo >= hi else float(rng.uniform(lo, hi))

    bx, by = centre(hw, w), centre(hh, h)
    if cut:
        border = int(rng.integers(4))  # left, right, top, bottom
        out = rng.uniform(0.1, 0.35)
        half, size = (hw, w) if border < 2 else (hh, h)
        pos = half * (1 - 2 * out) if border % 2 == 0 else size - 1 - half * (1 - 2 * out)
        bx, by = (pos, by) if border < 2 else (bx, pos)
    # The pose maps the local bbox centre to (bx, by).
    lcx, lcy = (x0 + x1) / 2, (y0 + y1) / 2
    ox, oy = lcx * sx, lcy * sy
    pose = _Pose(bx - (ox * c - oy * si), by - (ox * si + oy * c), sx, sy, c, si)
    return pose, (bx - hw, by - hh, bx + hw, by + hh)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A textured scene: smooth colour gradients, optional stripes (floorboards, wallpaper), blobs."""
    base = rng.integers(30, 226, size=3)
    gh, gw = (int(v) for v in rng.integers(2, 7, size=2))
    grid = np.clip(base + rng.integers(-70, 71, size=(gh, gw, 3)), 0, 255).astype(np.uint8)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        angle = rng.uniform(0, math.pi)
        dx, dy = math.cos(angle), math.sin(angle)
        spacing = float(rng.uniform(8, 45))
        thick = int(rng.integers(2, max(3, int(spacing * 0.6))))
        color = tuple(int(v) for v in np.clip(base + rng.integers(-60, 61, size=3), 0, 255))
        diag = math.hypot(w, h)
        for t in np.arange(-diag / 2, diag / 2, spacing):
            px, py = w / 2 - dy * t, h / 2 + dx * t
            p0 = _fixed(np.array([px - dx * diag, py - dy * diag]))
            p1 = _fixed(np.array([px + dx * diag, py + dy * diag]))
            cv2.line(
                img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), color, thick, cv2.LINE_AA, _SHIFT
            )
    for _ in range(int(rng.integers(2, 9))):
        r = min(w, h) * rng.uniform(0.04, 0.3)
        pts = _ellipse(
            rng.uniform(0, w), rng.uniform(0, h), r, r * rng.uniform(0.3, 1.0), rng.uniform(0, 180)
        )
        near = rng.random() < 0.5  # half the blobs in the scene's tones, half in any colour
        rgb = np.clip(base + rng.integers(-80, 81, size=3), 0, 255) if near else rng.integers(0, 256, size=3)
        cv2.fillPoly(img, [_fixed(pts)], tuple(int(v) for v in rgb), cv2.LINE_AA, _SHIFT)
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 4.0))


def _similar(rng: np.random.Generator, fur: RGB) -> RGB:
    """Distractor colour: mostly close to the pet's fur, else another breed's fur or any colour."""
    u = rng.random()
    if u < 0.5:
        c = np.clip(np.asarray(fur) + rng.integers(-35, 36, size=3), 0, 255)
    elif u < 0.75:
        c = np.asarray(_BREEDS[int(rng.integers(len(_BREEDS)))].fur)
    else:
        c = rng.integers(0, 256, size=3)
    return int(c[0]), int(c[1]), int(c[2])


def _distractors(
    rng: np.random.Generator, w: int, h: int, fur: RGB, head_box: tuple[float, float, float, float]
) -> list[_Shape]:
    """1-3 shapes in pet-like colours, kept off the head's centre so the head stays visible."""
    shapes: list[_Shape] = []
    short = min(w, h)
    for _ in range(int(rng.integers(1, 4))):
        color = _similar(rng, fur)
        kind = rng.random()
        side = short * rng.uniform(0.08, 0.45)
        if kind < 0.4:
            parts = _blob_head(rng, color)
        elif kind < 0.7:
            parts = [_Part(_ellipse(0, 0, 1.0, rng.uniform(0.3, 1.0)), color)]
        else:
            k = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * math.pi, size=k))
            radii = rng.uniform(0.4, 1.0, size=k)
            unit = np.array([(math.cos(a), math.sin(a)) for a in angles])
            parts = [_Part(unit * radii[:, None], color)]
        for _try in range(8):
            pose, _ = _fit_pose(rng, parts, side, w, h, overhang=0.3)
            cx, cy = pose.apply(np.zeros((1, 2)))[0]
            inside = head_box[0] <= cx <= head_box[2] and head_box[1] <= cy <= head_box[3]
            if not inside:
                shapes += _to_shapes(parts, pose)
                break
    return shapes


def _body(rng: np.random.Generator, b: _Breed, col: dict[str, RGB], head: _Pose) -> list[_Shape]:
    """A body blob attached below or beside the head, in the fur colour; not part of the box."""
    face_r = math.sqrt(head.sx * head.sy)
    face = head.apply(np.zeros((1, 2)))[0]
    phi = rng.uniform(math.radians(25), math.radians(155))
    rx = face_r * rng.uniform(1.2, 2.2)
    ry = rx * rng.uniform(0.5, 0.8)
    dist = face_r * 0.7 + rx * 0.8
    cx, cy = face[0] + math.cos(phi) * dist, face[1] + math.sin(phi) * dist
    fur = _shade(col["fur"], rng.uniform(0.75, 0.92), np.zeros(3))  # a shade off, so the chin shows
    shapes = [_Shape(_fixed(_ellipse(cx, cy, rx, ry, math.degrees(phi))), fur, -1)]
    if b.pattern in ("spots", "stripes", "tuxedo"):
        for _ in range(int(rng.integers(2, 7))):
            a = rng.uniform(0, 2 * math.pi)
            d = math.sqrt(rng.uniform(0, 1)) * 0.6
            px = cx + d * (rx * math.cos(a) * math.cos(phi) - ry * math.sin(a) * math.sin(phi))
            py = cy + d * (rx * math.cos(a) * math.sin(phi) + ry * math.sin(a) * math.cos(phi))
            r = face_r * rng.uniform(0.08, 0.18)
            shapes.append(_Shape(_fixed(_ellipse(px, py, r, r)), col["accent"], -1))
    return shapes


def compose_scene(rng: np.random.Generator, breed_index: int) -> SyntheticScene:
    """Draw one random scene of breed ``breed_index`` (a position in ``SYNTHETIC_BREEDS``)."""
    b = _BREEDS[breed_index]
    while True:
        w, h = (int(v) for v in rng.integers(200, 501, size=2))
        if 0.6 <= w / h <= 1.0 / 0.6:
            break
    gain, tint = rng.uniform(0.85, 1.12), rng.integers(-12, 13, size=3)
    col = {
        k: _shade(getattr(b, k), gain, tint) for k in ("fur", "ears", "accent", "ear_inner", "iris", "nose")
    }
    parts = _cat_head(rng, b, col) if b.species == "cat" else _dog_head(rng, b, col)
    side = min(w, h) * (0.1 + 0.5 * rng.random() ** 1.3)  # head's longer side: 10% to 60% of the image
    pose, head_box = _fit_pose(rng, parts, side, w, h, cut=rng.random() < 0.08)
    head = _to_shapes(parts, pose)

    img = _background(rng, w, h)
    below: list[_Shape] = _distractors(rng, w, h, col["fur"], head_box)
    if rng.random() < 0.7:
        below += _body(rng, b, col, pose)
    for shape in below:
        shape.draw(img)
    amp = int(rng.integers(2, 12))
    grain = rng.integers(-amp, amp + 1, size=(h, w, 1), dtype=np.int16)
    pts = np.concatenate([s.points for s in head]) / _ONE
    truncated = bool(pts.min() < 0 or pts[:, 0].max() > w - 1 or pts[:, 1].max() > h - 1)
    return SyntheticScene(breed_index, img, head, grain, truncated)


@dataclass(frozen=True)
class Head:
    """One image of a set in the Oxford layout: its file stem (``<breed>_<number>``), its breed (an
    index into :data:`SYNTHETIC_BREEDS`), size, and head box as VOC writes it (1-based inclusive
    pixels; None: a test image, which has no XML)."""

    name: str
    breed_index: int
    width: int
    height: int
    box: tuple[int, int, int, int] | None
    truncated: bool = False  # the head reaches outside the image (VOC's <truncated>)


def _xml(head: Head, box: tuple[int, int, int, int]) -> str:
    """PASCAL VOC annotation in the real dataset's exact layout (one line, no declaration)."""
    xmin, ymin, xmax, ymax = box
    species = _BREEDS[head.breed_index].species
    return (
        f"<annotation><folder>SYNTHPETS</folder><filename>{head.name}.jpg</filename>"
        "<source><database>petloc synthetic pets</database><annotation>petloc</annotation>"
        "<image>synthetic</image></source>"
        f"<size><width>{head.width}</width><height>{head.height}</height><depth>3</depth></size>"
        f"<segmented>0</segmented><object><name>{species}</name><pose>Frontal</pose>"
        f"<truncated>{int(head.truncated)}</truncated><occluded>0</occluded>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
        "<difficult>0</difficult></object></annotation>\n"
    )


def _list_header() -> str:
    """The real list.txt's '#' lines (typo included), with this dataset's counts."""
    n_cat = sum(b.species == "cat" for b in _BREEDS)
    n_dog = len(_BREEDS) - n_cat
    return (
        "#Image CLASS-ID SPECIES BREED ID\n"
        f"#ID: 1:{len(_BREEDS)} Class ids\n"
        "#SPECIES: 1:Cat 2:Dog\n"
        f"#BREED ID: 1-{n_cat}:Cat 1:{n_dog}:Dog\n"
        "#All images with 1st letter as captial are cat images\n"
        "#images with small first letter are dog images\n"
    )


def _list_ids() -> list[tuple[int, int, int]]:
    """(CLASS-ID, SPECIES, BREED-ID) per breed: class ids alphabetical, breed ids within species."""
    ids = []
    for i, b in enumerate(_BREEDS):
        species = 1 if b.species == "cat" else 2
        within = sum(o.species == b.species for o in _BREEDS[:i]) + 1
        ids.append((i + 1, species, within))
    return ids


def _write_text(path: Path, text: str) -> None:
    """Write ASCII with '\\n' line ends whatever the platform, so files are byte-identical everywhere."""
    path.write_bytes(text.encode("ascii"))


def _marker_text(n: int, seed: int) -> str:
    return f"{_MARKER_HEAD} v{SYNTHETIC_VERSION}\nn={n}\nseed={seed}\n"


def _is_complete(out: Path, n: int, seed: int) -> bool:
    marker = out / _COMPLETE
    return marker.is_file() and marker.read_text() == _marker_text(n, seed)


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a folder unless it is empty or a synthetic set made by this module."""
    if not out.exists():
        return
    marker = out / _COMPLETE
    ours = marker.is_file() and marker.read_text().startswith(_MARKER_HEAD)
    if not out.is_dir() or not (ours or not any(out.iterdir())):
        raise FileExistsError(
            f"{out} exists and is not a synthetic set made by generate_synthetic_pets; "
            "choose an empty or new folder (nothing was deleted)"
        )


def write_annotations(folder: Path, heads: Sequence[Head]) -> None:
    """``folder/annotations`` of a set in the Oxford layout, as the real dataset writes it: an XML per
    boxed head in ``xmls/``, and ``list.txt``, ``trainval.txt`` (boxed) and ``test.txt`` (not boxed),
    by breed, then in the given order. The images (``folder/images/<name>.jpg``) are the caller's."""
    ann = folder / "annotations"
    (ann / "xmls").mkdir(parents=True, exist_ok=True)
    for head in heads:
        if head.box is not None:
            _write_text(ann / "xmls" / f"{head.name}.xml", _xml(head, head.box))
    ids = _list_ids()
    lines = [f"{h.name} {' '.join(map(str, ids[h.breed_index]))}\n" for h in heads]
    order = sorted(range(len(heads)), key=lambda i: heads[i].breed_index)  # stable: the given order within
    _write_text(ann / "list.txt", _list_header() + "".join(lines[i] for i in order))
    _write_text(ann / "trainval.txt", "".join(lines[i] for i in order if heads[i].box is not None))
    _write_text(ann / "test.txt", "".join(lines[i] for i in order if heads[i].box is None))


def _write_set(folder: Path, n: int, seed: int, progress: bool) -> None:
    """Write the whole set into the empty ``folder``; the ``.complete`` marker is written last."""
    images = folder / "images"
    images.mkdir(parents=True)
    k = len(_BREEDS)
    n_test = round(n * TEST_FRACTION)
    test = set(np.random.default_rng(seed).choice(n, size=n_test, replace=False).tolist())
    heads = []
    for i in tqdm(range(n), desc="synthetic pets", unit="img", disable=not progress):
        breed = i % k
        name = f"{_BREEDS[breed].name}_{i // k + 1}"
        scene = compose_scene(image_rng(seed, i), breed)
        bgr = cv2.cvtColor(scene.render(), cv2.COLOR_RGB2BGR)
        ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        (images / f"{name}.jpg").write_bytes(jpg.tobytes())
        box = None if i in test else scene.box()
        heads.append(Head(name, breed, scene.width, scene.height, box, scene.truncated))
    write_annotations(folder, heads)
    _write_text(folder / _COMPLETE, _marker_text(n, seed))


def generate_synthetic_pets(out: Path | str, n: int = 1200, seed: int = 0, progress: bool = True) -> Path:
    """Write ``n`` synthetic pet images with head boxes into ``out`` in the Oxford-IIIT Pet layout.

    Returns ``out``. A finished set holds ``out/.complete`` (written last, recording the generator
    version, ``n`` and ``seed``); when it matches, nothing is redone, so this is cheap to call before
    every run. The set is written into a hidden sibling folder and renamed to ``out`` only when
    complete, so an interrupted run never leaves a set that looks usable, and concurrent runs (parallel
    sweep jobs on first use) do not clobber each other: the first to finish wins. A set made with other
    parameters is replaced; any other non-empty ``out`` raises ``FileExistsError``.

    Image ``i`` (0-based) is breed ``SYNTHETIC_BREEDS[i % 6]``, named ``<breed>_<i // 6 + 1>`` and
    drawn by ``compose_scene(image_rng(seed, i), i % 6)``, so its pixels do not depend on ``n``.
    About ``TEST_FRACTION`` of the images go to ``test.txt`` without an XML, like the real test split.
    """
    out = Path(out)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if _is_complete(out, n, seed):
        return out
    _check_replaceable(out)  # fail before spending minutes on generation
    out.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique among concurrent generators
    partial = out.with_name(f".{out.name}.partial-{token}")
    try:
        _write_set(partial, n, seed, progress)
        if out.exists() and not _is_complete(out, n, seed):
            _check_replaceable(out)
            old = out.with_name(f".{out.name}.old-{token}")
            with contextlib.suppress(FileNotFoundError):  # a concurrent run may have moved it already
                out.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            partial.rename(out)
        except OSError:
            if not _is_complete(out, n, seed):  # else another run installed the same set first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # already gone after a successful rename
    return out


def synthesize(out: Path, format: str | None = None, n: int = 1200, seed: int = 0) -> Path:
    """The synthetic set in ``out``: in the generator's own layout (``format`` None, or the format
    that reads it), else generated beside ``out`` and written by ``format``'s writer (the records'
    boxed images; class = breed). ``out`` must be new or empty for a written format."""
    if format is None or FORMATS[format].write is None:
        generate_synthetic_pets(out, n=n, seed=seed)
        if format not in (None, found := detect_format(out)):
            raise ValueError(
                f"format {format} is read only: {out} holds the generator's own layout ({found})"
            )
        return out
    empty_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # beside OUT, so that the images are hard-linked rather than copied
    with tempfile.TemporaryDirectory(prefix=".petloc-synth-", dir=out.parent) as tmp:
        convert(generate_synthetic_pets(Path(tmp) / "pets", n=n, seed=seed), out, format)
    return out
