"""Tests for petloc.data.augment on real photographs from the sample.

Deterministic transforms are checked against hand-computed results (a stretch-resize keeps the
normalized box; a horizontal flip mirrors it: x -> 1 - x). The random presets are checked by
pixels: a marker exactly filling the head box is painted into the real image, once white and once
black, and both copies go through the same seeded draw; the pixels where the two outputs differ are
the marker after the augmentation, and their bounding box must equal the box the pipeline returns.

The marker is the ellipse inscribed in the box: its bounding box is the box itself, and the pipeline
rotates boxes with albumentations' ``ellipse`` method, which defines the rotated box as the bounding
box of that rotated ellipse (a head is round, so this is the tight box). A rectangle marker would
grow past the box under rotation by design (several pixels at 10 degrees), so for ``light``, which
does not rotate, the rectangle is checked as well.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
import yaml

from petloc import CONFIG_DIR
from petloc.data.augment import AugmentConfig, ColourJitter, _map_box, augment_boxes, colour_transform, mosaic
from petloc.data.cache import decode_image
from petloc.data.formats import read_dataset
from petloc.data.images import resize_to_input
from petloc.data.records import Record

SIZE = 128
CACHE_SIDE = 160  # what the decode cache holds for SIZE (cache_scale 1.25)
TOLERANCE_PX = 2.0
# Heads of different sizes and places: small and off-centre, large, near a border, square 299 px files.
IMAGES = ("Abyssinian_1", "Bengal_105", "Birman_10", "yorkshire_terrier_10", "Abyssinian_10")


@pytest.fixture(scope="module")
def samples(oxford_sample: Path) -> dict[str, tuple[np.ndarray, Record]]:
    """Real images as the decode cache serves them, with their records."""
    records = {r.image_id: r for r in read_dataset(oxford_sample, "oxford").records}
    return {i: (decode_image(records[i].path, CACHE_SIDE), records[i]) for i in IMAGES}


def preset(name: str) -> AugmentConfig:
    return AugmentConfig(**yaml.safe_load((CONFIG_DIR / "augment" / f"{name}.yaml").read_text()))


def coverage(height: int, width: int, box: tuple[float, ...], shape: str, ss: int = 8) -> np.ndarray:
    """Share of each pixel inside the box-filling rectangle or inscribed ellipse (ss x ss samples).

    Painting by coverage (anti-aliased) puts the marker's half-intensity edge on the box's true,
    sub-pixel edge, so a crop that enlarges the head several times does not enlarge a rounding error.
    """
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    offsets = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(width)[:, None] + offsets).ravel()
    ys = (np.arange(height)[:, None] + offsets).ravel()
    if shape == "rectangle":
        in_x = ((xs >= x0) & (xs < x1)).reshape(width, ss).mean(1)
        in_y = ((ys >= y0) & (ys < y1)).reshape(height, ss).mean(1)
        return in_y[:, None] * in_x[None, :]
    cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    inside = ((xs[None, :] - cx) / ax) ** 2 + ((ys[:, None] - cy) / ay) ** 2 <= 1
    return inside.reshape(height, ss, width, ss).mean(axis=(1, 3))


def paint(image: np.ndarray, cover: np.ndarray, value: int) -> np.ndarray:
    blended = image.astype(np.float32) * (1 - cover[..., None]) + value * cover[..., None]
    return np.rint(blended).astype(np.uint8)


def marker_box(white: np.ndarray, black: np.ndarray) -> np.ndarray:
    """Pixel box (x0, y0, x1, y1) of where two outputs differ by at least half their largest difference.

    The half-way threshold finds the marker's edge whatever the colour jitter, grey conversion or blur
    did to its contrast; grey fill and the rest of the photo are the same in both and drop out.
    """
    diff = np.abs(white.astype(np.int16) - black.astype(np.int16)).max(axis=-1)
    assert diff.max() >= 40, "marker not visible"
    mask = diff >= diff.max() / 2
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def assert_valid(box: np.ndarray) -> None:
    assert box.shape == (4,)
    assert 0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0, box


def augmented(
    image: np.ndarray, box: tuple[float, ...], cfg: AugmentConfig, seed: int, others: tuple = ()
) -> tuple[np.ndarray, np.ndarray, bool]:
    """One seeded training draw, geometry then colour, as the training dataset makes it."""
    out, boxes, used_fallback = augment_boxes(
        image, np.asarray([box, *others], dtype=np.float64), SIZE, cfg, np.random.default_rng(seed)
    )
    colour = colour_transform(cfg)
    colour.set_random_seed(seed)
    return colour(image=out)["image"], boxes, used_fallback


@pytest.mark.realdata
def test_preset_none_is_the_plain_stretch(samples: dict[str, tuple[np.ndarray, Record]]) -> None:
    for image, record in samples.values():
        out, boxes, used_fallback = augmented(image, record.box, preset("none"), 0)
        assert not used_fallback
        assert boxes == pytest.approx(np.asarray([record.box]), abs=1e-6)
        assert np.array_equal(out, cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR))
        assert np.array_equal(out, resize_to_input(image, SIZE))


@pytest.mark.realdata
def test_horizontal_flip_mirrors_the_box(samples: dict[str, tuple[np.ndarray, Record]]) -> None:
    cfg = AugmentConfig(name="flip", hflip=1.0)
    for image, record in samples.values():
        out, boxes, _ = augmented(image, record.box, cfg, 0)
        x0, y0, x1, y1 = record.box
        assert boxes == pytest.approx(np.asarray([(1 - x1, y0, 1 - x0, y1)]), abs=1e-6)
        assert np.array_equal(out, resize_to_input(image, SIZE)[:, ::-1])


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "shape", "draws"),
    [("light", "rectangle", 20), ("light", "ellipse", 20), ("strong", "ellipse", 40)],
)
def test_random_presets_keep_a_box_that_frames_the_marked_head(
    samples: dict[str, tuple[np.ndarray, Record]], name: str, shape: str, draws: int
) -> None:
    cfg = preset(name)
    changed = 0
    for image_id, (image, record) in samples.items():
        cover = coverage(*image.shape[:2], record.box, shape)
        white, black = paint(image, cover, 255), paint(image, cover, 0)
        for seed in range(draws):
            out_white, boxes, _ = augmented(white, record.box, cfg, seed)
            out_black, boxes_black, _ = augmented(black, record.box, cfg, seed)
            assert np.array_equal(boxes, boxes_black)  # the draw depends on the box, not on the pixels
            assert out_white.shape == (SIZE, SIZE, 3) and out_white.dtype == np.uint8
            assert boxes.shape == (1, 4) and boxes.dtype == np.float32
            assert_valid(boxes[0])
            error = np.abs(marker_box(out_white, out_black) - boxes[0] * SIZE).max()
            assert error <= TOLERANCE_PX, (image_id, seed, error)
            changed += not np.allclose(boxes[0], record.box, atol=1e-3)
    assert changed >= len(samples) * draws // 3  # the preset really moves boxes around


@pytest.mark.realdata
def test_other_objects_keep_boxes_that_frame_their_markers_while_in_view(
    samples: dict[str, tuple[np.ndarray, Record]],
) -> None:
    """An image with two objects: the head and a second, smaller region elsewhere in the photo. The
    second one's returned box (after the head's) frames its own marker whenever it keeps at least
    ``mosaic_min_visibility`` of its area in view, and is absent only when part of it is out of view."""
    image, record = samples["Abyssinian_1"]
    x0, _, x1, y1 = record.box
    other = (0.02, 0.70, 0.22, 0.95) if x0 > 0.3 else (0.75, 0.70, 0.95, 0.95)
    assert other[2] < x0 or other[0] > x1 or other[1] > y1  # apart from the head
    cfg = dataclasses.replace(preset("strong"), mosaic_min_visibility=0.5)
    cover = coverage(*image.shape[:2], other, "ellipse")
    white, black = paint(image, cover, 255), paint(image, cover, 0)
    kept = dropped = 0
    for seed in range(60):
        out_white, boxes, _ = augmented(white, record.box, cfg, seed, (other,))
        out_black, _, _ = augmented(black, record.box, cfg, seed, (other,))
        assert boxes.shape[0] in (1, 2)
        diff = np.abs(out_white.astype(np.int16) - out_black.astype(np.int16)).max(axis=-1)
        if boxes.shape[0] == 2:
            kept += 1
            assert_valid(boxes[1])
            assert np.abs(marker_box(out_white, out_black) - boxes[1] * SIZE).max() <= TOLERANCE_PX, seed
        elif diff.max() >= 40:
            dropped += 1
            # a dropped object is partly out of view: what is left of its marker touches the frame
            left = marker_box(out_white, out_black)
            assert left[0] <= 1 or left[1] <= 1 or left[2] >= SIZE - 1 or left[3] >= SIZE - 1, seed
    assert kept >= 20 and dropped >= 1


@pytest.mark.realdata
def test_a_box_the_preset_always_pushes_out_falls_back_to_the_resize(
    samples: dict[str, tuple[np.ndarray, Record]],
) -> None:
    image, record = samples["Abyssinian_1"]
    # Translations of 90% of the side with no visibility slack leave the box out of view.
    cfg = AugmentConfig(name="away", affine=1.0, translate=0.9, min_visibility=0.999)
    results = [augmented(image, record.box, cfg, seed) for seed in range(10)]
    assert any(used for _, _, used in results)
    for out, boxes, used in results:
        assert_valid(boxes[0])
        if used:
            assert boxes == pytest.approx(np.asarray([record.box]), abs=1e-6)
            assert np.array_equal(out, resize_to_input(image, SIZE))


def marked_mosaic(
    samples: list[tuple[np.ndarray, Record]], cfg: AugmentConfig, seed: int
) -> tuple[np.ndarray, list[np.ndarray | None], list[float]]:
    """One seeded mosaic of the four samples, plus, for each sample, where its box-filling rectangle
    marker ends up (pixel box, or None if out of view) and how much of it is visible (pixels over
    the marker's full area in the output: the tile is the image stretched to SIZE, zoom from ``cfg``).

    Each sample is marked white and black in turn, the others left alone, and the mosaic is redrawn
    with the same seed: the draw depends on the seed alone, so the outputs differ only in the marker.
    """
    images = [image for image, _ in samples]
    boxes = [np.asarray([record.box]) for _, record in samples]
    _, kept = mosaic(images, boxes, SIZE, cfg, np.random.default_rng(seed))
    where: list[np.ndarray | None] = []
    visible: list[float] = []
    for j, (image, record) in enumerate(samples):
        cover = coverage(*image.shape[:2], record.box, "rectangle")
        outs = []
        for value in (255, 0):
            marked = [paint(image, cover, value) if i == j else im for i, im in enumerate(images)]
            outs.append(mosaic(marked, boxes, SIZE, cfg, np.random.default_rng(seed))[0])
        diff = np.abs(outs[0].astype(np.int16) - outs[1].astype(np.int16)).max(axis=-1)
        zoom = cfg.scale[0]
        full = (record.box[2] - record.box[0]) * (record.box[3] - record.box[1]) * (SIZE * zoom) ** 2
        visible.append(float((diff / 255.0).sum()) / full)
        where.append(marker_box(*outs) if diff.max() >= 128 else None)
    return kept, where, visible


@pytest.mark.realdata
def test_mosaic_boxes_frame_the_marked_heads_in_order(samples: dict[str, tuple[np.ndarray, Record]]) -> None:
    """Every head with a visible part keeps its box (clipped to the frame) when the visibility floor
    is ~0; boxes come in the order of the images, the first image's first."""
    four = [samples[i] for i in IMAGES[:4]]
    cfg = AugmentConfig(scale=(0.6, 1.2), translate=0.1, mosaic=1.0, mosaic_min_visibility=1e-6)
    several = 0
    for seed in range(30):
        kept, where, visible = marked_mosaic(four, cfg, seed)
        # a sliver of under 2 px may or may not cross the half-intensity line: not decidable by pixels
        if any(
            v > 0 and (w is None or min(w[2] - w[0], w[3] - w[1]) < 2)
            for v, w in zip(visible, where, strict=True)
        ):
            continue
        expected = [w for w in where if w is not None]
        assert len(kept) == len(expected), (seed, len(kept), visible)
        for box, marker in zip(kept, expected, strict=True):
            assert_valid(box)
            assert np.abs(marker - box * SIZE).max() <= TOLERANCE_PX, (seed, box * SIZE, marker)
        several += len(kept) > 1
    assert several >= 10  # the mosaic really shows several heads at once


@pytest.mark.realdata
def test_mosaic_drops_heads_mostly_out_of_view(samples: dict[str, tuple[np.ndarray, Record]]) -> None:
    four = [samples[i] for i in IMAGES[:4]]
    cfg = AugmentConfig(scale=(1.0, 1.0), translate=0.2, mosaic=1.0, mosaic_min_visibility=0.5)
    dropped = 0
    for seed in range(30):
        kept, where, visible = marked_mosaic(four, cfg, seed)
        if any(0.45 < v < 0.55 for v in visible):
            continue  # too close to the floor for anti-aliased pixels to decide
        expected = [w for w, v in zip(where, visible, strict=True) if v >= 0.5]
        assert len(kept) == len(expected), (seed, visible)
        for box, marker in zip(kept, expected, strict=True):
            assert np.abs(marker - box * SIZE).max() <= TOLERANCE_PX
        dropped += sum(0 < v < 0.45 for v in visible)
    assert dropped > 0  # some heads were partly visible yet dropped


@pytest.mark.realdata
def test_a_mirrored_mosaic_is_the_mosaic_mirrored(samples: dict[str, tuple[np.ndarray, Record]]) -> None:
    """hflip=1 and hflip=0 make the same draw (the flip's draw comes last), so the flipped mosaic is
    the plain one with its columns reversed and every box's x -> 1 - x."""
    four = [samples[i] for i in IMAGES[:4]]
    images, boxes = [im for im, _ in four], [np.asarray([r.box]) for _, r in four]
    plain_cfg = AugmentConfig(scale=(0.6, 1.2), translate=0.1, mosaic=1.0)
    shown = 0
    for seed in range(8):
        plain, plain_boxes = mosaic(images, boxes, SIZE, plain_cfg, np.random.default_rng(seed))
        flipped, flipped_boxes = mosaic(
            images, boxes, SIZE, dataclasses.replace(plain_cfg, hflip=1.0), np.random.default_rng(seed)
        )
        shown += len(plain_boxes)
        assert np.array_equal(flipped, plain[:, ::-1])
        expected = np.stack(
            [1 - plain_boxes[:, 2], plain_boxes[:, 1], 1 - plain_boxes[:, 0], plain_boxes[:, 3]], 1
        )
        np.testing.assert_allclose(flipped_boxes, expected, atol=1e-6)
    assert shown >= 8


@pytest.mark.parametrize(
    ("degrees", "expected"),
    [
        (0, (10.0, 20.0, 50.0, 40.0)),  # a stretch by 2 maps the corners: (5, 10, 25, 20) -> x2
        # 90 degrees: the 40 x 20 box (semi-axes 20, 10) becomes 20 x 40 about the mapped centre
        (90, (-30.0 - 10.0, 30.0 - 20.0, -30.0 + 10.0, 30.0 + 20.0)),
        # 45 degrees: half-extents sqrt((20 cos)^2 + (10 sin)^2) = sqrt(250) on both axes
        (45, None),
    ],
)
def test_a_mapped_box_bounds_its_mapped_inscribed_ellipse(degrees: int, expected: tuple | None) -> None:
    """Hand-computed: the box (5, 10, 25, 20) under "stretch by 2, then rotate about the origin"."""
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    m = (2 * c, -2 * s, 0.0, 2 * s, 2 * c, 0.0)
    box = _map_box(m, (5.0, 10.0, 25.0, 20.0))
    centre = (2 * (c * 15 - s * 15), 2 * (s * 15 + c * 15))
    if expected is None:
        half = np.sqrt(250.0)
        expected = (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)
    assert box == pytest.approx(expected, abs=1e-9)


def _float_rgb(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


# One step per factor, as torchvision.transforms.v2.functional defines it, indexed as in ColorJitter.
TORCHVISION_STEPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def jitter(image: np.ndarray, factors: tuple[float, float, float, float], order: list[int]) -> np.ndarray:
    params = dict(zip(("brightness", "contrast", "saturation", "hue"), factors, strict=True))
    return ColourJitter(p=1.0).apply(image, order=order, **params)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("factors", "order"),
    [
        ((0.7, 1.0, 1.0, 0.0), [0]),
        ((1.0, 0.6, 1.0, 0.0), [1]),
        ((1.0, 1.0, 0.6, 0.0), [2]),
        ((0.8, 0.7, 0.6, 0.0), [2, 0, 1]),
        ((0.9, 0.6, 0.7, 0.0), [1, 2, 0]),
    ],
)
def test_colour_jitter_is_torchvisions_steps_in_one_pass(
    samples: dict[str, tuple[np.ndarray, Record]], factors: tuple, order: list[int]
) -> None:
    """Brightness, contrast and saturation against torchvision's float implementation, step by step.
    Factors at most 1 blend values that lie in [0, 255], so no step clips and only rounding differs."""
    for image, _ in samples.values():
        expected = _float_rgb(image)
        for step in order:
            expected = TORCHVISION_STEPS[step](expected, factors[step])
        difference = np.abs(jitter(image, factors, order).astype(int) - _to_uint8(expected).astype(int))
        assert difference.max() <= 1


@pytest.mark.realdata
def test_a_third_of_a_hue_turn_is_torchvisions_channel_permutation(
    samples: dict[str, tuple[np.ndarray, Record]],
) -> None:
    """HSV's hue shift and the turn about the grey axis agree exactly at a third of a turn: red to green."""
    for image, _ in samples.values():
        expected = _to_uint8(TF.adjust_hue(_float_rgb(image), 1 / 3))
        assert np.array_equal(expected, image[..., [2, 0, 1]])
        assert np.abs(jitter(image, (1.0, 1.0, 1.0, 1 / 3), [3]).astype(int) - expected).max() <= 1


@pytest.mark.realdata
@pytest.mark.parametrize("hue", [0.05, -0.1])
def test_a_hue_shift_turns_colours_about_the_grey_axis(
    samples: dict[str, tuple[np.ndarray, Record]], hue: float
) -> None:
    """Per pixel: the mean of R, G, B and the distance from the grey axis are kept, and the chroma
    vector (the colour minus its mean) turns by ``hue`` turns. Pixels near grey or clipped are left out."""
    image = samples[IMAGES[0]][0]
    before = image.reshape(-1, 3).astype(float)
    after = jitter(image, (1.0, 1.0, 1.0, hue), [3]).reshape(-1, 3).astype(float)
    c0, c1 = before - before.mean(1, keepdims=True), after - after.mean(1, keepdims=True)
    measurable = (np.linalg.norm(c0, axis=1) > 40) & (after.min(1) > 0) & (after.max(1) < 255)
    assert measurable.sum() > 100
    c0, c1 = c0[measurable], c1[measurable]
    np.testing.assert_allclose(after[measurable].mean(1), before[measurable].mean(1), atol=1.0)
    np.testing.assert_allclose(np.linalg.norm(c1, axis=1), np.linalg.norm(c0, axis=1), rtol=0.03)
    # signed angle about the grey axis (1, 1, 1) / sqrt(3)
    sine = np.cross(c0, c1) @ (np.ones(3) / np.sqrt(3))
    angle = np.arctan2(sine, (c0 * c1).sum(1))
    assert np.median(angle) == pytest.approx(2 * np.pi * hue, abs=0.01)


@pytest.mark.realdata
def test_colour_jitter_draws_albumentations_parameters_and_keeps_grey_grey(
    samples: dict[str, tuple[np.ndarray, Record]],
) -> None:
    """Seeded alike, albumentations' ColorJitter and ours draw the same factors: without a hue
    shift and with factors at most 1 the two images differ by rounding alone (the parent truncates
    at each of its three steps, so by at most 3). With every step drawn, a grey image stays grey."""
    image = samples[IMAGES[1]][0]
    for seed in range(10):
        ranges = dict(brightness=(0.6, 1.0), contrast=(0.6, 1.0), saturation=(0.6, 1.0), hue=0.0)
        ours, theirs = ColourJitter(p=1.0, **ranges), A.ColorJitter(p=1.0, **ranges)
        ours.set_random_seed(seed)
        theirs.set_random_seed(seed)
        assert np.abs(ours(image=image)["image"].astype(int) - theirs(image=image)["image"]).max() <= 3
        grey = np.repeat(image[..., :1], 3, axis=2)
        jittered = ColourJitter(p=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
        jittered.set_random_seed(seed)
        out = jittered(image=grey)["image"].astype(int)
        assert np.abs(out - out[..., :1]).max() <= 1
