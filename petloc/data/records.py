"""The one record model every dataset reader yields, and the problem report they all share.

A reader (one module per format in :mod:`petloc.data.formats`) only *parses*: it turns its files
into :class:`Annotation` s (an image path, the objects' boxes in the format's own convention, labels,
the dataset's split). :func:`assemble` then does what is the same for every format, once: it probes
each image's header, rescales boxes whose annotation states another image size, normalizes, clips,
applies the several-objects policy, maps class names to indices and counts every problem in one
:class:`DataReport`. A :class:`Record` that comes out is known to be usable, so no epoch crashes
half-way, and every file that was fixed up or left out is named in the report.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from petloc.data.images import IMAGE_ERRORS, probe_image, suffix_matches

Box = tuple[float, float, float, float]
MultiObject = Literal["largest", "skip"]
# Objects one record carries: its box and up to three others (see Record.others).
MAX_OBJECTS = 4

# Problem kinds, in report order. `kept` ("fixed up") problems were worked around, so the file is
# still used; the others ("left out") took the image (or one entry) out of the boxed set. The text
# says what petloc did, so the report is actionable.
PROBLEMS: dict[str, tuple[bool, str]] = {
    "format_mismatch": (True, "file content is not the format its name says (decoded by content)"),
    "color_mode": (True, "not 8-bit RGB (RGBA, grayscale, palette or CMYK): converted to RGB"),
    "exif_orientation": (
        True,
        "EXIF orientation tag is set: pixels and box are used as stored, unrotated (check the box "
        "if your annotation tool showed the image rotated)",
    ),
    "float_coordinates": (
        True,
        "fractional VOC/CSV pixel coordinates: read as 0-based pixel edges (x0 = xmin), not as "
        "1-based inclusive pixel indices (x0 = xmin - 1)",
    ),
    "difficult_object": (True, "object marked <difficult>1</difficult>: used like any other"),
    "crowd_annotation": (True, "COCO iscrowd=1 region: a crowd, not one object, so ignored"),
    "multiple_objects": (
        True,
        "several objects: the largest valid box is the image's box, the others train as objects in "
        "view (data.multi_object=skip leaves such images out)",
    ),
    "box_clipped": (True, "box reaches outside the image: clipped to the image"),
    "size_mismatch": (True, "annotated image size differs from the image: box rescaled to the image's size"),
    "multiple_objects_left_out": (False, "several objects and data.multi_object=skip: not used"),
    "not_in_list": (False, "image is in no annotation list (no class): not used"),
    "missing_annotation": (False, "image has no annotation file: no box, not used"),
    "no_object": (False, "annotation has no object: no box, not used"),
    "missing_image": (False, "annotated but the image file is missing: fix the path or drop the entry"),
    "unreadable_image": (False, "image cannot be opened or decoded (truncated, corrupt or not an image)"),
    "bad_annotation": (False, "annotation file cannot be parsed (malformed, truncated or unsafe): fix it"),
    "invalid_box": (False, "box is non-finite, inverted, zero-area or entirely outside the image"),
    "malformed_entry": (False, "a line, row or JSON entry lacks the format's fields: skipped"),
    "bad_name": (False, "file name is not valid UTF-8, a broken link or loop, or repeats another's stem"),
    "not_carried": (False, "what the written format has no place for: not in the written copy"),
}


class DatasetError(RuntimeError):
    """Raised when a dataset folder leaves nothing to train on; the message says how to fix it."""


@dataclass(frozen=True)
class Record:
    """One boxed image, ready for training.

    ``box`` is normalized xyxy in [0, 1] of the image as stored: continuous coordinates, pixel
    ``i`` (0-based) covering ``[i, i + 1]``, so the mapping back to any pixel convention is exact
    and independent of resizing. ``labels`` maps a label set (``"class"``; for Oxford pets also
    ``"species"``) to an index into :attr:`RecordSet.label_sets`. ``split`` is the dataset's own
    split (``train``, ``val``, ``test``) when it brings one. In an image with several objects, ``box``
    is the largest and ``others`` are the next largest (at most :data:`MAX_OBJECTS` - 1, largest
    first): they are not the target, but training shows them to a dense head as objects in view, so
    it does not learn that a second raccoon is background. ``other_classes`` are their class names
    (None: the object has none), which a writer needs to copy every object.
    """

    image_id: str
    path: Path
    width: int
    height: int
    box: Box
    labels: Mapping[str, int] = field(default_factory=dict, hash=False)
    split: str | None = None
    others: tuple[Box, ...] = ()
    other_classes: tuple[str | None, ...] = ()

    def boxes(self) -> np.ndarray:
        """[1 + len(others), 4] float64: the box, then the image's other objects."""
        return np.asarray((self.box, *self.others), dtype=np.float64)


