"""Write records in each format petloc reads: ``petloc-data synth --format`` makes the embedded
synthetic set in any of them, so every reader can be tried end to end without outside data.

Writers use each format's own convention (VOC and CSV: 1-based inclusive integer pixels where the
box sits on pixel edges; COCO: 0-based ``[x, y, w, h]``; YOLO: normalized centre and size), so what
a reader gives back equals the records written.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from petloc.data.records import Record


def _pixels(value: float) -> float | int:
    """An edge in pixels: an integer when it sits on a pixel boundary (up to float noise)."""
    rounded = round(value)
    return rounded if abs(value - rounded) < 1e-6 else round(value, 4)


def _voc_box(r: Record) -> tuple[float | int, ...]:
    """1-based inclusive pixels (integers) for a box on pixel edges; 0-based edges otherwise."""
    edges = [_pixels(v * s) for v, s in zip(r.box, (r.width, r.height) * 2, strict=True)]
    if all(isinstance(v, int) for v in edges):
        return edges[0] + 1, edges[1] + 1, edges[2], edges[3]
    return tuple(edges)


def _copy_image(r: Record, folder: Path) -> str:
    """Hard-link (else copy) the record's image into ``folder``; returns the file name."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / r.path.name
    if not target.exists():
        try:
            os.link(r.path, target)
        except OSError:
            shutil.copy2(r.path, target)
    return target.name


def _class(r: Record, classes: Sequence[str]) -> str:
    return classes[r.labels["class"]] if "class" in r.labels and classes else "object"


def write_voc(records: Sequence[Record], classes: Sequence[str], out: Path) -> None:
    """``images/`` + ``annotations/`` (one XML per image, class = ``<name>``)."""
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for r in records:
        name = _copy_image(r, out / "images")
        x0, y0, x1, y1 = _voc_box(r)
        (out / "annotations" / f"{r.path.stem}.xml").write_text(
            f"<annotation><filename>{escape(name)}</filename><size><width>{r.width}</width>"
            f"<height>{r.height}</height><depth>3</depth></size><object><name>{escape(_class(r, classes))}"
            f"</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object></annotation>\n"
        )


def write_coco(records: Sequence[Record], classes: Sequence[str], out: Path) -> None:
    """``images/`` + ``annotations.json`` (category ids from 1, in class order)."""
    names = list(classes) or ["object"]
    images, annotations = [], []
    for i, r in enumerate(records, start=1):
        name = _copy_image(r, out / "images")
        images.append({"id": i, "file_name": name, "width": r.width, "height": r.height})
        x0, y0, x1, y1 = (v * s for v, s in zip(r.box, (r.width, r.height) * 2, strict=True))
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": names.index(_class(r, classes)) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
            }
        )
    categories = [{"id": i, "name": n, "supercategory": "none"} for i, n in enumerate(names, start=1)]
    document = {"images": images, "annotations": annotations, "categories": categories}
    (out / "annotations.json").write_text(json.dumps(document))


def write_yolo(records: Sequence[Record], classes: Sequence[str], out: Path) -> None:
    """``images/`` + ``labels/`` (``class cx cy w h``, a line per object: the box, then the image's
    other objects, under the image's class) + ``data.yaml`` with the names."""
    names = list(classes) or ["object"]
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for r in records:
        _copy_image(r, out / "images")
        cls = names.index(_class(r, classes))
        lines = [
            f"{cls} {(x0 + x1) / 2:.9f} {(y0 + y1) / 2:.9f} {x1 - x0:.9f} {y1 - y0:.9f}\n"
            for x0, y0, x1, y1 in r.boxes().tolist()
        ]
        (out / "labels" / f"{r.path.stem}.txt").write_text("".join(lines))
    yaml_names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(names))
    (out / "data.yaml").write_text(f"path: .\ntrain: images\nval: images\nnames:\n{yaml_names}")


def write_csv(records: Sequence[Record], classes: Sequence[str], out: Path) -> None:
    """``images/`` + ``labels.csv`` (``filename,width,height,class,xmin,ymin,xmax,ymax``, VOC pixels)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        for r in records:
            name = _copy_image(r, out / "images")
            writer.writerow([name, r.width, r.height, _class(r, classes), *_voc_box(r)])


WRITERS: dict[str, Callable[[Sequence[Record], Sequence[str], Path], None]] = {
    "voc": write_voc,
    "coco": write_coco,
    "yolo": write_yolo,
    "csv": write_csv,
}
