"""Every reader yields the same records from the same boxes: the equivalence oracle.

The real sample's boxes are converted here into a plain VOC folder, COCO JSON, YOLO txt and a CSV,
with the standard library only (ElementTree over the sample's XMLs, its list.txt for the species),
not with petloc; each converted folder links the sample's own image files. Each reader must then
give what the Oxford reader gives: the same images, boxes equal to 1e-6 (normalized), the same
species as the class, the same multi-object choice (Bengal_105 keeps its larger head).
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from petloc.data.formats import detect_format, read_dataset
from petloc.data.records import RecordSet

pytestmark = pytest.mark.realdata

SPECIES = {"1": "cat", "2": "dog"}


@dataclass(frozen=True)
class Source:
    """One boxed image of the sample as the converters see it: 1-based inclusive VOC pixels."""

    stem: str
    image: Path
    width: int
    height: int
    boxes: list[tuple[int, int, int, int]]
    species: str


def sample_sources(sample: Path) -> list[Source]:
    """The sample's boxed images: an XML, an image and a trainval.txt line (as the dataset defines)."""
    species = {}
    for line in (sample / "annotations" / "trainval.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            species[parts[0]] = SPECIES[parts[2]]
    sources = []
    for xml in sorted((sample / "annotations" / "xmls").glob("*.xml")):
        image = sample / "images" / f"{xml.stem}.jpg"
        if xml.stem not in species or not image.is_file():
            continue
        root = ET.parse(xml).getroot()
        boxes = [
            tuple(int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            for obj in root.iter("object")
        ]
        width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
        sources.append(Source(xml.stem, image, width, height, boxes, species[xml.stem]))  # type: ignore[arg-type]
    return sources


def link_images(sources: list[Source], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for s in sources:
        (folder / s.image.name).symlink_to(s.image)


def write_voc(sources: list[Source], out: Path) -> None:
    link_images(sources, out / "JPEGImages")
    (out / "Annotations").mkdir(parents=True)
    for s in sources:
        objects = "".join(
            f"<object><name>{s.species}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for b in s.boxes
        )
        (out / "Annotations" / f"{s.stem}.xml").write_text(
            f"<annotation><filename>{s.image.name}</filename><size><width>{s.width}</width>"
            f"<height>{s.height}</height></size>{objects}</annotation>"
        )


def write_coco(sources: list[Source], out: Path) -> None:
    link_images(sources, out / "images")
    # ids as annotation tools write them: an unused super-category first, classes from 1
    categories = [{"id": 0, "name": "pets", "supercategory": "none"}]
    categories += [
        {"id": 1, "name": "cat", "supercategory": "pets"},
        {"id": 2, "name": "dog", "supercategory": "pets"},
    ]
    ids = {"cat": 1, "dog": 2}
    images, annotations = [], []
    for i, s in enumerate(sources, start=100):
        images.append({"id": i, "file_name": s.image.name, "width": s.width, "height": s.height})
        for b in s.boxes:
            bbox = [b[0] - 1, b[1] - 1, b[2] - b[0] + 1, b[3] - b[1] + 1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": ids[s.species],
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
    document = {"images": images, "annotations": annotations, "categories": categories}
    (out / "annotations").mkdir(parents=True)
    (out / "annotations" / "instances.json").write_text(json.dumps(document))


def write_yolo(sources: list[Source], out: Path) -> None:
    link_images(sources, out / "images")
    (out / "labels").mkdir(parents=True)
    for s in sources:
        lines = []
        for b in s.boxes:
            x0, y0, x1, y1 = b[0] - 1, b[1] - 1, b[2], b[3]
            cx, cy = (x0 + x1) / 2 / s.width, (y0 + y1) / 2 / s.height
            w, h = (x1 - x0) / s.width, (y1 - y0) / s.height
            lines.append(f"{['cat', 'dog'].index(s.species)} {cx!r} {cy!r} {w!r} {h!r}\n")
        (out / "labels" / f"{s.stem}.txt").write_text("".join(lines))
    (out / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n")


def write_csv(sources: list[Source], out: Path) -> None:
    link_images(sources, out / "images")
    with (out / "boxes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        for s in sources:
            for b in s.boxes:
                writer.writerow([s.image.name, s.width, s.height, s.species, *b])


WRITERS = {"voc": write_voc, "coco": write_coco, "yolo": write_yolo, "csv": write_csv}


def by_image(dataset: RecordSet, label_set: str) -> dict[Path, tuple[tuple[float, ...], str]]:
    names = dataset.label_sets[label_set]
    return {r.path.resolve(): (r.box, names[r.labels[label_set]]) for r in dataset.records}


@pytest.fixture(scope="module")
def oxford_records(oxford_sample: Path) -> dict[Path, tuple[tuple[float, ...], str]]:
    return by_image(read_dataset(oxford_sample, "oxford"), "species")


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_every_reader_yields_the_oxford_records(
    fmt: str, oxford_sample: Path, oxford_records: dict, tmp_path: Path
) -> None:
    sources = sample_sources(oxford_sample)
    assert len(sources) == 730  # the sample README's count of boxed, listed images
    WRITERS[fmt](sources, tmp_path)
    assert detect_format(tmp_path) == fmt
    dataset = read_dataset(tmp_path, fmt)
    assert dataset.classes == ["cat", "dog"]
    got = by_image(dataset, "class")
    assert got.keys() == oxford_records.keys()
    for path, (box, species) in oxford_records.items():
        assert got[path][0] == pytest.approx(box, abs=1e-6), path.name
        assert got[path][1] == species, path.name
    assert dataset.report.count("multiple_objects") == 1  # Bengal_105
