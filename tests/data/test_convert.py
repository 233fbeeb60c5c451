"""``petloc-data convert``: a dataset read in one format and written in another reads back with the
same images, every object's box and class, and the given split; what the target cannot hold is
counted. Oracles: the Oxford reader's records of the real sample (as in formats/test_equivalence.py),
the raccoon set as its VOC XMLs give it, and folders written here with the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petloc.data.convert import convert
from petloc.data.formats import FORMATS, read_dataset, writable
from petloc.data.records import RecordSet
from tests.helpers import image_bytes

Objects = dict[str, tuple[np.ndarray, list[str | None]]]


def objects(dataset: RecordSet) -> Objects:
    """File stem -> (every object's normalized box, largest first; its class)."""
    classes = dataset.classes
    found: Objects = {}
    for r in dataset.records:
        first = classes[r.labels["class"]] if "class" in r.labels else None
        found[r.path.stem] = (r.boxes(), [first, *r.other_classes])
    return found


def assert_same_objects(got: Objects, expected: Objects, where: str) -> None:
    assert got.keys() == expected.keys(), where
    for stem, (boxes, classes) in expected.items():
        assert got[stem][0] == pytest.approx(boxes, abs=1e-6), f"{where}: {stem}"
        assert got[stem][1] == classes, f"{where}: {stem}"


@pytest.mark.realdata
@pytest.mark.parametrize("first", writable())
def test_the_real_sample_to_every_format_and_on_to_every_other(
    first: str, oxford_sample: Path, tmp_path: Path
) -> None:
    expected = objects(read_dataset(oxford_sample, "oxford"))
    assert len(expected) == 730 and len(expected["Bengal_105"][0]) == 2  # two heads, both carried
    _, lost = convert(oxford_sample, tmp_path / first, first)
    assert lost.count("not_carried") == 730  # the species: one class per object in every writable format
    assert_same_objects(objects(read_dataset(tmp_path / first, first)), expected, first)
    for second in writable():
        if second != first:
            convert(tmp_path / first, tmp_path / second, second)
            assert_same_objects(objects(read_dataset(tmp_path / second)), expected, f"{first} -> {second}")


@pytest.mark.realdata
@pytest.mark.parametrize("target", [f for f in writable() if f != "voc"])
def test_the_raccoon_voc_set_reads_back_from_every_other_format(
    target: str, raccoon: Path, tmp_path: Path
) -> None:
    """A dataset the project never tuned on: 200 photos, 217 boxes, up to three raccoons each."""
    expected = objects(read_dataset(raccoon, "voc", max_objects=None))
    assert len(expected) == 200 and sum(len(b) for b, _ in expected.values()) == 217
    convert(raccoon, tmp_path, target, source_format="voc")
    back = read_dataset(tmp_path, max_objects=None)
    assert back.format == target and back.classes == ["raccoon"]
    assert_same_objects(objects(back), expected, target)


def write_split_yolo(root: Path) -> None:
    """Four photos in images/{train,val}, written with the standard library; the last has six boxes."""
    for i, split in enumerate(["train", "train", "val", "val"]):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        (root / "images" / split / f"p{i}.jpg").write_bytes(image_bytes("JPEG", seed=i))
        n = 6 if i == 3 else 1
        lines = "".join(f"{k % 2} {0.1 + 0.15 * k:.2f} 0.5 0.1 {0.1 + 0.05 * k:.2f}\n" for k in range(n))
        (root / "labels" / split / f"p{i}.txt").write_text(lines)
    (root / "data.yaml").write_text("names: [cat, dog]\n")


@pytest.mark.parametrize("target", writable())
def test_the_split_and_every_object_are_carried_or_counted(target: str, tmp_path: Path) -> None:
    write_split_yolo(tmp_path / "src")
    source = read_dataset(tmp_path / "src", "yolo", max_objects=None)
    assert len(source.records[3].others) == 5  # more than a training record keeps
    _, lost = convert(tmp_path / "src", tmp_path / "out", target)
    back = read_dataset(tmp_path / "out", max_objects=None)
    assert_same_objects(objects(back), objects(source), target)
    if FORMATS[target].keep_split:
        assert {r.path.stem: r.split for r in back.records} == {
            "p0": "train",
            "p1": "train",
            "p2": "val",
            "p3": "val",
        }
        assert lost.count("not_carried") == 0
    else:
        assert {r.split for r in back.records} == {None}
        assert lost.count("not_carried") == 4 and "split train: " in lost.format_text()


def test_the_command_links_or_copies_and_refuses_a_used_folder(tmp_path: Path) -> None:
    write_split_yolo(tmp_path / "src")
    run = [sys.executable, "-m", "petloc.cli.data", "convert", str(tmp_path / "src")]
    result = subprocess.run(
        [*run, str(tmp_path / "coco"), "--format", "coco"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "read: dataset" in result.stdout and "wrote: dataset" in result.stdout
    assert result.stdout.count("4 usable boxed images") == 3  # read, written, checked
    source = tmp_path / "src" / "images" / "train" / "p0.jpg"
    assert (tmp_path / "coco" / "images" / "p0.jpg").stat().st_ino == source.stat().st_ino  # hard link
    for images, check in (("symlink", Path.is_symlink), ("copy", lambda p: p.stat().st_nlink == 1)):
        out = tmp_path / images
        command = [*run, str(out), "--format", "voc", "--images", images]
        assert subprocess.run(command, capture_output=True).returncode == 0
        assert check(out / "images" / "p0.jpg"), images
    refused = subprocess.run(
        [*run, str(tmp_path / "coco"), "--format", "csv"], capture_output=True, text=True
    )
    assert refused.returncode == 1 and "is not an empty folder" in refused.stderr
