"""Tests for petloc.data.cache: the decode-once cache of downsized images.

Oracles: a direct full-resolution PIL decode + OpenCV resize of the same real files (the cache's
JPEG path decodes at a reduced DCT scale, so JPEGs agree closely rather than bit for bit; other
formats must agree exactly), hand-computed target shapes, and files changed or damaged on purpose.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import petloc.data.cache as cache_module
from petloc.data.cache import build_decode_cache
from petloc.data.records import DataReport, Record

# (image, original width x height, longest side 160 -> hand-computed width x height)
SAMPLE_IMAGES = {
    "Abyssinian_1": ((600, 400), (160, 107)),  # JPEG, landscape: 400 * 160 / 600 = 106.7
    "Bengal_105": ((500, 466), (160, 149)),  # JPEG: 466 * 160 / 500 = 149.1
    "Birman_10": ((299, 299), (160, 160)),  # JPEG, square
    "Abyssinian_5": ((200, 150), (160, 120)),  # RGBA PNG named .jpg
    "Abyssinian_34": ((250, 202), (160, 129)),  # GIF named .jpg: 202 * 160 / 250 = 129.3
}
JPEGS = {"Abyssinian_1", "Bengal_105", "Birman_10"}


def records_for(folder: Path, stems: list[str]) -> list[Record]:
    """Records for real files; the box and classes do not matter to the cache."""
    records = []
    for stem in stems:
        path = folder / f"{stem}.jpg"
        with Image.open(path) as im:
            width, height = im.size
        records.append(Record(stem, path, width, height, (0.1, 0.1, 0.9, 0.9)))
    return records


def reference(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Full decode with PIL, then one OpenCV resize to ``size`` (width, height)."""
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB"))
    interp = cv2.INTER_AREA if size[0] < full.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(full, size, interpolation=interp)


@pytest.fixture
def images(oxford_sample: Path, tmp_path: Path) -> Path:
    """Copies of a few real images, so a test may change them."""
    folder = tmp_path / "images"
    folder.mkdir()
    for stem in SAMPLE_IMAGES:
        shutil.copy2(oxford_sample / "images" / f"{stem}.jpg", folder / f"{stem}.jpg")
    return folder


@pytest.mark.realdata
def test_cached_images_match_a_direct_decode_and_resize(images: Path, tmp_path: Path) -> None:
    records = records_for(images, list(SAMPLE_IMAGES))
    cache, usable = build_decode_cache(records, 160, tmp_path / "cache", progress=False)
    assert usable == records
    assert cache.pixels.shape == (len(records), 160, 160, 3)
    for stem, ((width, height), (w, h)) in SAMPLE_IMAGES.items():
        with Image.open(images / f"{stem}.jpg") as im:
            assert im.size == (width, height)
        got = cache.get(stem)
        assert got.shape == (h, w, 3) and got.dtype == np.uint8, stem
        assert max(got.shape[:2]) == 160
        want = reference(images / f"{stem}.jpg", (w, h))
        diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
        if stem in JPEGS:  # reduced-scale DCT decode: close, not identical
            assert diff.mean() < 3 and np.percentile(diff, 99) <= 20, stem
        else:
            assert diff.max() == 0, stem
        i = cache.index[stem]
        assert not cache.pixels[i, h:].any() and not cache.pixels[i, :, w:].any()  # padding stays zero


@pytest.mark.realdata
def test_small_images_are_enlarged_to_max_side(images: Path, tmp_path: Path) -> None:
    records = records_for(images, ["Abyssinian_5"])  # 200x150
    cache, _ = build_decode_cache(records, 320, tmp_path / "cache", progress=False)
    got = cache.get("Abyssinian_5")
    assert got.shape == (240, 320, 3)
    assert np.array_equal(got, reference(images / "Abyssinian_5.jpg", (320, 240)))


