"""Reader for the Oxford-IIIT Pet layout, with a report of every quirk it meets.

The real dataset is messy (GIFs and PNGs named ``.jpg``, listed images without XML, XMLs with two
objects, ...). Everything questionable is decided here, once, before training starts: a record that
reaches the DataModule is known to be usable, and every file that was fixed up or left out is counted
in a :class:`DataReport` with its name, so nothing is lost silently and no epoch crashes half-way.

Layout::

    ROOT/images/*.jpg
    ROOT/annotations/list.txt        "Image CLASS-ID SPECIES BREED-ID" after '#' header lines
    ROOT/annotations/trainval.txt    the boxed images
    ROOT/annotations/test.txt        images without boxes
    ROOT/annotations/xmls/*.xml      PASCAL VOC, 1-based inclusive pixel coordinates
"""

from __future__ import annotations

import math
import os
import stat
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")

# Problem kinds, in report order. `kept` (printed "fixed up") problems were worked around, so the
# file is still used wherever it would be; the others ("left out") took the image out of the boxed
# set. The text says what petloc did, so the report is actionable. Images only in test.txt are not a
# problem (the original split has no boxes for them): the report counts them on a line of their own.
PROBLEMS: dict[str, tuple[bool, str]] = {
    "format_mismatch": (True, "file content is not the format its name says (decoded by content)"),
    "color_mode": (True, "not 8-bit RGB (RGBA, grayscale, palette or CMYK): converted to RGB"),
    "multiple_objects": (True, "XML has several objects: the largest valid box was kept"),
    "box_clipped": (True, "box reaches outside the image: clipped to the image"),
    "size_mismatch": (True, "XML <size> differs from the image: box rescaled to the image's size"),
    "not_in_list": (False, "image is in no annotation list (no class): not used"),
    "missing_xml": (False, "listed in trainval.txt but has no XML: no box, not used"),
    "missing_image": (False, "listed or annotated but the image file is missing"),
    "unreadable_image": (False, "image cannot be opened or decoded (truncated or corrupt)"),
    "bad_xml": (False, "XML cannot be parsed safely or lacks a box"),
    "invalid_box": (False, "box is inverted, zero-area or entirely outside the image"),
    "malformed_list_line": (False, "line in a list file is not 'Image CLASS-ID SPECIES BREED-ID'"),
    "bad_name": (False, "file name is not valid UTF-8, a broken link or loop, or repeats another's stem"),
}


class DatasetError(RuntimeError):
    """Raised when a dataset folder leaves nothing to train on; the message says how to fix it."""


@dataclass(frozen=True)
class Record:
    """One boxed image, ready for training.

    ``box`` is normalized xyxy in [0, 1]: a VOC pixel index ``i`` (1-based, inclusive) covers the
    continuous interval ``[i - 1, i]``, so ``x0 = (xmin - 1) / W`` and ``x1 = xmax / W``. This makes
    the mapping back to pixels exact and independent of any resize.
    """

    image_id: str
    path: Path
    width: int
    height: int
    box: tuple[float, float, float, float]
    breed: int  # 0-based CLASS-ID - 1
    species: int  # 0 cat, 1 dog


@dataclass
class DataReport:
    """Counts and file names per problem kind; printed by ``petloc-data check`` and at training start."""

    root: Path
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    n_images: int = 0
    n_usable: int = 0
    n_test: int = 0  # images only in test.txt, without XML: unboxed by design, so not a problem

    def add(self, kind: str, name: str, detail: str = "") -> None:
        if kind not in PROBLEMS:
            raise KeyError(f"unknown problem kind {kind!r}")
        self.problems[kind].append(f"{name}: {detail}" if detail else name)

    def count(self, kind: str) -> int:
        return len(self.problems.get(kind, []))

    def format(self, max_names: int = 10) -> str:
        lines = [f"dataset {self.root}: {self.n_images} images, {self.n_usable} usable boxed images"]
        if self.n_test:
            lines.append(
                f"  {self.n_test} images in test.txt have no box (as in the original split): not used"
            )
        for kind, (kept, text) in PROBLEMS.items():
            names = self.problems.get(kind)
            if not names:
                continue
            action = "fixed up" if kept else "left out"
            lines.append(f"  {kind} ({action}, {len(names)}): {text}")
            lines.extend(f"    - {n}" for n in names[:max_names])
            if len(names) > max_names:
                lines.append(f"    ... and {len(names) - max_names} more")
        if not any(self.problems.values()):
            lines.append("  no problems found")
        return "\n".join(lines)


@dataclass(frozen=True)
class ListEntry:
    breed: int
    species: int


