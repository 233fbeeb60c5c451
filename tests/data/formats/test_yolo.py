"""Tests for petloc.data.formats.yolo: the YOLO txt reader, through read_dataset as a user calls it.

Every dataset here is crafted with PIL and the stdlib, so the right answer is known by construction:
boxes are computed by hand from the YOLO line (``cx cy w h`` -> ``(cx - w/2, cy - h/2, cx + w/2,
cy + h/2)``), not by the reader's code.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from PIL import Image

import petloc.data.formats as formats
from petloc.data.formats import detect_format, read_dataset
from petloc.data.formats.yolo import read_yolo
from petloc.data.records import MAX_OBJECTS, DataReport, DatasetError, Record, RecordSet

SIZE = (80, 60)


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", SIZE, (120, 80, 40)).save(buf, format=fmt)
    return buf.getvalue()


ENCODED = {".jpg": _encoded("JPEG"), ".png": _encoded("PNG")}


def image(path: Path) -> Path:
    """An 80x60 image encoded as its suffix says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ENCODED[path.suffix])
    return path


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def pair(root: Path, image_rel: str, label_rel: str | None, lines: str) -> None:
    """An image and (unless ``label_rel`` is None) its label file."""
    image(root / image_rel)
    if label_rel is not None:
        text(root / label_rel, lines)


def by_id(rs: RecordSet) -> dict[str, Record]:
    return {r.image_id: r for r in rs.records}


def assert_box(actual: tuple[float, ...], expected: tuple[float, ...]) -> None:
    assert actual == pytest.approx(expected, abs=1e-9)


# --- layouts, boxes, names, split ----------------------------------------------------------------


