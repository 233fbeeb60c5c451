"""petloc.data.images: header probing, decoding, the resizes, the reader that gives eval, predict and
export the validation's exact input (ImageReader), and the image files of a folder (list_images).

Oracles: images written with PIL from known arrays (PNG where pixels must survive exactly), sizes
computed by hand, OpenCV called directly, and the DataModule's validation loader on real files.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from petloc.data.datamodule import LocalizationDataModule
from petloc.data.images import (
    IMAGE_ERRORS,
    ImageReader,
    decode_image,
    fit_longest_side,
    list_images,
    probe_image,
    resize_to_input,
    suffix_matches,
)

ORIENTATION = 0x0112  # the EXIF tag


def halves(width: int = 80, height: int = 60) -> np.ndarray:
    """uint8 HxWx3: the left half red, the right half blue (which way up it is shows at a glance)."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, : width // 2] = (255, 0, 0)
    rgb[:, width // 2 :] = (0, 0, 255)
    return rgb


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, rgb: np.ndarray, mode: str = "RGB", fmt: str | None = None, **params: object) -> Path:
    Image.fromarray(rgb).convert(mode).save(path, format=fmt, **params)
    return path


def with_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = value
    return exif


def test_probe_reads_format_mode_size_and_orientation_from_the_header(tmp_path: Path) -> None:
    jpeg = save(tmp_path / "a.jpg", halves(), exif=with_orientation(6))
    assert probe_image(jpeg) == ("JPEG", "RGB", 80, 60, 6)
    assert probe_image(save(tmp_path / "b.jpg", halves(), "L")) == ("JPEG", "L", 80, 60, None)
    assert probe_image(save(tmp_path / "c.png", halves(), "RGBA")) == ("PNG", "RGBA", 80, 60, None)
    assert probe_image(save(tmp_path / "d.gif", halves())) == ("GIF", "P", 80, 60, None)
    # only the header is read: a JPEG cut in half probes like the whole file
    data = save(tmp_path / "e.jpg", noise(200, 150)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert probe_image(tmp_path / "cut.jpg") == ("JPEG", "RGB", 200, 150, None)


def test_a_file_that_is_no_image_raises_one_of_the_image_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    data = save(tmp_path / "whole.jpg", noise(200, 150)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(IMAGE_ERRORS):
        probe_image(tmp_path / "notes.jpg")
    for name in ("notes.jpg", "cut.jpg"):
        with pytest.raises(IMAGE_ERRORS):
            decode_image(tmp_path / name)
        with pytest.raises(IMAGE_ERRORS):
            ImageReader(64, 80)(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "fmt", "matches"),
    [
        ("a.jpg", "JPEG", True),
        ("a.JPEG", "JPEG", True),
        ("a.jpg", "MPO", True),  # a JPEG with extra embedded pictures (phone photos)
        ("a.png", "PNG", True),
        ("a.gif", "GIF", True),
        ("a.bmp", "BMP", True),
        ("a.webp", "WEBP", True),
        ("a.TIF", "TIFF", True),
        ("a.tiff", "TIFF", True),
        ("a.jpg", "PNG", False),
        ("a.png", "JPEG", False),
        ("a.jpg", "PCX", False),  # a format PIL reads that petloc names no suffix for
        ("a", "JPEG", False),
    ],
)
def test_suffix_matches_says_whether_the_name_tells_the_format(name: str, fmt: str, matches: bool) -> None:
    assert suffix_matches(Path(name), fmt) is matches


def test_decode_gives_rgb_uint8_for_every_mode(tmp_path: Path) -> None:
    """Lossless files, so the values are the ones written: alpha is dropped (not composited), grey
    is repeated in the three channels, a palette is looked up."""
    rgba = np.dstack([noise(30, 20), np.full((20, 30), 10, dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(decode_image(tmp_path / "rgba.png"), rgba[..., :3])
    grey = noise(30, 20)[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    assert np.array_equal(decode_image(tmp_path / "grey.png"), np.dstack([grey] * 3))
    assert np.array_equal(decode_image(save(tmp_path / "palette.png", halves(), "P")), halves())
    cmyk = decode_image(save(tmp_path / "cmyk.jpg", halves(), "CMYK"))
    assert cmyk.shape == (60, 80, 3) and cmyk.dtype == np.uint8


def test_decode_keeps_the_pixels_as_stored_whatever_the_exif_orientation(tmp_path: Path) -> None:
    """Orientation 6 asks a viewer to turn the picture a quarter; the boxes are in the stored frame,
    so the decoded pixels are not turned: 60 rows of 80, red on the left."""
    decoded = decode_image(save(tmp_path / "turned.jpg", halves(), exif=with_orientation(6), quality=95))
    assert decoded.shape == (60, 80, 3)
    np.testing.assert_allclose(decoded[:, :30], np.broadcast_to([255, 0, 0], (60, 30, 3)), atol=8)
    np.testing.assert_allclose(decoded[:, 50:], np.broadcast_to([0, 0, 255], (60, 30, 3)), atol=8)


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])  # PIL's own decoder, and libtiff's
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiff_is_used_as_stored_whatever_its_orientation(
    tmp_path: Path, orientation: int, compression: str | None
) -> None:
    """PIL turns a TIFF upright by its orientation tag on its own (a JPEG not): the size and pixels
    are still the stored 80x60, as the box was drawn on them."""
    stored = noise(80, 60)
    tiff = save(tmp_path / "a.tif", stored, exif=with_orientation(orientation), compression=compression)
    assert probe_image(tiff) == ("TIFF", "RGB", 80, 60, orientation)
    assert np.array_equal(decode_image(tiff), stored)
    assert decode_image(tiff, max_side=40).shape == (30, 40, 3)
    _, size = ImageReader(32, 40)(tiff)
    assert size == (80, 60)


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((400, 300), 160, (160, 120)),
        ((600, 400), 160, (160, 107)),  # 400 * 160 / 600 = 106.7
        ((100, 300), 30, (10, 30)),  # portrait: the height is the longest side
        ((1000, 1), 10, (10, 1)),  # never less than one pixel
        ((20, 10), 40, (40, 20)),  # enlarged
    ],
)
def test_fit_longest_side_gives_the_hand_computed_size(
    size: tuple[int, int], max_side: int, expected: tuple[int, int]
) -> None:
    width, height = size
    fitted = fit_longest_side(noise(width, height), max_side)
    assert fitted.shape == (expected[1], expected[0], 3) and fitted.dtype == np.uint8


def test_fit_longest_side_shrinks_by_area_averaging() -> None:
    """A third of the side averages each 3x3 block: a block of 9 and 18 in two corners, 0 elsewhere
    (mean 3, centre 0: a bilinear sample would give 0), plus the block's offset, gives 3 plus it."""
    block = np.array([[9, 0, 0], [0, 0, 0], [0, 0, 18]], dtype=np.uint8)
    offsets = np.array([[0, 100], [50, 200]], dtype=np.uint8)
    grey = np.tile(block, (2, 2)) + np.kron(offsets, np.ones((3, 3), dtype=np.uint8))
    shrunk = fit_longest_side(np.dstack([grey] * 3), 2)
    assert np.array_equal(shrunk[..., 0], offsets + 3)


def test_decode_with_max_side_fits_the_longest_side(tmp_path: Path) -> None:
    """A PNG: the full decode, shrunk as fit_longest_side shrinks (OpenCV's area average, called
    here directly). A JPEG is decoded at a reduced scale first: same size, nearly the same pixels."""
    rgb = noise(200, 100)
    png = decode_image(save(tmp_path / "a.png", rgb), max_side=50)
    assert np.array_equal(png, cv2.resize(rgb, (50, 25), interpolation=cv2.INTER_AREA))
    flat = np.full((480, 640, 3), (200, 120, 40), dtype=np.uint8)
    jpeg = decode_image(save(tmp_path / "a.jpg", flat, quality=95), max_side=100)
    assert jpeg.shape == (75, 100, 3)
    np.testing.assert_allclose(jpeg, np.broadcast_to([200, 120, 40], jpeg.shape), atol=3)


def test_resize_to_input_stretches_and_keeps_normalized_boxes() -> None:
    """A white rectangle over x 50..150, y 25..75 of a 200x100 image (the box 0.25, 0.25, 0.75,
    0.75) covers 16..48 of the 64 px square input, to within the pixel the interpolation blends."""
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[25:75, 50:150] = 255
    square = resize_to_input(image, 64)
    assert square.shape == (64, 64, 3) and square.dtype == np.uint8
    rows, cols = np.nonzero(square[..., 0] >= 128)
    for got, want in ((rows.min(), 16), (cols.min(), 16), (rows.max() + 1, 48), (cols.max() + 1, 48)):
        assert abs(int(got) - want) <= 1
    assert (square[17:47, 17:47] == 255).all()


def test_image_reader_decodes_fits_and_stretches(tmp_path: Path) -> None:
    """A 300x200 PNG for a 64 px model whose cache holds longest sides of 80: the area-average
    shrink to 80x53, then the bilinear stretch to 64x64 (OpenCV, called here directly); the size
    reported is the file's. Pixels already decoded give the same input."""
    rgb = noise(300, 200)
    reader = ImageReader(image_size=64, max_side=80)
    image, size = reader(save(tmp_path / "a.png", rgb))
    cached = cv2.resize(rgb, (80, 53), interpolation=cv2.INTER_AREA)
    expected = cv2.resize(cached, (64, 64), interpolation=cv2.INTER_LINEAR)
    assert size == (300, 200)
    assert np.array_equal(image, expected)
    from_pixels, pixel_size = reader.from_pixels(rgb)
    assert pixel_size == (300, 200) and np.array_equal(from_pixels, expected)


def _write_voc_folder(root: Path, sources: list[Path]) -> None:
    """A tiny Oxford-layout folder over ``sources`` with a made-up box per image."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "xmls").mkdir(parents=True)
    lines = []
    for src in sources:
        (root / "images" / src.name).write_bytes(src.read_bytes())
        with Image.open(src) as im:
            w, h = im.size
        (root / "annotations" / "xmls" / f"{src.stem}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"<object><name>cat</name><bndbox><xmin>{w // 4}</xmin><ymin>{h // 5}</ymin>"
            f"<xmax>{w // 2}</xmax><ymax>{h // 2}</ymax></bndbox></object></annotation>"
        )
        lines.append(f"{src.stem} 1 1 1")
    (root / "annotations" / "list.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.realdata
def test_image_reader_gives_the_validation_pixels(oxford_sample: Path, tmp_path: Path) -> None:
    """Files of every kind (a GIF and an RGBA PNG named .jpg, big and 299x299 JPEGs) reach the model
    exactly as the DataModule's validation loader delivers them."""
    names = ["Abyssinian_34", "Abyssinian_5", "Abyssinian_1", "Bengal_105", "Abyssinian_10"]
    root = tmp_path / "subset"
    _write_voc_folder(root, [oxford_sample / "images" / f"{n}.jpg" for n in names])
    data_cfg = OmegaConf.create(
        {
            "_target_": "petloc.data.datamodule.LocalizationDataModule",
            "root": str(root),
            "image_size": 96,
            "val_fraction": 1.0,
            "num_workers": 0,
            "cache_dir": str(tmp_path / "cache"),
            "cache_scale": 1.25,
        }
    )
    datamodule = LocalizationDataModule(**{k: v for k, v in data_cfg.items() if k != "_target_"})
    datamodule.setup("validate")
    dataset = datamodule.val_dataloader().dataset
    assert len(dataset) == len(names)
    reader = instantiate(data_cfg).image_reader()  # as predict and export get it: from the config alone
    for sample, record in zip(dataset, datamodule.val_records, strict=True):
        image, (width, height) = reader(record.path)
        assert (width, height) == (record.width, record.height)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, sample["image"].numpy(), err_msg=record.image_id)


def test_list_images_takes_a_file_or_the_image_files_of_a_folder(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.gif", "notes.txt", "d.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()  # a folder named like an image is not one
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.gif", "d.jpeg"]
    assert list_images(tmp_path / "a.png") == [tmp_path / "a.png"]
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        list_images(tmp_path / "missing")