@dataclass
class OxfordPets:
    """The parsed dataset: usable boxed records, class names and the report."""

    root: Path
    records: list[Record]
    breed_names: list[str]
    report: DataReport

    @property
    def num_breeds(self) -> int:
        return len(self.breed_names)


def _safe_names(folder: Path, suffixes: Iterable[str], report: DataReport) -> dict[str, Path]:
    """Map stem -> path for regular files in ``folder``; bad names and broken links are reported.

    The folder is listed as bytes so that a name that is not UTF-8 is reported instead of crashing
    every later ``str`` operation on it; entries are sorted so that which of two files with the same
    stem is kept does not depend on the file system's order.
    """
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    with os.scandir(os.fsencode(folder)) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        try:
            name = os.fsdecode(entry.name)
            name.encode("utf-8")
        except UnicodeError:
            report.add("bad_name", repr(entry.name), "rename the file to a UTF-8 name")
            continue
        if not name.lower().endswith(tuple(suffixes)):
            continue
        try:
            mode = os.stat(entry.path).st_mode  # follows links: raises on a loop or a dangling link
        except OSError as exc:
            report.add("bad_name", name, f"{exc.strerror or exc}")
            continue
        if not stat.S_ISREG(mode):
            continue
        stem = Path(name).stem
        if stem in found:
            report.add("bad_name", name, f"same stem as {found[stem].name}, which is used")
            continue
        found[stem] = folder / name
    return found


def read_list(path: Path, report: DataReport) -> dict[str, ListEntry]:
    """Parse list.txt-style lines, skipping '#' headers; malformed lines are reported, not fatal."""
    entries: dict[str, ListEntry] = {}
    if not path.is_file():
        return entries
    text = path.read_bytes().decode("utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            name, class_id, species, _breed_id = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
            if len(parts) != 4 or class_id < 1 or species not in (1, 2):
                raise ValueError
        except (ValueError, IndexError):
            report.add("malformed_list_line", f"{path.name}:{lineno}", repr(line[:80]))
            continue
        entries[name] = ListEntry(breed=class_id - 1, species=species - 1)
    return entries


@dataclass(frozen=True)
class VocBox:
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]]  # 1-based inclusive pixel coordinates


