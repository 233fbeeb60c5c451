"""Tests for petloc.data.formats.coco: the COCO JSON reader.

Oracles are independent of the reader: every dataset here is written by hand (images with PIL, JSON
with the stdlib), and the expected normalized boxes are worked out by hand from the COCO convention
(``bbox`` = x, y, w, h in 0-based pixel edges: x0 = x, x1 = x + w, divided by the image's size).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from petloc.data.formats import FORMATS, detect_format, read_dataset
from petloc.data.formats.coco import read_coco
from petloc.data.records import DataReport, DatasetError, RecordSet

W, H = 80, 60


def write_image(path: Path, size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path, format="JPEG")
    return path


def image(id: Any, file_name: str, width: int = W, height: int = H) -> dict[str, Any]:
    return {"id": id, "file_name": file_name, "width": width, "height": height}


def box(id: Any, image_id: Any, bbox: list[float], category_id: Any = 1, iscrowd: int = 0) -> dict[str, Any]:
    w, h = bbox[2:] if len(bbox) == 4 else (0, 0)
    return {
        "id": id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": w * h,
        "iscrowd": iscrowd,
    }


CATS = [
    {"id": 1, "name": "cat", "supercategory": "animal"},
    {"id": 2, "name": "dog", "supercategory": "animal"},
]


def coco(images: list[Any], annotations: list[Any], categories: list[Any] | None = None) -> dict[str, Any]:
    """A COCO dict in the key order annotation tools write (info and licenses first)."""
    return {
        "info": {"description": "petloc test"},
        "licenses": [],
        "categories": CATS if categories is None else categories,
        "images": images,
        "annotations": annotations,
    }


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def by_id(dataset: RecordSet) -> dict[str, Any]:
    return {r.image_id: r for r in dataset.records}


def normalized(bbox: list[float], width: int = W, height: int = H) -> tuple[float, float, float, float]:
    """The hand rule: x0 = x, x1 = x + w, over the image's size."""
    x, y, w, h = bbox
    return (x / width, y / height, (x + w) / width, (y + h) / height)


def single_file(root: Path, images: list[Any], annotations: list[Any], **kw: Any) -> Path:
    """ROOT/annotations.json with every image entry written as a real file under ROOT/images."""
    for entry in images:
        write_image(root / "images" / entry["file_name"], (entry["width"], entry["height"]))
    write_json(root / "annotations.json", coco(images, annotations, **kw))
    return root


# -- conventions ------------------------------------------------------------------------------------


def test_bbox_is_xywh_in_zero_based_pixel_edges(tmp_path: Path) -> None:
    root = single_file(tmp_path, [image(1, "a.jpg")], [box(1, 1, [10, 5, 40, 30])])
    assert detect_format(root) == "coco"
    dataset = read_dataset(root, "coco")
    (record,) = dataset.records
    assert record.box == pytest.approx((10 / 80, 5 / 60, 50 / 80, 35 / 60))
    assert (record.width, record.height) == (80, 60)
    assert record.path == root / "images" / "a.jpg"
    assert record.image_id == "images/a"
    assert record.split is None
    assert dataset.classes == ["cat"]
    assert record.labels == {"class": 0}
    report = dataset.report
    assert report.n_images == 1 and report.n_usable == 1
    assert not any(report.problems.values())


def test_fractional_bbox_is_used_as_edges(tmp_path: Path) -> None:
    bbox = [10.5, 5.25, 40.25, 30.5]
    root = single_file(tmp_path, [image(1, "a.jpg")], [box(1, 1, bbox)])
    (record,) = read_dataset(root, "coco").records
    assert record.box == pytest.approx((10.5 / 80, 5.25 / 60, 50.75 / 80, 35.75 / 60))


def test_boxes_are_in_the_frame_of_the_image_entry_size(tmp_path: Path) -> None:
    """The entry says 160x120, the file is 80x60: the box is rescaled (and reported), not misread."""
    write_image(tmp_path / "images" / "a.jpg")
    write_json(
        tmp_path / "annotations.json", coco([image(1, "a.jpg", 160, 120)], [box(1, 1, [20, 10, 80, 60])])
    )
    dataset = read_dataset(tmp_path, "coco")
    (record,) = dataset.records
    assert record.box == pytest.approx((20 / 160, 10 / 120, 100 / 160, 70 / 120))
    assert dataset.report.count("size_mismatch") == 1