@pytest.mark.realdata
def test_a_second_call_reuses_the_cache(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = records_for(images, ["Abyssinian_1", "Birman_10"])
    first, _ = build_decode_cache(records, 64, tmp_path / "cache", progress=False)

    def no_decoding(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("decoded again although the files did not change")

    monkeypatch.setattr(cache_module, "decode_image", no_decoding)
    second, _ = build_decode_cache(list(reversed(records)), 64, tmp_path / "cache", progress=False)
    assert np.array_equal(second.get("Birman_10"), first.get("Birman_10"))
    assert len(list((tmp_path / "cache").iterdir())) == 1


@pytest.mark.realdata
def test_a_changed_file_or_side_builds_a_new_cache(images: Path, tmp_path: Path) -> None:
    records = records_for(images, ["Abyssinian_1", "Birman_10"])
    cache_dir = tmp_path / "cache"
    before, _ = build_decode_cache(records, 64, cache_dir, progress=False)
    before_pixels = np.array(before.get("Birman_10"))

    flipped = Image.open(images / "Birman_10.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    flipped.save(images / "Birman_10.jpg", format="PNG")  # lossless, so the oracle below is exact
    os.utime(images / "Birman_10.jpg", ns=(1, 1))  # a different mtime whatever the clock's resolution
    after, _ = build_decode_cache(records, 64, cache_dir, progress=False)
    assert len(list(cache_dir.iterdir())) == 2
    assert np.array_equal(after.get("Birman_10"), reference(images / "Birman_10.jpg", (64, 64)))
    assert not np.array_equal(after.get("Birman_10"), before_pixels)

    build_decode_cache(records, 48, cache_dir, progress=False)
    assert len(list(cache_dir.iterdir())) == 3


@pytest.mark.realdata
def test_leftovers_of_a_killed_build_are_not_used(images: Path, tmp_path: Path) -> None:
    records = records_for(images, ["Abyssinian_1", "Abyssinian_5"])
    clean, _ = build_decode_cache(records, 64, tmp_path / "clean", progress=False)
    (name,) = [p.name for p in (tmp_path / "clean").iterdir()]

    # A killed build leaves its temporary folder: one from another process, one with our own pid.
    cache_dir = tmp_path / "cache"
    for suffix in (".tmp999999", f".tmp{os.getpid()}"):
        leftover = cache_dir / f"{name}{suffix}"
        leftover.mkdir(parents=True)
        np.save(leftover / "pixels.npy", np.full((1, 64, 64, 3), 255, np.uint8))
        np.save(leftover / "sizes.npy", np.array([[64, 64]], np.int32))
        (leftover / "meta.json").write_text('{"ids": ["Abyssinian_1"], "failed": {}, "max_side": 64}')

    report = DataReport(root=images)
    cache, usable = build_decode_cache(records, 64, cache_dir, report, progress=False)
    assert usable == records and report.n_usable == 2
    for stem in ("Abyssinian_1", "Abyssinian_5"):
        assert np.array_equal(cache.get(stem), clean.get(stem)), stem


@pytest.mark.realdata
def test_undecodable_files_are_reported_and_dropped(images: Path, tmp_path: Path) -> None:
    records = records_for(images, ["Abyssinian_1", "Bengal_105", "Abyssinian_5"])
    for stem in ("Bengal_105", "Abyssinian_5"):  # a JPEG and a PNG, cut in half
        path = images / f"{stem}.jpg"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    report = DataReport(root=images)
    cache, usable = build_decode_cache(records, 64, tmp_path / "cache", report, progress=False)
    assert [r.image_id for r in usable] == ["Abyssinian_1"]
    assert report.n_usable == 1
    assert [e.split(": ")[0] for e in report.problems["unreadable_image"]] == [
        "Bengal_105.jpg",
        "Abyssinian_5.jpg",
    ]
    assert all("truncated" in e for e in report.problems["unreadable_image"])
    assert list(cache.index) == ["Abyssinian_1"]