@dataclass(frozen=True)
class Labelled:
    """One image as a writer writes it: its file name in the written set, every object's normalized
    box, class (None: none) and score (predictions only; None: none), and its split."""

    name: str
    path: Path
    width: int
    height: int
    boxes: tuple[Box, ...]
    labels: tuple[str | None, ...]
    scores: tuple[float | None, ...] = ()
    split: str | None = None

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def score(self, i: int) -> float | None:
        return self.scores[i] if i < len(self.scores) else None


def class_name(label: str | None) -> str:
    """The class a writer writes for an object without one (a box-only dataset)."""
    return "object" if label is None else label


def class_list(images: Sequence[Labelled], classes: Sequence[str]) -> list[str]:
    """``classes``, then any other class the objects name (sorted), or ``["object"]`` when none do."""
    extra = sorted({class_name(lb) for im in images for lb in im.labels} - set(classes))
    return [*classes, *extra]


@dataclass
class DataReport:
    """Counts and file names per problem kind; printed by ``petloc-data check`` and at training start."""

    root: Path
    format: str = "?"
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    n_images: int = 0
    n_usable: int = 0
    notes: list[str] = field(default_factory=list)  # facts that are not problems (unboxed test split, ...)

    def add(self, kind: str, name: str, detail: str = "") -> None:
        if kind not in PROBLEMS:
            raise KeyError(f"unknown problem kind {kind!r}")
        self.problems[kind].append(f"{name}: {detail}" if detail else name)

    def count(self, kind: str) -> int:
        return len(self.problems.get(kind, []))

    def format_text(self, max_names: int = 10) -> str:
        lines = [
            f"dataset {self.root} (format: {self.format}): {self.n_images} images, "
            f"{self.n_usable} usable boxed images"
        ]
        lines.extend(f"  {note}" for note in self.notes)
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
class RawObject:
    """One object as a reader parsed it: ``box`` x0, y0, x1, y1 as continuous edges, in pixels of
    the annotation's image size (or normalized, see :attr:`Annotation.normalized`)."""

    box: Box
    label: str | None = None
    difficult: bool = False


@dataclass
class Annotation:
    """What a reader parsed for one image, before the image itself is looked at.

    ``size`` is the (width, height) the pixel boxes refer to when the annotation states one (VOC
    ``<size>``, COCO ``width``/``height``); a different real size rescales the boxes. ``labels``
    are image-level labels by label set (Oxford's list.txt classes), which take precedence over
    the kept object's ``label`` for the ``"class"`` set.
    """

    image: Path
    source: str
    objects: list[RawObject]
    size: tuple[int, int] | None = None
    normalized: bool = False
    split: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    image_id: str | None = None


@dataclass
class RecordSet:
    """A parsed dataset: usable records, the class names of each label set, and the report."""

    root: Path
    format: str
    records: list[Record]
    label_sets: dict[str, list[str]]
    report: DataReport

    @property
    def classes(self) -> list[str]:
        """The dataset's class list (the ``"class"`` label set); empty for a box-only dataset."""
        return self.label_sets.get("class", [])

    @property
    def has_split(self) -> bool:
        """Whether the dataset brings its own train/val split (every record has one, both occur)."""
        splits = {r.split for r in self.records}
        return None not in splits and "train" in splits and bool(splits & {"val", "test"})


_SPLIT_PREFIX = {"train": "train", "test": "test"}  # any word starting so: trainval, training, testing
_VAL_WORDS = {"val", "valid", "validation"}
_WORDS = re.compile(r"[a-z]+")


def split_from_name(name: str) -> str | None:
    """``train``, ``val`` or ``test`` from a word in a file or folder name (``instances_val2017``,
    ``valid``, ``train``, ``testing``); None when none is there. Whole words: ``latest`` is no test
    split. The one rule for every format whose split comes from names (COCO files, YOLO folders)."""
    for word in _WORDS.findall(name.lower()):
        for prefix, split in _SPLIT_PREFIX.items():
            if word.startswith(prefix):
                return split
        if word in _VAL_WORDS:
            return "val"
    return None