def test_image_entry_without_size_uses_the_image(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_json(
        tmp_path / "annotations.json", coco([{"id": 1, "file_name": "a.jpg"}], [box(1, 1, [10, 5, 40, 30])])
    )
    dataset = read_dataset(tmp_path, "coco")
    assert dataset.records[0].box == pytest.approx(normalized([10, 5, 40, 30]))
    assert not any(dataset.report.problems.values())


def test_box_reaching_outside_is_clipped(tmp_path: Path) -> None:
    root = single_file(tmp_path, [image(1, "a.jpg")], [box(1, 1, [-8, 30, 40, 60])])
    dataset = read_dataset(root, "coco")
    assert dataset.records[0].box == pytest.approx((0.0, 0.5, 32 / 80, 1.0))
    assert dataset.report.count("box_clipped") == 1


# -- categories -------------------------------------------------------------------------------------


def test_roboflow_unused_supercategory_is_no_class(tmp_path: Path) -> None:
    """Roboflow writes the dataset name as category 0 (supercategory "none"); the class is id 1."""
    categories = [
        {"id": 0, "name": "raccoons", "supercategory": "none"},
        {"id": 1, "name": "raccoon", "supercategory": "raccoons"},
    ]
    images = [image(0, "r0.jpg"), image(1, "r1.jpg")]
    anns = [box(0, 0, [1, 2, 30, 20], 1), box(1, 1, [5, 5, 10, 10], 1)]
    dataset = read_dataset(single_file(tmp_path, images, anns, categories=categories), "coco")
    assert dataset.classes == ["raccoon"]
    assert [r.labels["class"] for r in dataset.records] == [0, 0]


def test_non_contiguous_category_ids_sorted_by_id(tmp_path: Path) -> None:
    """Ids 3, 7, 12 used, 5 unused: classes are [cat (3), zebra (7), dog (12)] in id order."""
    categories = [
        {"id": 7, "name": "zebra"},
        {"id": 12, "name": "dog"},
        {"id": 5, "name": "unused"},
        {"id": 3, "name": "cat"},
    ]
    images = [image(i, f"{n}.jpg") for i, n in enumerate(["z", "d", "c"])]
    anns = [box(10, 0, [1, 1, 20, 20], 7), box(11, 1, [1, 1, 20, 20], 12), box(12, 2, [1, 1, 20, 20], 3)]
    dataset = read_dataset(single_file(tmp_path, images, anns, categories=categories), "coco")
    assert dataset.classes == ["cat", "zebra", "dog"]
    labels = {k: r.labels["class"] for k, r in by_id(dataset).items()}
    assert labels == {"images/c": 0, "images/z": 1, "images/d": 2}


def test_string_ids_as_some_tools_write_them(tmp_path: Path) -> None:
    images = [image("1", "a.jpg")]
    anns = [box("9", 1, [10, 5, 40, 30], "2")]
    dataset = read_dataset(single_file(tmp_path, images, anns), "coco")
    assert dataset.classes == ["dog"]
    assert dataset.records[0].box == pytest.approx(normalized([10, 5, 40, 30]))


def test_unknown_category_id_is_a_malformed_entry(tmp_path: Path) -> None:
    images = [image(1, "a.jpg"), image(2, "b.jpg")]
    anns = [box(1, 1, [10, 5, 40, 30], 99), box(2, 2, [10, 5, 40, 30], 2)]
    dataset = read_dataset(single_file(tmp_path, images, anns), "coco")
    report = dataset.report
    (entry,) = report.problems["malformed_entry"]
    assert "annotations.json:annotations[0]" in entry and "99" in entry
    assert report.count("no_object") == 1  # a.jpg: its only box was dropped
    assert [r.image_id for r in dataset.records] == ["images/b"]
    assert dataset.classes == ["dog"]


# -- crowds, empty images, dangling references ------------------------------------------------------


def test_crowd_regions_are_reported_once_per_image_and_ignored(tmp_path: Path) -> None:
    images = [image(1, "a.jpg"), image(2, "b.jpg")]
    anns = [
        box(1, 1, [0, 0, 70, 50], 2, iscrowd=1),  # bigger than the real object: must not win
        box(2, 1, [0, 0, 60, 50], 2, iscrowd=1),
        box(3, 1, [10, 5, 40, 30], 1),
        box(4, 2, [0, 0, 10, 10], 2, iscrowd=1),  # b.jpg: a crowd only
    ]
    dataset = read_dataset(single_file(tmp_path, images, anns), "coco")
    report = dataset.report
    assert report.count("crowd_annotation") == 2
    assert any("a.jpg" in p and "2 iscrowd" in p for p in report.problems["crowd_annotation"])
    assert report.count("multiple_objects") == 0
    assert report.count("no_object") == 1
    (record,) = dataset.records
    assert record.box == pytest.approx(normalized([10, 5, 40, 30]))
    assert dataset.classes == ["cat"]  # dog is used by crowds only


def test_image_without_annotations_is_no_object(tmp_path: Path) -> None:
    images = [image(1, "a.jpg"), image(2, "empty.jpg")]
    dataset = read_dataset(single_file(tmp_path, images, [box(1, 1, [10, 5, 40, 30])]), "coco")
    report = dataset.report
    assert report.n_images == 2 and report.n_usable == 1
    (entry,) = report.problems["no_object"]
    assert "empty.jpg" in entry


def test_annotation_of_unknown_image_id_is_a_malformed_entry(tmp_path: Path) -> None:
    anns = [box(1, 1, [10, 5, 40, 30]), box(2, 42, [10, 5, 40, 30])]
    dataset = read_dataset(single_file(tmp_path, [image(1, "a.jpg")], anns), "coco")
    (entry,) = dataset.report.problems["malformed_entry"]
    assert "annotations[1]" in entry and "42" in entry
    assert len(dataset.records) == 1


def test_missing_image_file_is_reported_by_assemble(tmp_path: Path) -> None:
    root = single_file(tmp_path, [image(1, "a.jpg")], [box(1, 1, [10, 5, 40, 30]), box(2, 2, [1, 1, 5, 5])])
    data = json.loads((root / "annotations.json").read_text())
    data["images"].append(image(2, "gone.jpg"))
    write_json(root / "annotations.json", data)
    dataset = read_dataset(root, "coco")
    (entry,) = dataset.report.problems["missing_image"]
    assert "gone.jpg" in entry
    assert dataset.report.n_images == 2 and dataset.report.n_usable == 1


def test_several_objects_keep_the_largest_or_skip(tmp_path: Path) -> None:
    images = [image(1, "multi.jpg"), image(2, "one.jpg")]
    anns = [box(1, 1, [0, 0, 10, 10], 2), box(2, 1, [20, 10, 40, 30], 1), box(3, 2, [1, 1, 8, 8], 2)]
    root = single_file(tmp_path, images, anns)
    dataset = read_dataset(root, "coco")
    multi = by_id(dataset)["images/multi"]
    assert multi.box == pytest.approx(normalized([20, 10, 40, 30]))
    assert dataset.classes[multi.labels["class"]] == "cat"
    assert dataset.report.count("multiple_objects") == 1

    skipped = read_dataset(root, "coco", multi_object="skip")
    assert [r.image_id for r in skipped.records] == ["images/one"]
    assert skipped.report.count("multiple_objects_left_out") == 1


# -- several files, splits, where images are --------------------------------------------------------


def test_roboflow_split_folders(tmp_path: Path) -> None:
    """train/valid/test folders, each with _annotations.coco.json beside its images; a class's id
    differs between files (valid: dog 5, cat 9): one class list by name, in id order."""
    for folder, cats in (("train", CATS), ("valid", [{"id": 5, "name": "dog"}, {"id": 9, "name": "cat"}])):
        cat_id = next(c["id"] for c in cats if c["name"] == "cat")
        dog_id = next(c["id"] for c in cats if c["name"] == "dog")
        write_image(tmp_path / folder / "a.jpg")
        write_image(tmp_path / folder / "b.jpg")
        images = [image(0, "a.jpg"), image(1, "b.jpg")]
        anns = [box(0, 0, [10, 5, 40, 30], cat_id), box(1, 1, [0, 0, 20, 20], dog_id)]
        write_json(tmp_path / folder / "_annotations.coco.json", coco(images, anns, cats))
    write_image(tmp_path / "test" / "t.jpg")
    write_json(
        tmp_path / "test" / "_annotations.coco.json", coco([image(0, "t.jpg")], [box(0, 0, [1, 2, 3, 4])])
    )
    (tmp_path / "README.roboflow.txt").write_text("exported from roboflow")

    assert detect_format(tmp_path) == "coco"
    dataset = read_dataset(tmp_path, "coco")
    records = by_id(dataset)
    assert sorted(records) == ["test/t", "train/a", "train/b", "valid/a", "valid/b"]
    assert {k: r.split for k, r in records.items()} == {
        "test/t": "test",
        "train/a": "train",
        "train/b": "train",
        "valid/a": "val",
        "valid/b": "val",
    }
    assert dataset.has_split
    assert dataset.classes == ["cat", "dog"]
    for key in ("train/a", "valid/a"):
        assert dataset.classes[records[key].labels["class"]] == "cat"
        assert records[key].box == pytest.approx(normalized([10, 5, 40, 30]))
    assert records["valid/b"].path == tmp_path / "valid" / "b.jpg"
    assert dataset.report.n_images == 5
    assert sum("_annotations.coco.json" in n for n in dataset.report.notes) == 3


def test_coco2017_layout(tmp_path: Path) -> None:
    """annotations/instances_{train,val}2017.json, images in ROOT/train2017 and ROOT/images/val2017;
    COCO's captions file beside them (images and annotations, but no boxes) is not read."""
    write_image(tmp_path / "train2017" / "000000000009.jpg")
    write_image(tmp_path / "images" / "val2017" / "000000000139.jpg")
    ann = tmp_path / "annotations"
    write_json(
        ann / "instances_train2017.json", coco([image(9, "000000000009.jpg")], [box(1, 9, [10, 5, 40, 30])])
    )
    write_json(
        ann / "instances_val2017.json", coco([image(139, "000000000139.jpg")], [box(2, 139, [0, 0, 8, 8])])
    )
    write_json(
        ann / "captions_train2017.json",
        {"images": [image(9, "000000000009.jpg")], "annotations": [{"id": 1, "image_id": 9, "caption": "x"}]},
    )
    assert detect_format(tmp_path) == "coco"
    dataset = read_dataset(tmp_path, "coco")
    records = by_id(dataset)
    assert records["train2017/000000000009"].split == "train"
    assert records["images/val2017/000000000139"].split == "val"
    assert records["train2017/000000000009"].box == pytest.approx(normalized([10, 5, 40, 30]))
    assert not any(dataset.report.problems.values())
    assert any("captions_train2017.json" in n for n in dataset.report.notes)


def test_files_and_image_dir_options(tmp_path: Path) -> None:
    write_image(tmp_path / "pics" / "a.jpg")
    write_json(tmp_path / "labels" / "mine.json", coco([image(1, "a.jpg")], [box(1, 1, [10, 5, 40, 30])]))
    write_json(tmp_path / "other.json", coco([image(1, "zzz.jpg")], [box(1, 1, [1, 1, 5, 5])]))
    dataset = read_dataset(tmp_path, "coco", files=["labels/mine.json"], image_dir="pics")
    (record,) = dataset.records
    assert record.path == tmp_path / "pics" / "a.jpg"
    assert record.image_id == "pics/a"
    assert dataset.report.n_images == 1  # other.json not read


def test_file_name_lookup_order(tmp_path: Path) -> None:
    """The JSON's folder wins over ROOT/images, which wins over ROOT; image_dir wins over all."""
    for folder in ("labels", "images", ".", "chosen"):
        write_image(tmp_path / folder / "a.jpg")
    write_image(tmp_path / "images" / "b.jpg")
    write_image(tmp_path / "c.jpg")
    images = [image(1, "a.jpg"), image(2, "b.jpg"), image(3, "c.jpg")]
    anns = [box(i, i, [10, 5, 40, 30]) for i in (1, 2, 3)]
    write_json(tmp_path / "labels" / "set.json", coco(images, anns))
    paths = {r.image_id: r.path for r in read_dataset(tmp_path, "coco").records}
    assert paths == {
        "labels/a": tmp_path / "labels" / "a.jpg",
        "images/b": tmp_path / "images" / "b.jpg",
        "c": tmp_path / "c.jpg",
    }
    chosen = read_dataset(tmp_path, "coco", image_dir="chosen").records
    assert {r.path for r in chosen} >= {tmp_path / "chosen" / "a.jpg"}


def test_windows_and_absolute_file_names(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "images" / "sub" / "b.jpg")
    images = [image(1, "C:\\Users\\me\\export\\a.jpg"), image(2, "sub\\b.jpg")]
    anns = [box(1, 1, [10, 5, 40, 30]), box(2, 2, [10, 5, 40, 30])]
    write_json(tmp_path / "annotations.json", coco(images, anns))
    dataset = read_dataset(tmp_path, "coco")
    assert {r.image_id for r in dataset.records} == {"images/a", "images/sub/b"}


# -- bad input --------------------------------------------------------------------------------------


def test_truncated_json_is_reported_and_the_other_files_read(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "a.jpg")
    write_image(tmp_path / "valid" / "b.jpg")
    write_json(
        tmp_path / "train" / "_annotations.coco.json", coco([image(1, "a.jpg")], [box(1, 1, [1, 1, 9, 9])])
    )
    text = json.dumps(coco([image(1, "b.jpg")], [box(1, 1, [1, 1, 9, 9])]))
    (tmp_path / "valid" / "_annotations.coco.json").write_text(text[: len(text) // 2])
    dataset = read_dataset(tmp_path, "coco")
    (entry,) = dataset.report.problems["bad_annotation"]
    assert entry.startswith("valid/_annotations.coco.json")
    assert [r.image_id for r in dataset.records] == ["train/a"]


def test_json_without_images_or_annotations(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_json(tmp_path / "good.json", coco([image(1, "a.jpg")], [box(1, 1, [1, 1, 9, 9])]))
    write_json(tmp_path / "no_anns.json", {"images": [image(1, "a.jpg")], "categories": CATS})
    write_json(tmp_path / "dataset-metadata.json", {"title": "a Kaggle dataset", "licenses": []})
    dataset = read_dataset(tmp_path, "coco")
    (entry,) = dataset.report.problems["bad_annotation"]
    assert entry.startswith("no_anns.json") and '"annotations"' in entry
    # another tool's JSON found by the search is no problem, only a note
    assert any("dataset-metadata.json" in n for n in dataset.report.notes)

    named = read_dataset(tmp_path, "coco", files=["good.json", "dataset-metadata.json", "nope.json"])
    bad = named.report.problems["bad_annotation"]
    assert len(bad) == 2
    assert any(b.startswith("dataset-metadata.json") and '"images" and "annotations"' in b for b in bad)
    assert any(b.startswith("nope.json") and "no such file" in b for b in bad)


def test_top_level_list_named_explicitly_is_bad(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", [1, 2, 3])
    report = DataReport(root=tmp_path)
    assert read_coco(tmp_path, report, files=["x.json"]).annotations == []
    (entry,) = report.problems["bad_annotation"]
    assert "list" in entry


def test_malformed_entries_are_named_and_the_rest_read(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        write_image(tmp_path / "images" / f"{name}.jpg")
    images = [
        image(1, "a.jpg"),
        {"file_name": "b.jpg", "width": W, "height": H},  # no id
        {"id": 3, "width": W, "height": H},  # no file_name
        "d.jpg",  # not an object
        image(1, "d.jpg"),  # repeated id
        image(5, "d.jpg"),
    ]
    anns = [
        box(1, 1, [10, 5, 40, 30]),
        box(2, 5, [10, 5, 40]),  # 3 numbers
        box(3, 5, [10, "5", 40, 30]),  # a string
        {"id": 4, "image_id": 5, "category_id": 1},  # no bbox
        {"id": 5, "image_id": 5, "category_id": 1, "bbox": [1, 1, 1e400, 5]},  # inf: invalid, not malformed
        7,
        box(6, 5, [2, 2, 20, 20]),
    ]
    write_json(tmp_path / "set.json", coco(images, anns))
    dataset = read_dataset(tmp_path, "coco")
    malformed = dataset.report.problems["malformed_entry"]
    for where in ("images[1]", "images[2]", "images[3]", "images[4]", "annotations[1]", "annotations[2]"):
        assert any(m.startswith(f"set.json:{where}:") for m in malformed), where
    assert any(m.startswith("set.json:annotations[3]:") for m in malformed)
    assert any(m.startswith("set.json:annotations[5]:") for m in malformed)
    assert len(malformed) == 8
    records = by_id(dataset)
    assert sorted(records) == ["images/a", "images/d"]
    assert records["images/d"].box == pytest.approx(normalized([2, 2, 20, 20]))
    assert dataset.report.n_images == 2


def test_no_json_at_all_is_a_dataset_error(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match="no COCO JSON"):
        read_dataset(tmp_path, "coco")


def fuzz_dataset(root: Path) -> bytes:
    """Three images (one with two objects, one crowd) and the JSON text, which the fuzzers damage."""
    for name in ("a", "b", "c"):
        write_image(root / "images" / f"{name}.jpg")
    images = [image(1, "a.jpg"), image(2, "b.jpg"), image(3, "c.jpg", 160, 120)]
    anns = [
        box(1, 1, [10, 5, 40, 30], 1),
        box(2, 2, [1, 1, 10, 10], 2),
        box(3, 2, [20, 20, 30, 30], 1),
        box(4, 3, [0, 0, 50, 50], 2, iscrowd=1),
        box(5, 3, [8.5, 4.25, 100, 60], 2),
    ]
    return json.dumps(coco(images, anns), indent=1).encode()


def read_or_dataset_error(root: Path) -> RecordSet | None:
    try:
        return read_dataset(root, "coco")
    except DatasetError:
        return None


def test_fuzz_truncated_and_corrupted_files_never_crash(tmp_path: Path) -> None:
    text = fuzz_dataset(tmp_path)
    path = tmp_path / "annotations.json"
    rng = random.Random(1234)
    variants = [text[:cut] for cut in range(0, len(text), max(1, len(text) // 60))]
    for _ in range(150):
        data = bytearray(text)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        variants.append(bytes(data))
    outcomes = {"records": 0, "error": 0}
    for variant in variants:
        path.write_bytes(variant)
        result = read_or_dataset_error(tmp_path)
        outcomes["records" if result is not None else "error"] += 1
        if result is not None:
            assert all(0 <= v <= 1 for r in result.records for v in r.box)
    assert outcomes["records"] > 0 and outcomes["error"] > 0


JUNK: list[Any] = [None, True, -1, 0, 1.5, 1e308, float("nan"), "", "x", "\x00", [], [1, 2], {}, {"a": 1}]


def test_fuzz_wrong_types_in_every_field(tmp_path: Path) -> None:
    """Each value of the valid dict (and whole entries and lists) replaced by junk of another type."""
    base = json.loads(fuzz_dataset(tmp_path))
    path = tmp_path / "annotations.json"
    rng = random.Random(99)

    def slots(node: Any) -> list[tuple[Any, Any]]:
        found: list[tuple[Any, Any]] = []
        keys = node.keys() if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else []
        for k in keys:
            found.append((node, k))
            found.extend(slots(node[k]))
        return found

    for _ in range(250):
        data = json.loads(json.dumps(base))
        for _ in range(rng.randint(1, 3)):
            parent, key = rng.choice(slots(data))
            parent[key] = rng.choice(JUNK)
        path.write_text(json.dumps(data))
        read_or_dataset_error(tmp_path)


# -- detection, split names, speed ------------------------------------------------------------------


def test_detect(tmp_path: Path) -> None:
    detect = FORMATS["coco"].detect
    labelme = tmp_path / "labelme"
    write_json(labelme / "a.json", {"shapes": [], "imagePath": "a.jpg", "imageData": None})
    assert not detect(labelme)

    late = tmp_path / "late"  # 80 COCO categories with long names before "images": past the sniffed head
    many = [{"id": i, "name": f"category number {i} " + "x" * 1000} for i in range(80)]
    write_json(late / "annotations" / "set.json", {"categories": many, "images": [], "annotations": []})
    assert detect(late)

    roboflow = tmp_path / "roboflow"
    write_json(roboflow / "train" / "_annotations.coco.json", coco([], []))
    assert detect(roboflow)
    assert detect_format(roboflow) == "coco"


def test_100k_images_are_all_parsed(tmp_path: Path) -> None:
    n = 100_000
    images = [image(i, f"{i:012d}.jpg", 640, 480) for i in range(n)]
    anns = [box(i, i, [i % 100, 10.5, 50, 60], 1 + i % 2) for i in range(n)]
    write_json(tmp_path / "annotations" / "instances_train2017.json", coco(images, anns))
    (tmp_path / "train2017").mkdir()  # images absent: every lookup misses
    report = DataReport(root=tmp_path)
    parsed = read_coco(tmp_path, report)
    assert len(parsed.annotations) == n and report.n_images == n
    assert parsed.label_sets == {"class": ["cat", "dog"]}
    assert parsed.annotations[7].objects[0].box == (7, 10.5, 57, 70.5)


def test_image_ids_stay_unique_when_names_differ_only_in_suffix(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    Image.new("RGB", (W, H)).save(tmp_path / "images" / "a.png")
    images = [image(1, "a.jpg"), image(2, "a.png"), image(3, "./a.jpg")]
    anns = [box(i, i, [10, 5, 40, 30]) for i in (1, 2, 3)]
    write_json(tmp_path / "annotations.json", coco(images, anns))
    dataset = read_dataset(tmp_path, "coco")
    assert {r.image_id: r.path.name for r in dataset.records} == {
        "images/a": "a.jpg",
        "images/a.png": "a.png",
    }
    assert dataset.report.count("malformed_entry") == 1  # ./a.jpg is a.jpg again: annotated twice