def test_ultralytics_layout_boxes_classes_and_split(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/train/a.jpg", "labels/train/a.txt", "0 0.5 0.5 0.25 0.5\n")
    pair(root, "images/train/b.png", "labels/train/b.txt", "1 0.25 0.75 0.5 0.5\n")
    # the same stem in another split folder is another image
    pair(root, "images/val/a.jpg", "labels/val/a.txt", "1 0.4 0.3 0.2 0.2\n")
    text(root / "data.yaml", "path: ../ds\ntrain: images/train\nval: images/val\nnames: [cat, dog]\n")
    assert detect_format(root) == "yolo"

    rs = read_dataset(root, "yolo")
    assert rs.format == "yolo"
    assert rs.classes == ["cat", "dog"]
    recs = by_id(rs)
    assert set(recs) == {"images/train/a", "images/train/b", "images/val/a"}
    a, b, va = recs["images/train/a"], recs["images/train/b"], recs["images/val/a"]
    assert_box(a.box, (0.375, 0.25, 0.625, 0.75))
    assert_box(b.box, (0.0, 0.5, 0.5, 1.0))
    assert_box(va.box, (0.3, 0.2, 0.5, 0.4))
    assert (a.width, a.height) == SIZE
    assert a.path == root / "images/train/a.jpg"
    assert rs.classes[a.labels["class"]] == "cat"
    assert rs.classes[b.labels["class"]] == "dog"
    assert (a.split, b.split, va.split) == ("train", "train", "val")
    assert rs.has_split
    assert rs.report.n_images == 3 and rs.report.n_usable == 3
    assert not any(rs.report.problems.values())
    notes = " ".join(rs.report.notes)
    assert "images/train (train, 2)" in notes and "images/val (val, 1)" in notes
    assert "class names from data.yaml" in notes


def test_roboflow_layout_with_names_as_dict(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "train/images/a.jpg", "train/labels/a.txt", "1 0.5 0.5 0.5 0.5\n")
    pair(root, "valid/images/b.jpg", "valid/labels/b.txt", "0 0.5 0.5 1 1\n")
    pair(root, "test/images/c.jpg", "test/labels/c.txt", "2 0.1 0.1 0.2 0.2\n")
    text(root / "data.yaml", "nc: 3\nnames:\n  0: cat\n  1: dog\n  2: fox\n")
    assert detect_format(root) == "yolo"

    rs = read_dataset(root, "yolo")
    recs = by_id(rs)
    assert rs.classes == ["cat", "dog", "fox"]
    assert_box(recs["train/images/a"].box, (0.25, 0.25, 0.75, 0.75))
    assert_box(recs["valid/images/b"].box, (0.0, 0.0, 1.0, 1.0))
    assert_box(recs["test/images/c"].box, (0.0, 0.0, 0.2, 0.2))
    assert [recs[k].split for k in ("train/images/a", "valid/images/b", "test/images/c")] == [
        "train",
        "val",
        "test",
    ]
    assert [rs.classes[recs[k].labels["class"]] for k in sorted(recs)] == ["fox", "dog", "cat"]
    assert "valid (val, 1)" in " ".join(rs.report.notes)


def test_side_by_side_with_classes_txt(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "a.jpg", "a.txt", "1 0.5 0.5 0.25 0.5\n")
    pair(root, "b.jpg", "b.txt", "0 0.75 0.25 0.5 0.5\n")
    text(root / "classes.txt", "cat\ndog\n\n")
    assert detect_format(root) == "yolo"

    rs = read_dataset(root, "yolo")
    recs = by_id(rs)
    assert rs.classes == ["cat", "dog"]
    assert_box(recs["a"].box, (0.375, 0.25, 0.625, 0.75))
    assert_box(recs["b"].box, (0.5, 0.0, 1.0, 0.5))
    assert rs.classes[recs["a"].labels["class"]] == "dog"
    assert recs["a"].split is None and not rs.has_split
    assert "class names from classes.txt (2)" in rs.report.notes


def test_side_by_side_in_a_subfolder_with_labelimg_classes_txt(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "photos/a.jpg", "photos/a.txt", "0 0.5 0.5 0.25 0.5\n")
    text(root / "photos/classes.txt", "bird\n")
    assert detect_format(root) == "yolo"
    rs = read_dataset(root, "yolo")
    assert rs.classes == ["bird"]
    assert [r.image_id for r in rs.records] == ["photos/a"]


def test_label_beside_image_inside_images_tree_is_used(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/a.jpg", "images/a.txt", "0 0.5 0.5 0.25 0.5\n")
    pair(root, "images/b.jpg", "labels/b.txt", "0 0.5 0.5 0.5 0.5\n")
    rs = read_dataset(root, "yolo")
    assert_box(by_id(rs)["images/a"].box, (0.375, 0.25, 0.625, 0.75))
    assert_box(by_id(rs)["images/b"].box, (0.25, 0.25, 0.75, 0.75))


def test_no_names_uses_indices_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/a.jpg", "labels/a.txt", "2 0.5 0.5 0.25 0.5\n")
    pair(root, "images/b.jpg", "labels/b.txt", "0 0.5 0.5 0.5 0.5\n")
    assert detect_format(root) == "yolo"
    rs = read_dataset(root, "yolo")
    assert rs.classes == ["0", "1", "2"]
    assert rs.classes[by_id(rs)["images/a"].labels["class"]] == "2"
    assert any("no class names" in n for n in rs.report.notes)


def test_names_dict_with_gap_and_any_yaml_with_names(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/a.jpg", "labels/a.txt", "2 0.5 0.5 0.25 0.5\n")
    text(root / "hyp.yaml", "lr0: 0.01\n")  # a yaml without names is not the dataset's
    text(root / "pets.yaml", "names: {0: cat, 2: fox}\n")
    assert detect_format(root) == "yolo"
    rs = read_dataset(root, "yolo")
    assert rs.classes == ["cat", "1", "fox"]
    assert rs.classes[rs.records[0].labels["class"]] == "fox"
    assert "class names from pets.yaml (3)" in rs.report.notes
    assert not any(rs.report.problems.values())


def test_yaml_option(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/a.jpg", "labels/a.txt", "1 0.5 0.5 0.25 0.5\n")
    text(root / "data.yaml", "names: [wrong, names]\n")
    text(root / "cfg/mine.yaml", "names: [cat, dog]\n")
    rs = read_dataset(root, "yolo", yaml="cfg/mine.yaml")
    assert rs.classes == ["cat", "dog"]
    with pytest.raises(DatasetError, match="no file"):
        read_dataset(root, "yolo", yaml="cfg/absent.yaml")
    text(root / "cfg/bad.yaml", "nc: 2\n")
    with pytest.raises(DatasetError, match="names"):
        read_dataset(root, "yolo", yaml="cfg/bad.yaml")


def test_broken_data_yaml_is_reported_and_classes_txt_used(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "a.jpg", "a.txt", "0 0.5 0.5 0.25 0.5\n")
    text(root / "classes.txt", "cat\n")
    text(root / "data.yaml", "names: [cat\n  : : :\n")
    rs = read_dataset(root, "yolo")
    assert rs.classes == ["cat"]
    assert rs.report.count("bad_annotation") == 1
    assert rs.report.problems["bad_annotation"][0].startswith("data.yaml")


def test_repeated_names_stay_separate_classes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "a.jpg", "a.txt", "1 0.5 0.5 0.25 0.5\n")
    pair(root, "b.jpg", "b.txt", "0 0.5 0.5 0.25 0.5\n")
    text(root / "data.yaml", "names: [cat, cat]\n")
    rs = read_dataset(root, "yolo")
    assert rs.classes == ["cat", "cat#1"]
    assert by_id(rs)["a"].labels["class"] == 1 and by_id(rs)["b"].labels["class"] == 0


# --- what is not an object -----------------------------------------------------------------------


def test_missing_and_empty_label_files_are_no_object(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/a.jpg", "labels/a.txt", "0 0.5 0.5 0.25 0.5\n")
    pair(root, "images/bg.jpg", None, "")
    pair(root, "images/empty.jpg", "labels/empty.txt", "\n  \n")
    rs = read_dataset(root, "yolo")
    assert [r.image_id for r in rs.records] == ["images/a"]
    assert rs.report.n_images == 3
    assert rs.report.count("no_object") == 2
    assert any("labels/bg.txt" in p for p in rs.report.problems["no_object"])
    assert "1 images have no label file (YOLO background images)" in rs.report.notes


def test_label_without_image_is_missing_image(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/train/a.jpg", "labels/train/a.txt", "0 0.5 0.5 0.25 0.5\n")
    text(root / "labels/train/ghost.txt", "0 0.5 0.5 0.25 0.5\n")
    text(root / "labels/train/classes.txt", "cat\n")  # not a label file
    rs = read_dataset(root, "yolo")
    assert rs.report.problems["missing_image"] == ["labels/train/ghost.txt: no image ghost.* in images/train"]
    assert rs.classes == ["cat"]


def test_out_of_range_values_are_invalid_and_corners_are_clipped(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    # line 1 has a centre outside the image: dropped; line 2 is kept
    pair(root, "a.jpg", "a.txt", "0 1.2 0.5 0.2 0.2\n0 0.5 0.5 0.25 0.5\n")
    # all four values in range, corners outside: clipped by assemble
    pair(root, "b.jpg", "b.txt", "0 0.9 0.5 0.4 0.2\n")
    # zero width
    pair(root, "c.jpg", "c.txt", "0 0.5 0.5 0 0.2\n")
    # an edge at 1 + 1e-9: rounding of the written decimals, clipped without a report
    pair(root, "d.jpg", "d.txt", "0 0.900000001 0.5 0.2 0.2\n")
    rs = read_dataset(root, "yolo")
    recs = by_id(rs)
    assert set(recs) == {"a", "b", "d"}
    assert recs["d"].box[2] == 1.0
    assert_box(recs["a"].box, (0.375, 0.25, 0.625, 0.75))
    assert_box(recs["b"].box, (0.7, 0.4, 1.0, 0.6))
    invalid = rs.report.problems["invalid_box"]
    assert len(invalid) == 2
    assert invalid[0].startswith("a.txt:1: '0 1.2 0.5 0.2 0.2'")
    assert invalid[1].startswith("c.txt:1:")
    assert rs.report.count("box_clipped") == 1
    assert rs.report.count("multiple_objects") == 0  # the dropped line is no object
    assert rs.report.count("no_object") == 0  # c's only line is reported already


def test_five_numbers_all_out_of_range(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "a.jpg", "a.txt", "0 0.5 0.5 0.5 0.5\n")
    pair(root, "pixels.jpg", "pixels.txt", "0 40 30 20 10\n")  # a pixel box written as YOLO
    rs = read_dataset(root, "yolo")
    assert [r.image_id for r in rs.records] == ["a"]
    assert rs.report.problems["invalid_box"] == [
        "pixels.txt:1: '0 40 30 20 10': cx cy w h must lie in [0, 1] with w, h > 0 "
        "(fractions of the image size)"
    ]
    assert rs.report.count("no_object") == 0 and rs.report.count("malformed_entry") == 0


def test_polygon_line_is_read_as_its_bounding_box(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "a.jpg", "a.txt", "0 0.1 0.2 0.5 0.2 0.3 0.6\n")  # triangle
    pair(root, "b.jpg", "b.txt", "0 0.2 0.2 0.8 0.2 0.8 0.9 0.2 0.9\n")  # rectangle, 4 points
    pair(root, "c.jpg", "c.txt", "0 0.1 0.2 1.5 0.2 0.3 0.6\n")  # a point outside
    rs = read_dataset(root, "yolo")
    recs = by_id(rs)
    assert_box(recs["a"].box, (0.1, 0.2, 0.5, 0.6))
    assert_box(recs["b"].box, (0.2, 0.2, 0.8, 0.9))
    assert "c" not in recs
    assert rs.report.problems["invalid_box"][0].startswith("c.txt:1:")


def test_pose_lines_with_kpt_shape_use_the_first_five_values(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    # 2 keypoints of (x, y, visible): 5 + 6 = 11 numbers, odd, which would otherwise read as a polygon
    pair(root, "a.jpg", "a.txt", "0 0.5 0.5 0.25 0.5 0.45 0.4 2 0.55 0.6 2\n")
    text(root / "data.yaml", "kpt_shape: [2, 3]\nnames: [person]\n")
    rs = read_dataset(root, "yolo")
    assert_box(rs.records[0].box, (0.375, 0.25, 0.625, 0.75))
    assert any("kpt_shape" in n for n in rs.report.notes)


def test_malformed_lines_are_named_with_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    lines = [
        "0 0.5 0.5 0.2",  # 1: four numbers
        "",  # 2: empty: ignored
        "0 0.5 0.5 0.2 0.2 0.93",  # 3: a detector's output with a confidence
        "cat 0.5 0.5 0.2 0.2",  # 4: class name instead of index
        "0.5 0.5 0.5 0.2 0.2",  # 5: fractional class
        "5 0.5 0.5 0.2 0.2",  # 6: class outside the 2 names
        "0,0.5,0.5,0.2,0.2",  # 7: commas
        "-1 0.5 0.5 0.2 0.2",  # 8: negative class
        "1 0.5 0.5 0.25 0.5",  # 9: good
    ]
    pair(root, "images/a.jpg", "labels/a.txt", "\r\n".join(lines) + "\r\n")
    text(root / "data.yaml", "names: [cat, dog]\n")
    rs = read_dataset(root, "yolo")
    assert len(rs.records) == 1
    assert_box(rs.records[0].box, (0.375, 0.25, 0.625, 0.75))
    assert rs.classes[rs.records[0].labels["class"]] == "dog"
    malformed = rs.report.problems["malformed_entry"]
    assert [m.split(": ", 1)[0] for m in malformed] == [f"labels/a.txt:{n}" for n in (1, 3, 4, 5, 6, 7, 8)]
    for n, m in zip((1, 3, 4, 5, 7, 8), [malformed[i] for i in (0, 1, 2, 3, 5, 6)], strict=True):
        assert "expected 'class cx cy w h'" in m, (n, m)
    assert "class 5 is not among the 2 class names" in malformed[4]
    assert rs.report.count("invalid_box") == 0


def test_utf8_bom_and_tabs(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    image(root / "a.jpg")
    (root / "a.txt").write_bytes(b"\xef\xbb\xbf0\t0.5\t0.5\t0.25\t0.5\n")
    rs = read_dataset(root, "yolo")
    assert_box(rs.records[0].box, (0.375, 0.25, 0.625, 0.75))


def test_unreadable_label_files_are_bad_annotations(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/a.jpg", "labels/a.txt", "0 0.5 0.5 0.25 0.5\n")
    image(root / "images/latin1.jpg")
    (root / "labels/latin1.txt").write_bytes(b"0 0.5 0.5 0.25 0.5 \xe9t\xe9\n")
    image(root / "images/folder.jpg")
    (root / "labels/folder.txt").mkdir()
    rs = read_dataset(root, "yolo")
    assert [r.image_id for r in rs.records] == ["images/a"]
    bad = rs.report.problems["bad_annotation"]
    assert len(bad) == 2
    assert any(b.startswith("labels/latin1.txt: not UTF-8") for b in bad)
    assert "labels/folder.txt: is a folder, not a label file" in bad
    assert rs.report.count("no_object") == 0


def test_two_images_with_one_stem_in_one_folder(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "x.jpg", "x.txt", "0 0.5 0.5 0.25 0.5\n")
    image(root / "x.png")
    rs = read_dataset(root, "yolo")
    assert [r.path.name for r in rs.records] == ["x.jpg"]
    assert rs.report.problems["bad_name"] == [
        "x.png: same stem as x.jpg, which is used (one label file for both)"
    ]


def test_multi_object_keeps_the_largest_or_skips(tmp_path: Path) -> None:
    """The largest box is the record's box; the others follow, largest first, as objects in view."""
    root = tmp_path / "ds"
    pair(root, "a.jpg", "a.txt", "0 0.2 0.2 0.1 0.1\n1 0.5 0.5 0.5 0.5\n0 0.8 0.8 0.2 0.2\n")
    pair(root, "b.jpg", "b.txt", "0 0.5 0.5 0.25 0.5\n")
    text(root / "classes.txt", "cat\ndog\n")
    rs = read_dataset(root, "yolo")
    a = by_id(rs)["a"]
    assert_box(a.box, (0.25, 0.25, 0.75, 0.75))
    assert len(a.others) == 2
    assert_box(a.others[0], (0.7, 0.7, 0.9, 0.9))
    assert_box(a.others[1], (0.15, 0.15, 0.25, 0.25))
    assert a.boxes().shape == (3, 4)
    assert by_id(rs)["b"].others == ()
    assert rs.classes[a.labels["class"]] == "dog"
    assert rs.report.problems["multiple_objects"] == ["a.txt: 3 objects, the largest valid one is the box"]

    skipped = read_dataset(root, "yolo", multi_object="skip")
    assert [r.image_id for r in skipped.records] == ["b"]
    assert skipped.report.count("multiple_objects_left_out") == 1


def test_hidden_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/a.jpg", "labels/a.txt", "0 0.5 0.5 0.25 0.5\n")
    (root / "images/._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    pair(root, ".cache/images/z.jpg", ".cache/labels/z.txt", "0 0.5 0.5 0.25 0.5\n")
    rs = read_dataset(root, "yolo")
    assert rs.report.n_images == 1 and not any(rs.report.problems.values())


def test_non_utf8_file_name_and_link_loop_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "images/a.jpg", "labels/a.txt", "0 0.5 0.5 0.25 0.5\n")
    try:
        (Path(os.fsdecode(os.fsencode(root / "images") + b"/caf\xe9.jpg"))).write_bytes(ENCODED[".jpg"])
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    (root / "images/loop").symlink_to(root / "images", target_is_directory=True)
    rs = read_dataset(root, "yolo")
    assert [r.image_id for r in rs.records] == ["images/a"]
    bad = rs.report.problems["bad_name"]
    assert any("caf\\xe9.jpg" in b and "UTF-8" in b for b in bad), bad
    assert any(b.startswith("images/loop: a link to a folder listed already") for b in bad), bad


def test_huge_class_indices_do_not_make_huge_class_lists(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    pair(root, "a.jpg", "a.txt", "1e300 0.5 0.5 0.2 0.2\n99999999 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.25 0.5\n")
    rs = read_dataset(root, "yolo")
    assert rs.classes == ["0", "1"]
    assert [m.split(": ", 1)[0] for m in rs.report.problems["malformed_entry"]] == ["a.txt:1", "a.txt:2"]
    text(root / "data.yaml", "names: {0: a, 4000000000: b}\n")
    text(root / "classes.txt", "x\ny\n")
    rs = read_dataset(root, "yolo")
    assert rs.report.problems["bad_annotation"][0].startswith("data.yaml: names key 4000000000")
    assert rs.classes == ["x", "y"]


# --- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        {"images/train/a.jpg": None, "labels/train/a.txt": "0 0.5 0.5 0.2 0.2"},
        {"train/images/a.jpg": None, "train/labels/a.txt": "0 0.5 0.5 0.2 0.2"},
        {"ds/images/a.jpg": None, "ds/labels/a.txt": "0 0.5 0.5 0.2 0.2"},
        {"a.jpg": None, "a.txt": "0 0.5 0.5 0.2 0.2", "classes.txt": "cat"},
        {"a.jpg": None, "a.txt": "0 0.5 0.5 0.2 0.2", "dataset.yaml": "names: [cat]"},
    ],
    ids=["ultralytics", "roboflow", "one-level-down", "classes.txt", "yaml"],
)
def test_detect_each_layout(tmp_path: Path, files: dict[str, str | None]) -> None:
    for rel, content in files.items():
        if content is None:
            image(tmp_path / rel)
        else:
            text(tmp_path / rel, content)
    assert formats.FORMATS["yolo"].detect(tmp_path)
    assert detect_format(tmp_path) == "yolo"


def test_detect_refuses_other_folders(tmp_path: Path) -> None:
    detect = formats.FORMATS["yolo"].detect
    image(tmp_path / "a.jpg")
    text(tmp_path / "README.txt", "photos")
    text(tmp_path / "a.xml", "<annotation/>")
    assert not detect(tmp_path)
    (tmp_path / "labels").mkdir()  # an empty labels folder is no evidence
    assert not detect(tmp_path)
    assert not detect(tmp_path / "absent")


# --- robustness and speed ------------------------------------------------------------------------


def _garbage_line(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return " ".join(f"{rng.uniform(-0.5, 1.5):.3f}" for _ in range(rng.randrange(0, 12)))
    if kind == 1:
        return f"{rng.randrange(-2, 5)} " + " ".join(f"{rng.random():.4f}" for _ in range(4))
    if kind == 2:
        return " ".join(
            rng.choice(["nan", "inf", "-inf", "1e400", "1e-400", "0x10", "1_0", "", "-0"]) for _ in range(5)
        )
    if kind == 3:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 40)))
    if kind == 4:
        return "1e300 0.5 0.5 0.2 0.2"
    if kind == 5:
        return f"0 {' '.join(f'{rng.random():.3f}' for _ in range(rng.choice([6, 8, 12, 13])))}"
    return f"{rng.randrange(3)} {rng.random():.3f} {rng.random():.3f} {rng.random():.3f} {rng.random():.3f}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuzz_garbage_never_crashes(tmp_path: Path, seed: int) -> None:
    """Random lines and random bytes in label files: read_dataset returns records with valid boxes, or
    raises DatasetError (nothing usable); nothing else."""
    rng = random.Random(seed)
    for rnd in range(6):
        root = tmp_path / f"r{rnd}"
        for i in range(6):
            split = rng.choice(["train", "val"])
            image(root / f"images/{split}/{i}.jpg")
            label = root / f"labels/{split}/{i}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            if rng.random() < 0.3:
                label.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))))
            else:
                lines = [_garbage_line(rng) for _ in range(rng.randrange(0, 6))]
                label.write_text(
                    rng.choice(["\n", "\r\n", "\r"]).join(lines), encoding="utf-8", errors="surrogatepass"
                )
        if rng.random() < 0.5:
            text(
                root / "data.yaml", rng.choice(["names: [a, b, c]", "names: {0: a, 5: f}", "names: 7", ": ["])
            )
        try:
            rs = read_dataset(root, "yolo", multi_object=rng.choice(["largest", "skip"]))
        except DatasetError:
            continue
        for r in rs.records:
            x0, y0, x1, y1 = r.box
            assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0, r
            assert 0 <= r.labels["class"] < len(rs.classes)


def test_reads_many_label_files_listing_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5,000 pairs in 10 folders (images are empty files: the reader never opens them). The listing
    is one os.scandir per folder, never a glob per file."""
    root = tmp_path / "ds"
    n_folders, per_folder = 10, 500
    for f in range(n_folders):
        (root / f"images/train/{f}").mkdir(parents=True)
        (root / f"labels/train/{f}").mkdir(parents=True)
        for i in range(per_folder):
            (root / f"images/train/{f}/{i}.jpg").touch()
            (root / f"labels/train/{f}/{i}.txt").write_text(f"{i % 3} 0.5 0.5 0.25 0.5\n")
    calls: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real_scandir(path)

    def no_glob(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("per-file glob")

    import petloc.data.formats.yolo as yolo

    monkeypatch.setattr(yolo.os, "scandir", counting_scandir)
    monkeypatch.setattr(Path, "glob", no_glob)
    monkeypatch.setattr(Path, "rglob", no_glob)
    report = DataReport(root=root)
    parsed = read_yolo(root, report)
    n_dirs = 1 + 2 * (2 + n_folders)  # root; images, images/train and its folders; the same for labels
    assert len(calls) == n_dirs and len(set(calls)) == len(calls)
    assert len(parsed.annotations) == n_folders * per_folder == report.n_images
    assert all(len(a.objects) == 1 for a in parsed.annotations)
    assert parsed.label_sets == {"class": ["0", "1", "2"]}


def test_a_record_carries_at_most_three_other_objects_the_largest(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    # six square objects of sides 0.05..0.30 in a row; the record keeps the 0.30 one as its box
    lines = "".join(
        f"0 {0.1 + 0.15 * i:.2f} 0.5 {0.05 * (i + 1):.2f} {0.05 * (i + 1):.2f}\n" for i in range(6)
    )
    pair(root, "a.jpg", "a.txt", lines)
    record = read_dataset(root, "yolo").records[0]
    assert len(record.others) == MAX_OBJECTS - 1 == 3
    widths = [round(b[2] - b[0], 6) for b in (record.box, *record.others)]
    assert widths == [0.30, 0.25, 0.20, 0.15]