def parse_voc(path: Path) -> VocBox:
    """Parse a VOC XML with defusedxml (entity bombs and external entities are refused)."""
    root = SafeET.parse(path).getroot()
    size = root.find("size")
    if size is None:
        raise ValueError("no <size>")
    width, height = int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0")))
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        boxes.append(tuple(float(bb.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")))
    if not boxes:
        raise ValueError("no <object><bndbox>")
    return VocBox(width, height, boxes)  # type: ignore[arg-type]


# What probing an image can raise: OSError covers UnidentifiedImageError and truncated headers; a
# decompression bomb (far more pixels than any photo) is refused by PIL with its own exception.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def probe_image(path: Path) -> tuple[str, str, int, int]:
    """Return (format, mode, width, height) from the header: cheap, no full decode."""
    with Image.open(path) as im:
        return im.format or "?", im.mode, im.width, im.height


def _normalize_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[tuple[float, float, float, float], bool] | None:
    """VOC pixels -> (normalized xyxy clipped to the image, whether clipping changed it).

    None when nothing valid remains: a missing or infinite coordinate, an inverted box (a VOC box
    whose max is one less than its min covers zero pixels, so it is inverted too), or a box that
    lies entirely outside the image.
    """
    xmin, ymin, xmax, ymax = box
    if not all(math.isfinite(v) for v in box) or xmax < xmin or ymax < ymin:
        return None
    x0, y0, x1, y1 = (xmin - 1) / width, (ymin - 1) / height, xmax / width, ymax / height
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        return None
    return (cx0, cy0, cx1, cy1), (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)


# MPO is how PIL names a JPEG with extra embedded pictures (many phone and camera photos): still a JPEG.
def _area(box: tuple[float, float, float, float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


_FORMAT_SUFFIX = {
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
}


def read_oxford_pets(root: str | Path) -> OxfordPets:
    """Read and validate a dataset folder in the Oxford-IIIT Pet layout.

    Every image's header is probed, boxed or not, so that a misnamed or odd-mode file is reported
    wherever it sits. Raises :class:`DatasetError` only when no usable boxed image remains;
    everything else is reported in ``OxfordPets.report``.
    """
    root = Path(root).expanduser()
    report = DataReport(root=root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} does not exist: pass data.root=PATH to an Oxford-layout folder"
        )
    ann = root / "annotations"
    images = _safe_names(root / "images", IMAGE_SUFFIXES, report)
    xmls = _safe_names(ann / "xmls", (".xml",), report)
    listed = read_list(ann / "list.txt", report)
    trainval = read_list(ann / "trainval.txt", report)
    test = read_list(ann / "test.txt", report)
    report.n_images = len(images)

    classes = {**listed, **test, **trainval}
    for stem in sorted(images.keys() - classes.keys()):
        report.add("not_in_list", images[stem].name)
    report.n_test = len((test.keys() - trainval.keys() - xmls.keys()) & images.keys())
    for stem in sorted((trainval.keys() - xmls.keys()) & images.keys()):
        report.add("missing_xml", images[stem].name, f"no annotations/xmls/{stem}.xml")
    for stem in sorted((trainval.keys() | xmls.keys()) - images.keys()):
        report.add("missing_image", f"{stem}", f"no images/{stem}.jpg")

    sizes: dict[str, tuple[int, int]] = {}
    for stem, path in sorted(images.items()):
        probed = _probe(path, report)
        if probed is not None:
            sizes[stem] = probed

    breed_names: dict[int, str] = {}
    for stem, entry in classes.items():
        breed_names.setdefault(entry.breed, stem.rsplit("_", 1)[0])

    records: list[Record] = []
    for stem in sorted(xmls.keys() & sizes.keys() & classes.keys()):
        record = _read_one(stem, images[stem], sizes[stem], xmls[stem], classes[stem], report)
        if record is not None:
            records.append(record)
    report.n_usable = len(records)
    if not records:
        raise DatasetError(
            f"no usable boxed image in {root}: {_empty_reason(root, images, xmls, classes)}\n"
            f"{report.format()}\n"
            "Expected images/*.jpg with annotations/xmls/*.xml and annotations/list.txt or trainval.txt "
            "(the Oxford-IIIT Pet layout); `petloc-data check ROOT` prints this report."
        )
    names = [breed_names.get(i, f"class_{i + 1}") for i in range(max(breed_names) + 1)]
    return OxfordPets(root=root, records=records, breed_names=names, report=report)


def _empty_reason(
    root: Path, images: dict[str, Path], xmls: dict[str, Path], classes: dict[str, ListEntry]
) -> str:
    """Name the first missing piece, so an empty or mis-pointed folder gets a one-line diagnosis."""
    if not images:
        return f"no image files in {root / 'images'}"
    if not xmls:
        return f"no XML files in {root / 'annotations' / 'xmls'}"
    if not classes:
        return f"no class list ({root / 'annotations' / 'list.txt'} or trainval.txt)"
    return "every boxed image was left out (see the report below)"


def _probe(path: Path, report: DataReport) -> tuple[int, int] | None:
    """(width, height) from the header, reporting a misnamed format or a non-RGB mode; None if unreadable."""
    try:
        fmt, mode, width, height = probe_image(path)
    except _IMAGE_ERRORS as exc:
        report.add("unreadable_image", path.name, str(exc)[:120])
        return None
    if path.suffix.lower() not in _FORMAT_SUFFIX.get(fmt, ()):
        report.add("format_mismatch", path.name, f"is {fmt}")
    if mode != "RGB":
        report.add("color_mode", path.name, mode)
    return width, height


def _read_one(
    stem: str, image: Path, size: tuple[int, int], xml: Path, entry: ListEntry, report: DataReport
) -> Record | None:
    """The record of one probed image and its XML, or None (reported) when no valid box remains."""
    try:
        voc = parse_voc(xml)
    except (ET.ParseError, DefusedXmlException, ValueError, OSError) as exc:
        report.add("bad_xml", xml.name, str(exc)[:120])
        return None
    width, height = size
    boxes = voc.boxes
    if voc.width > 0 and voc.height > 0 and (voc.width, voc.height) != (width, height):
        report.add("size_mismatch", xml.name, f"XML {voc.width}x{voc.height}, image {width}x{height}")
        sx, sy = width / voc.width, height / voc.height
        boxes = [((b[0] - 1) * sx + 1, (b[1] - 1) * sy + 1, b[2] * sx, b[3] * sy) for b in boxes]
    # Validity is decided before size: a box inverted on both axes has a positive "area" and would
    # otherwise win over the real one.
    valid = [(n, b) for b in boxes if (n := _normalize_box(b, width, height)) is not None]
    if len(voc.boxes) > 1:
        report.add("multiple_objects", xml.name, f"{len(voc.boxes)} objects, kept the largest valid one")
    if not valid:
        report.add("invalid_box", xml.name, f"box {boxes[0]} in a {width}x{height} image")
        return None
    (nbox, clipped), box = max(valid, key=lambda v: _area(v[0][0]))
    if clipped:
        report.add("box_clipped", xml.name, f"box {box} in a {width}x{height} image")
    return Record(stem, image, width, height, nbox, entry.breed, entry.species)
