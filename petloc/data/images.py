"""Image files: which names count as images, header probing, decoding, listing the images to
predict, and the reader that turns a file into exactly the model input validation gives it
(:class:`ImageReader`).

Every place that opens an image (the readers' probe, the decode cache, predict and eval) catches
the same :data:`IMAGE_ERRORS`, so a file that is not a decodable image is a named skip everywhere.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")

# What opening or decoding an image can raise: OSError covers UnidentifiedImageError and truncated
# data; a decompression bomb (far more pixels than any photo) is refused by PIL with its own
# exception, which is not an OSError.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

# The suffixes each decoded format may carry. MPO is how PIL names a JPEG with extra embedded
# pictures (many phone and camera photos): still a JPEG.
_FORMAT_SUFFIX = {
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "WEBP": (".webp",),
    "TIFF": (".tif", ".tiff"),
}
_EXIF_ORIENTATION = 0x0112
# PIL turns a TIFF upright by its EXIF orientation tag when it loads it (its header size is the
# turned one already); a JPEG it leaves as stored. petloc uses every image as stored, so a TIFF is
# turned back: per tag, the transpose that undoes PIL's turn.
_UNDO_TIFF_TURN = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def probe_image(path: Path) -> tuple[str, str, int, int, int | None]:
    """(format, mode, width, height as stored, EXIF orientation or None) from the header: no full decode."""
    with Image.open(path) as im:
        orientation = im.getexif().get(_EXIF_ORIENTATION) if im.format in ("JPEG", "MPO", "TIFF") else None
        width, height = im.size
        if im.format == "TIFF" and orientation in (5, 6, 7, 8):  # PIL's size is the turned one
            width, height = height, width
        return im.format or "?", im.mode, width, height, orientation


def suffix_matches(path: Path, fmt: str) -> bool:
    """Whether the file's suffix names the format its content has."""
    return path.suffix.lower() in _FORMAT_SUFFIX.get(fmt, ())


def decode_image(path: Path, max_side: int | None = None) -> np.ndarray:
    """Decode any image PIL reads (JPEG, PNG, GIF, CMYK, RGBA, grayscale) to RGB uint8 HxWx3.

    Pixels are used as stored (an EXIF orientation tag is not applied), matching the frame the
    box coordinates are read in. With ``max_side`` the image is shrunk (or enlarged) so its longest
    side equals it; JPEGs are decoded at a reduced DCT scale first, several times faster than a
    full decode for big photos.
    """
    with Image.open(path) as im:
        undo = _UNDO_TIFF_TURN.get(im.getexif().get(_EXIF_ORIENTATION)) if im.format == "TIFF" else None
        if max_side is not None and im.format == "JPEG":
            im.draft("RGB", (max_side, max_side))
        im.load()
        rgb = np.asarray((im if undo is None else im.transpose(undo)).convert("RGB"))
    return rgb if max_side is None else fit_longest_side(rgb, max_side)


def fit_longest_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (area averaging) or enlarge (bilinear) ``rgb`` so that its longest side is ``max_side``."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp)


def resize_to_input(image: np.ndarray, size: int) -> np.ndarray:
    """The stretch to the model's square input (validation, evaluation, prediction, and training's
    plain draws): normalized box coordinates are unchanged by it."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


class ImageReader:
    """An image file -> the model's input, pixel for pixel what validation feeds it.

    Validation reads the decode cache (:func:`decode_image` to a longest side of ``max_side``) and
    applies :func:`resize_to_input` (a stretch-resize to the square input of side ``image_size``); this
    does the same two steps on the file. Get one with the sizes of a run from its datamodule:
    :meth:`petloc.data.datamodule.LocalizationDataModule.image_reader`.
    """

    def __init__(self, image_size: int, max_side: int) -> None:
        self.max_side = max_side
        self.image_size = image_size

    def __call__(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """Return (uint8 HxWx3 input, (width, height) of the original file); raises one of
        :data:`IMAGE_ERRORS` for a file that is not a decodable image."""
        _, _, width, height, _ = probe_image(path)
        return self._input(decode_image(path, self.max_side)), (width, height)

    def from_pixels(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The same for an image already decoded (uint8 HxWx3 RGB): it is resized as the decode cache
        resizes a decoded file. (A JPEG file is decoded at a reduced scale first, so its pixels read
        here give a slightly different input than the file itself.)"""
        height, width = rgb.shape[:2]
        return self._input(fit_longest_side(rgb, self.max_side)), (width, height)

    def _input(self, image: np.ndarray) -> np.ndarray:
        return resize_to_input(image, self.image_size)


def list_images(path: str | Path) -> list[Path]:
    """One image file, or the image files (by suffix, sorted) directly inside a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"input {path} is neither an image file nor a folder")
