"""PASCAL VOC folders: images and one XML per image, in any layout (side by side, ``images/`` +
``annotations/``, VOC's own ``JPEGImages/`` + ``Annotations/`` + ``ImageSets/Main/{train,val,test}.txt``).

Every XML under ROOT is paired with the image its ``<filename>`` names, else with the image of its
own stem (or of ``<filename>``'s stem). Coordinates follow
:func:`~petloc.data.records.voc_pixels_to_edges`; class = the object's ``<name>``. ``ImageSets/Main``
lists, where present, are the split. The writer writes ``images/`` + ``annotations/`` and the split
as ``ImageSets/Main`` lists.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from petloc.data.files import FileIndex, Link, place_image
from petloc.data.formats.registry import Format, Parsed, register
from petloc.data.images import IMAGE_SUFFIXES
from petloc.data.records import (
    Annotation,
    DataReport,
    Labelled,
    RawObject,
    class_name,
    voc_pixels,
    voc_pixels_to_edges,
)

XML_ERRORS = (ET.ParseError, DefusedXmlException, ValueError, OSError)


@dataclass(frozen=True)
class VocFile:
    """One parsed XML: ``<filename>``, ``<size>`` ((0, 0) when absent), the objects' own pixel values."""

    filename: str | None
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]]
    names: list[str | None]
    difficult: list[bool]


def parse_voc(path: Path) -> VocFile:
    """Parse a VOC XML with defusedxml (entity bombs and external entities are refused). An object
    without ``<bndbox>`` (points, polygons) is none; a missing coordinate is NaN: an invalid box."""
    root = SafeET.parse(path).getroot()
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, not <annotation>")
    size = root.find("size")
    width = int(float(size.findtext("width", "0") or 0)) if size is not None else 0
    height = int(float(size.findtext("height", "0") or 0)) if size is not None else 0
    boxes, names, difficult = [], [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        boxes.append(tuple(float(bb.findtext(k, "nan") or "nan") for k in ("xmin", "ymin", "xmax", "ymax")))
        name = (obj.findtext("name") or "").strip()
        names.append(name or None)
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    filename = (root.findtext("filename") or "").strip() or None
    return VocFile(filename, width, height, boxes, names, difficult)  # type: ignore[arg-type]


def voc_annotation(
    voc: VocFile, image: Path, report: DataReport, source: str, **fields: object
) -> Annotation:
    """The :class:`Annotation` of one parsed XML; fractional coordinates are reported."""
    edges = [voc_pixels_to_edges(box) for box in voc.boxes]
    objects = [
        RawObject(e, name, hard) for (e, _), name, hard in zip(edges, voc.names, voc.difficult, strict=True)
    ]
    if any(fractional for _, fractional in edges):
        report.add("float_coordinates", source)
    size = (voc.width, voc.height) if voc.width > 0 and voc.height > 0 else None
    return Annotation(image=image, source=source, objects=objects, size=size, **fields)  # type: ignore[arg-type]


def _detect(root: Path) -> bool:
    index = FileIndex(root, DataReport(root))  # detection reports nothing
    return any(index.files(folder, (".xml",)) for folder in [root, *index.subfolders(root)])


def _given_split(root: Path) -> dict[str, str]:
    """stem -> split from ``ImageSets/Main/{train,val,trainval,test}.txt``, where present."""
    main = root / "ImageSets" / "Main"
    split: dict[str, str] = {}
    for name, value in (("trainval", "train"), ("train", "train"), ("val", "val"), ("test", "test")):
        path = main / f"{name}.txt"
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if line.strip():
                    split[line.split()[0]] = value
    return split


def read_voc(root: Path, report: DataReport) -> Parsed:
    """Every XML under ``root`` paired with its image (see the module doc)."""
    index = FileIndex(root, report)
    xmls: list[Path] = []
    by_name: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    for _, listing in index.walk():
        for name, path in listing.files.items():
            image = Path(path)
            if name.lower().endswith(".xml"):
                xmls.append(image)
            elif not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            elif image.stem in by_stem:
                report.add("bad_name", index.rel(path), f"same stem as {by_stem[image.stem].name}")
            else:
                by_name[name] = by_stem[image.stem] = image
    report.n_images = len(by_stem)
    split = _given_split(root)
    annotations: list[Annotation] = []
    paired: set[Path] = set()
    for xml in xmls:
        source = index.rel(xml)
        try:
            voc = parse_voc(xml)
        except XML_ERRORS as exc:
            report.add("bad_annotation", source, str(exc)[:120])
            continue
        filename = voc.filename
        image = by_name.get(filename or "") or by_stem.get(xml.stem) or by_stem.get(Path(filename or "").stem)
        if image is None:
            image = xml.with_name(filename or f"{xml.stem}.jpg")  # does not exist: reported as missing
        elif image in paired:
            report.add("malformed_entry", source, f"{image.name} is annotated by another XML too: first kept")
            continue
        paired.add(image)
        annotations.append(voc_annotation(voc, image, report, source, split=split.get(image.stem)))
    for stem, image in sorted(by_stem.items()):
        if image not in paired:
            report.add("missing_annotation", index.rel(image), f"no XML for {stem}")
    if split:
        report.notes.append(f"split given by {root / 'ImageSets' / 'Main'}")
    return Parsed(annotations)


def write_voc(images: Sequence[Labelled], classes: Sequence[str], out: Path, link: Link) -> None:
    """``images/`` + ``annotations/`` (one XML per image, an ``<object>`` per box, class = ``<name>``)
    + ``ImageSets/Main/<split>.txt`` for the images that have a split."""
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {}
    for im in images:
        name = place_image(im, out / "images", link)
        objects = ""
        for box, label in zip(im.boxes, im.labels, strict=True):
            x0, y0, x1, y1 = voc_pixels(box, im.width, im.height)
            objects += (
                f"<object><name>{escape(class_name(label))}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            )
        (out / "annotations" / f"{im.stem}.xml").write_text(
            f"<annotation><filename>{escape(name)}</filename><size><width>{im.width}</width>"
            f"<height>{im.height}</height><depth>3</depth></size>{objects}</annotation>\n"
        )
        if im.split is not None:
            splits.setdefault(im.split, []).append(f"{im.stem}\n")
    for split, lines in splits.items():
        (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(lines))


register(Format("voc", read_voc, _detect, priority=40, looks_for="VOC XMLs", write=write_voc))