def listed(names: Sequence[str], limit: int) -> str:
    """The first ``limit`` names, comma-separated, and how many more there are: for a report's notes."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def normalize_box(box: Box, width: float, height: float) -> tuple[Box, bool] | None:
    """Pixel edges -> (normalized xyxy clipped to the image, whether clipping changed it).

    None when nothing valid remains: a non-finite coordinate, an inverted or zero-width box, or a
    box that lies entirely outside the image.
    """
    x0, y0, x1, y1 = box[0] / width, box[1] / height, box[2] / width, box[3] / height
    return clip_normalized((x0, y0, x1, y1))


# How far outside the image a normalized coordinate may reach before the clip is reported: text
# formats round (a YOLO centre and size written to 6-9 decimals put an edge at 1.0000000001).
CLIP_TOLERANCE = 1e-6


def clip_normalized(box: Box) -> tuple[Box, bool] | None:
    """A normalized box clipped to [0, 1], and whether it reached out by more than rounding; None
    when not finite, inverted or outside (see above)."""
    if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        return None
    clipped = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], 1.0), min(box[3], 1.0))
    if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
        return None
    return clipped, max(abs(a - b) for a, b in zip(clipped, box, strict=True)) > CLIP_TOLERANCE


def voc_pixels_to_edges(values: Iterable[float]) -> tuple[Box, bool]:
    """VOC-style pixel coordinates -> (edges, whether they were fractional).

    The one rule for VOC XMLs and pixel CSVs: integer coordinates are 1-based inclusive pixel
    indices, as PASCAL VOC defines them (pixel ``i`` covers ``[i - 1, i]``, so ``x0 = xmin - 1`` and
    ``x1 = xmax``); a box with any fractional coordinate comes from a tool that writes continuous
    0-based coordinates, and is read as edges unchanged. The caller reports the fractional ones.
    """
    xmin, ymin, xmax, ymax = values
    if all(float(v).is_integer() for v in (xmin, ymin, xmax, ymax)):
        return (xmin - 1, ymin - 1, xmax, ymax), False
    return (xmin, ymin, xmax, ymax), True


def to_voc_pixels(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Normalized xyxy -> 1-based VOC pixels of the original image, rounded to 0.1 pixel.

    The inverse of :func:`voc_pixels_to_edges` plus the normalization: pixel ``i`` covers
    ``[i - 1, i]``, so ``xmin = x0 * W + 1`` and ``xmax = x1 * W``; an XML box read and mapped back
    gives its own values. petloc-predict writes its boxes with it.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        round(x0 * width + 1, 1),
        round(y0 * height + 1, 1),
        round(x1 * width, 1),
        round(y1 * height, 1),
    )


def voc_pixels(box: Sequence[float], width: int, height: int) -> tuple[float | int, ...]:
    """Normalized xyxy -> what a VOC XML or pixel CSV writes: 1-based inclusive integers where the
    box sits on pixel edges (up to float noise), else 0-based edges; :func:`voc_pixels_to_edges`
    reads either back exactly."""
    edges = []
    for value in (v * s for v, s in zip(box, (width, height) * 2, strict=True)):
        rounded = round(value)
        edges.append(rounded if abs(value - rounded) < 1e-6 else round(value, 4))
    if all(isinstance(v, int) for v in edges):
        return edges[0] + 1, edges[1] + 1, edges[2], edges[3]
    return tuple(edges)


def probe_into(path: Path, report: DataReport) -> tuple[int, int] | None:
    """(width, height) from the header, reporting a misnamed format, a non-RGB mode or an EXIF
    rotation; None (reported) when the file cannot be opened."""
    try:
        fmt, mode, width, height, orientation = probe_image(path)
    except IMAGE_ERRORS as exc:
        report.add("unreadable_image", path.name, str(exc)[:120])
        return None
    if not suffix_matches(path, fmt):
        report.add("format_mismatch", path.name, f"is {fmt}")
    if mode != "RGB":
        report.add("color_mode", path.name, mode)
    if orientation not in (None, 0, 1):  # 0 is no valid value: written by tools meaning 'unset'
        report.add("exif_orientation", path.name, f"orientation {orientation}")
    return width, height


def assemble(
    annotations: Iterable[Annotation],
    root: Path,
    format: str,
    report: DataReport,
    multi_object: MultiObject = "largest",
    label_sets: Mapping[str, list[str]] | None = None,
    hint: str | None = None,
    max_objects: int | None = MAX_OBJECTS,
) -> RecordSet:
    """Validate parsed annotations against their images and build the records (see the module doc).

    ``label_sets`` fixes the class lists (and their order) where the format defines them (COCO
    categories, YOLO names, Oxford's CLASS-IDs); a class name not in them is reported. Other label
    sets are the sorted names that occur. A record keeps at most ``max_objects`` objects (None: all).
    Raises :class:`DatasetError` when nothing is usable,
    with ``hint`` (the reader's one-line diagnosis, e.g. the first missing piece of its layout).
    """
    if multi_object not in ("largest", "skip"):
        raise ValueError(f"data.multi_object={multi_object!r}: allowed values are ['largest', 'skip']")
    report.format = format
    fixed = {k: list(v) for k, v in (label_sets or {}).items()}
    chosen: list[tuple[Annotation, int, int, tuple[Box, bool], RawObject]] = []
    seen: set[Path] = set()
    for ann in annotations:
        if not ann.image.is_file():
            report.add("missing_image", ann.source, f"no image {ann.image}")
            continue
        if ann.image in seen:
            report.add("malformed_entry", ann.source, f"{ann.image.name} is annotated twice: first kept")
            continue
        seen.add(ann.image)
        size = probe_into(ann.image, report)
        if size is None:
            continue
        if not ann.objects:
            report.add("no_object", ann.source)
            continue
        width, height = size
        objects = ann.objects
        if not ann.normalized and ann.size is not None and ann.size[0] > 0 and ann.size[1] > 0:
            if tuple(ann.size) != (width, height):
                report.add(
                    "size_mismatch",
                    ann.source,
                    f"annotated {ann.size[0]}x{ann.size[1]}, image {width}x{height}",
                )
            frame = ann.size
        else:
            frame = (1, 1) if ann.normalized else (width, height)
        # Validity is decided before size: a box inverted on both axes has a positive "area" and
        # would otherwise win over the real one.
        valid = [(n, o) for o in objects if (n := normalize_box(o.box, *frame)) is not None]
        if len(objects) > 1:
            if multi_object == "skip":
                report.add("multiple_objects_left_out", ann.source, f"{len(objects)} objects")
                continue
            detail = f"{len(objects)} objects, the largest valid one is the box"
            report.add("multiple_objects", ann.source, detail)
        if not valid:
            box = tuple(round(v, 3) for v in objects[0].box)
            report.add("invalid_box", ann.source, f"box {box} in a {frame[0]}x{frame[1]} frame")
            continue
        valid.sort(key=lambda v: -_area(v[0][0]))  # stable: equal areas keep the file's order
        (nbox, clipped), obj = valid[0]
        others = valid[1:max_objects]
        if clipped:
            report.add("box_clipped", ann.source, f"box {tuple(round(v, 3) for v in obj.box)}")
        if any(o.difficult for o in objects):
            report.add("difficult_object", ann.source)
        chosen.append((ann, width, height, (nbox, clipped), obj, others))

    names: dict[str, set[str]] = defaultdict(set)
    for ann, *_, obj, _ in chosen:
        for key, name in _labels_of(ann, obj).items():
            names[key].add(name)
    sets = {key: fixed.get(key) or sorted(found) for key, found in names.items()}
    sets.update({k: v for k, v in fixed.items() if k not in sets})
    index = {key: {name: i for i, name in enumerate(values)} for key, values in sets.items()}

    records: list[Record] = []
    for ann, width, height, (nbox, _), obj, others in chosen:
        unknown = [(k, n) for k, n in _labels_of(ann, obj).items() if n not in index[k]]
        if unknown:
            key, name = unknown[0]
            report.add("malformed_entry", ann.source, f"{key} {name!r} is not in the dataset's {key} list")
            continue
        labels = {k: index[k][n] for k, n in _labels_of(ann, obj).items()}
        image_id = ann.image_id or ann.image.stem
        boxes = tuple(n[0] for n, _ in others)
        classes = tuple(_labels_of(ann, o).get("class") for _, o in others)
        records.append(Record(image_id, ann.image, width, height, nbox, labels, ann.split, boxes, classes))
    records.sort(key=lambda r: r.image_id)
    report.n_usable = len(records)
    if not records:
        raise DatasetError(
            f"no usable boxed image in {root} (read as format {format!r}): "
            f"{hint or 'every annotated image was left out (see the report below)'}\n{report.format_text()}\n"
            "`petloc-data check ROOT` prints this report; `--format` picks another reader."
        )
    return RecordSet(root, format, records, sets, report)


def _labels_of(ann: Annotation, obj: RawObject) -> dict[str, str]:
    labels = dict(ann.labels)
    if obj.label is not None:
        labels.setdefault("class", obj.label)
    return labels
