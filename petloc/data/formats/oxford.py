"""The Oxford-IIIT Pet layout: VOC XMLs for the head boxes, classes from the dataset's list files.

Layout::

    ROOT/images/*.jpg
    ROOT/annotations/list.txt        "Image CLASS-ID SPECIES BREED-ID" after '#' header lines
    ROOT/annotations/trainval.txt    the boxed images
    ROOT/annotations/test.txt        images without boxes
    ROOT/annotations/xmls/*.xml      PASCAL VOC, 1-based inclusive pixel coordinates

Two label sets: ``class`` (the 37 breeds, CLASS-ID order, named by their images' stems) and
``species`` (cat, dog). Every image's header is probed, boxed or not. The original test split has no
boxes, so petloc makes its own split. Read only: its class names come from its file names.
"""

from __future__ import annotations

from pathlib import Path

from petloc.data.files import FileIndex
from petloc.data.formats.registry import Format, Parsed, register
from petloc.data.formats.voc import XML_ERRORS, parse_voc, voc_annotation
from petloc.data.images import IMAGE_SUFFIXES
from petloc.data.records import Annotation, DataReport, probe_into

SPECIES = ["cat", "dog"]  # list.txt's SPECIES 1 and 2
LIST_LINE = "Image CLASS-ID SPECIES BREED-ID"


def read_list(path: Path, report: DataReport) -> dict[str, tuple[int, int]]:
    """Image -> (breed, species), both 0-based, from list.txt-style lines after '#' headers;
    malformed lines are reported."""
    entries: dict[str, tuple[int, int]] = {}
    if not path.is_file():
        return entries
    text = path.read_bytes().decode("utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            class_id, species, _ = map(int, parts[1:])
        except ValueError:  # not numbers, or not three of them
            class_id = species = 0
        if class_id < 1 or species not in (1, 2):
            report.add("malformed_entry", f"{path.name}:{lineno}", f"{line[:80]!r} is not {LIST_LINE!r}")
            continue
        entries[parts[0]] = (class_id - 1, species - 1)
    return entries


def _by_stem(paths: list[Path], report: DataReport) -> dict[str, Path]:
    """stem -> path; a second file of a stem (``x.jpg``, ``x.png``) is a reported bad name."""
    found: dict[str, Path] = {}
    for path in paths:
        if path.stem in found:
            report.add("bad_name", path.name, f"same stem as {found[path.stem].name}, which is used")
            continue
        found[path.stem] = path
    return found


def _detect(root: Path) -> bool:
    ann = root / "annotations"
    return (ann / "xmls").is_dir() and any((ann / f).is_file() for f in ("list.txt", "trainval.txt"))


def read_oxford(root: Path, report: DataReport) -> Parsed:
    """The boxed images of an Oxford-layout folder with their breed and species (module doc)."""
    ann = root / "annotations"
    index = FileIndex(root, report)
    images = _by_stem(index.files(root / "images", IMAGE_SUFFIXES), report)
    xmls = _by_stem(index.files(ann / "xmls", (".xml",)), report)
    in_list = read_list(ann / "list.txt", report)
    trainval = read_list(ann / "trainval.txt", report)
    test = read_list(ann / "test.txt", report)
    report.n_images = len(images)
    classes = {**in_list, **test, **trainval}

    for stem in sorted(images.keys() - classes.keys()):
        report.add("not_in_list", images[stem].name)
    n_test = len((test.keys() - trainval.keys() - xmls.keys()) & images.keys())
    if n_test:
        report.notes.append(f"{n_test} images in test.txt have no box (as in the original split): not used")
    for stem in sorted((trainval.keys() - xmls.keys()) & images.keys()):
        report.add(
            "missing_annotation", images[stem].name, f"listed in trainval.txt, no annotations/xmls/{stem}.xml"
        )
    for stem in sorted(trainval.keys() - xmls.keys() - images.keys()):
        report.add("missing_image", f"{stem}", f"listed in trainval.txt, no images/{stem}.jpg")

    breed_names: dict[int, str] = {}
    for stem, (breed, _) in classes.items():
        breed_names.setdefault(breed, stem.rsplit("_", 1)[0])
    names = [breed_names.get(i, f"class_{i + 1}") for i in range(max(breed_names, default=-1) + 1)]

    annotations: list[Annotation] = []
    for stem in sorted(xmls.keys() & classes.keys()):
        xml = xmls[stem]
        try:
            voc = parse_voc(xml)
        except XML_ERRORS as exc:
            report.add("bad_annotation", xml.name, str(exc)[:120])
            continue
        breed, species = classes[stem]
        labels = {"class": names[breed], "species": SPECIES[species]}
        image = images.get(stem, root / "images" / f"{stem}.jpg")
        annotations.append(voc_annotation(voc, image, report, xml.name, labels=labels))
    annotated = {a.image for a in annotations}
    for path in sorted(images.values()):
        if path not in annotated:
            probe_into(path, report)  # unboxed images too: their quirks are worth knowing
    return Parsed(annotations, {"class": names, "species": SPECIES}, _hint(root, images, xmls, classes))


def _hint(
    root: Path, images: dict[str, Path], xmls: dict[str, Path], classes: dict[str, tuple[int, int]]
) -> str:
    """The first missing piece: an empty or mis-pointed folder's one-line diagnosis."""
    layout = "expected images/*.jpg, annotations/xmls/*.xml and annotations/list.txt or trainval.txt"
    if not images:
        return f"no image files in {root / 'images'} ({layout})"
    if not xmls:
        return f"no XML files in {root / 'annotations' / 'xmls'} ({layout})"
    if not classes:
        return f"no class list ({root / 'annotations' / 'list.txt'} or trainval.txt; {layout})"
    return "every boxed image was left out (see the report below)"


# First: an Oxford folder is also VOC XMLs, and its list files make it the richer reading.
register(Format("oxford", read_oxford, _detect, priority=10, looks_for="Oxford-IIIT Pet lists"))
