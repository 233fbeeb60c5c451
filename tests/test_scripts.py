"""The figure-producing scripts' own logic: ``scripts/inner_split.py`` (the training photos as a dataset
to tune on) and ``scripts/yolo_reference.py``'s YOLO layout and pairing (training YOLO needs
ultralytics and its weights, which are never petloc's dependencies, so the tests stop short of it).

Oracles: VOC folders written as text with boxes chosen by hand, their normalized boxes computed here,
and petloc's own split of the source folder for which photos must be left out.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from petloc.data.formats import read_dataset
from petloc.data.records import Record
from petloc.data.split import split_records
from tests.conftest import REPO
from tests.helpers import image_bytes, voc_xml

# (stem, boxes in 1-based inclusive VOC pixels) on 80x60 images; two images hold two objects
PHOTOS = [(f"p{i:02d}", [(11, 6, 50, 40)]) for i in range(8)] + [
    ("p08", [(11, 6, 50, 40), (60, 10, 75, 30)]),
    ("p09", [(2, 2, 30, 20), (41, 21, 80, 60)]),
]


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def normalized(box: tuple[int, int, int, int], width: int = 80, height: int = 60) -> list[float]:
    """VOC's 1-based inclusive pixels -> YOLO's normalized centre and size, by hand."""
    x0, y0, x1, y1 = box[0] - 1, box[1] - 1, box[2], box[3]
    return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


@pytest.fixture
def voc_folder(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    root.mkdir()
    for i, (stem, boxes) in enumerate(PHOTOS):
        (root / f"{stem}.jpg").write_bytes(image_bytes("JPEG", seed=i))
        (root / f"{stem}.xml").write_text(voc_xml((80, 60), boxes))
    return root


def read_labels(path: Path) -> list[float]:
    """Every label line's centre and size, one flat list (class ids left out)."""
    return [float(v) for line in path.read_text().splitlines() for v in line.split()[1:]]


def test_inner_split_writes_the_training_photos_with_every_object(voc_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "inner"
    command = [
        sys.executable,
        str(REPO / "scripts" / "inner_split.py"),
        str(out),
        "--",
        "data=voc",
        f"data.root={voc_folder}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=0",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    _, held_out, _ = split_records(read_dataset(voc_folder, "voc"), 0.2, 0)
    expected = {stem: boxes for stem, boxes in PHOTOS if stem not in {r.image_id for r in held_out}}
    assert len(held_out) == 2 and len(expected) == 8
    written = {p.stem: read_labels(p) for p in (out / "labels").glob("*.txt")}
    assert set(written) == set(expected)
    for stem, boxes in expected.items():
        largest_first = sorted(boxes, key=lambda b: -(b[2] - b[0] + 1) * (b[3] - b[1] + 1))
        expected_values = [v for b in largest_first for v in normalized(b)]
        assert written[stem] == pytest.approx(expected_values, abs=1e-6), stem
    # what it wrote reads back as a dataset of its own, every photo usable
    assert len(read_dataset(out, "yolo").records) == 8


def test_yolo_layout_links_the_photos_and_labels_every_object(tmp_path: Path) -> None:
    module = script("yolo_reference")
    photo = tmp_path / "a.jpg"
    photo.write_bytes(image_bytes("JPEG"))
    record = Record("a", photo, 80, 60, (0.125, 0.1, 0.625, 0.7), others=((0.75, 0.0, 1.0, 0.5),))
    data = module.write_yolo_layout([record], [record], tmp_path / "layout")
    assert "train: images/train" in data.read_text() and "val: images/val" in data.read_text()
    for split in ("train", "val"):
        assert (tmp_path / "layout" / "images" / split / "a.jpg").resolve() == photo.resolve()
        labels = read_labels(tmp_path / "layout" / "labels" / split / "a.txt")
        assert labels == pytest.approx([0.375, 0.4, 0.5, 0.6, 0.875, 0.25, 0.25, 0.5])
