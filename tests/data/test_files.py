"""The one file index: in a folder of every format, a link that loops back to the dataset's root and
a file name that is not UTF-8 are reported or passed over; the set is read, with no hang and no
crash. Each folder is written here with the standard library and PIL (the oracle), and checked by a
real ``petloc-data check`` process under a time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from petloc.data.files import FileIndex, image_id, is_absolute
from petloc.data.records import DataReport
from tests.helpers import good, image_bytes, voc_xml, write_pets

SIZE = (80, 60)
BOX = (11, 6, 50, 40)  # VOC pixels


def images(root: Path) -> list[str]:
    (root / "images").mkdir(parents=True)
    names = ["a.jpg", "b.jpg"]
    for i, name in enumerate(names):
        (root / "images" / name).write_bytes(image_bytes("JPEG", seed=i))
    return names


def oxford(root: Path) -> None:
    write_pets(root, good())


def voc(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    for name in images(root):
        (root / "annotations" / f"{name[:-4]}.xml").write_text(voc_xml(SIZE, [BOX]))


def coco(root: Path) -> None:
    names = images(root)
    document = {
        "images": [
            {"id": i, "file_name": n, "width": SIZE[0], "height": SIZE[1]} for i, n in enumerate(names)
        ],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "bbox": [10, 5, 40, 35]} for i in range(len(names))
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    (root / "annotations.json").write_text(json.dumps(document))


def yolo(root: Path) -> None:
    (root / "labels").mkdir(parents=True)
    for name in images(root):
        (root / "labels" / f"{name[:-4]}.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (root / "data.yaml").write_text("names: [cat]\n")


def csv(root: Path) -> None:
    rows = "".join(f"{n},{','.join(map(str, BOX))},cat\n" for n in images(root))
    (root / "labels.csv").write_text("filename,xmin,ymin,xmax,ymax,class\n" + rows)


LAYOUTS: dict[str, Callable[[Path], None]] = {
    "oxford": oxford,
    "voc": voc,
    "coco": coco,
    "yolo": yolo,
    "csv": csv,
}


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_a_link_loop_and_a_non_utf8_name_in_every_format(fmt: str, tmp_path: Path) -> None:
    root = tmp_path / fmt
    LAYOUTS[fmt](root)
    (root / "images" / "loop").symlink_to(root, target_is_directory=True)  # images/loop/images/loop/...
    try:
        with open(os.fsencode(root / "images") + b"/bad\xff.jpg", "wb") as f:
            f.write(image_bytes("JPEG"))
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    command = [sys.executable, "-m", "petloc.cli.data", "check", str(root)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"format: {fmt} (detected)\n")
    assert "2 usable boxed images" in result.stdout
    assert "b'images/bad\\xff.jpg': not UTF-8" in result.stdout
    # the formats that walk ROOT meet the link and name it; the others never follow it
    assert ("images/loop: a link to a folder listed already" in result.stdout) == (fmt in ("voc", "yolo"))


def test_each_folder_is_listed_once_and_hidden_names_are_not_walked(tmp_path: Path) -> None:
    for name in ("a.jpg", ".hidden.jpg", "sub/b.jpg", ".git/c.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    report = DataReport(root=tmp_path)
    index = FileIndex(tmp_path, report)
    walked = {rel: sorted(listing.files) for rel, listing in index.walk()}
    assert walked == {"": ["a.jpg"], "sub": ["b.jpg"]}
    assert index.contains(tmp_path, ".hidden.jpg")  # a name an annotation states is found as written
    assert report.problems["bad_name"] == [
        "dangling.jpg: No such file or directory"
    ]  # once, though listed twice


def test_path_helpers() -> None:
    assert image_id("train/a.b.jpg") == "train/a.b" and image_id(".hidden") == ".hidden"
    assert is_absolute("C:/data/a.jpg") and is_absolute("/data/a.jpg") and not is_absolute("data/a.jpg")
