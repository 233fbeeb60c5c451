"""Tests for petloc.data.formats.voc: PASCAL VOC XMLs, in a VOC folder and inside the Oxford layout
(whose reader parses its XMLs with the same functions).

Oracles are independent of the reader: folders written here (images with PIL, XMLs as text) whose
right answer is known by construction, boxes worked out by hand from the VOC convention (integers
are 1-based inclusive pixels: ((xmin - 1) / W, (ymin - 1) / H, xmax / W, ymax / H)), values
hand-read from the real Oxford sample's XMLs, and the real raccoon set's XMLs parsed here with
xml.etree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from petloc.data.formats import FORMATS, detect_format, read_dataset
from petloc.data.formats.voc import parse_voc
from petloc.data.records import Box, RecordSet
from tests.helpers import Pet, expected_box, good, image_bytes, kinds, names, voc_xml, write_pets

W, H = 80, 60


def write_image(path: Path) -> Path:
    """A W x H image, encoded as its suffix says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes("PNG" if path.suffix == ".png" else "JPEG"))
    return path


def write_xml(
    path: Path, objects: list[tuple[str, Box]], filename: str | None = None, difficult: bool = False
) -> Path:
    """A VOC XML as labelImg and CVAT write it: ``<filename>`` (left out when None), ``<size>`` W x H,
    an ``<object>`` per (name, (xmin, ymin, xmax, ymax))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"<filename>{filename}</filename>" if filename is not None else ""
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    path.write_text(
        f'<?xml version="1.0"?>\n<annotation><folder>x</folder>{head}<size><width>{W}</width>'
        f"<height>{H}</height><depth>3</depth></size>{body}</annotation>\n"
    )
    return path


def by_id(dataset: RecordSet) -> dict[str, tuple[str, Box, str]]:
    """image id -> (file name, box, class name)."""
    return {r.image_id: (r.path.name, r.box, dataset.classes[r.labels["class"]]) for r in dataset.records}


COORDINATES = ("xmin", "ymin", "xmax", "ymax")
BOX = (11, 6, 50, 40)
NORMALIZED = (10 / W, 5 / H, 50 / W, 40 / H)  # BOX by hand


# --- the real XMLs ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_parse_voc_reads_hand_read_values(oxford_sample: Path) -> None:
    xmls = oxford_sample / "annotations" / "xmls"
    a = parse_voc(xmls / "Abyssinian_1.xml")
    assert (a.width, a.height, a.boxes) == (600, 400, [(333, 72, 425, 158)])
    b = parse_voc(xmls / "Bengal_105.xml")
    assert (b.width, b.height, b.boxes) == (500, 466, [(49, 125, 111, 168), (397, 103, 451, 132)])
    y = parse_voc(xmls / "yorkshire_terrier_10.xml")
    assert (y.width, y.height, y.boxes) == (299, 299, [(63, 36, 229, 136)])


@pytest.mark.realdata
def test_raccoon_read_as_voc_gives_what_its_xmls_say(raccoon: Path) -> None:
    expected: dict[str, tuple[int, int, list[Box], str]] = {}
    several, n_boxes = [], 0
    for xml in sorted((raccoon / "annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        w, h = int(root.findtext("size/width", "")), int(root.findtext("size/height", ""))
        objects = []
        for obj in root.iter("object"):
            xmin, ymin, xmax, ymax = (int(obj.findtext(f"bndbox/{k}", "")) for k in COORDINATES)
            objects.append(((xmin - 1) / w, (ymin - 1) / h, xmax / w, ymax / h))
        objects.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
        n_boxes += len(objects)
        if len(objects) > 1:
            several.append(f"annotations/{xml.name}")
        expected[xml.stem] = (w, h, objects, str(root.findtext("filename")))
    assert (len(expected), n_boxes, len(several)) == (200, 217, 16)  # the dataset README's counts
    images = sorted((raccoon / "images").glob("*.jpg"))
    gray = []
    for path in images:
        with Image.open(path) as im:
            if im.mode != "RGB":
                gray.append(path.name)

    assert detect_format(raccoon) == "voc"  # its CSV would do too: the XMLs are the richer reading
    dataset = read_dataset(raccoon, "voc")
    report = dataset.report
    assert (report.n_images, report.n_usable) == (len(images), len(expected)) == (200, 200)
    assert kinds(report) == {"multiple_objects", "color_mode"}
    assert sorted(names(report, "multiple_objects")) == sorted(several)
    assert sorted(names(report, "color_mode")) == sorted(gray) and len(gray) == 3
    assert dataset.classes == ["raccoon"] and not dataset.has_split
    for record in dataset.records:
        w, h, objects, filename = expected[record.image_id]
        assert (record.path, record.width, record.height) == (raccoon / "images" / filename, w, h)
        assert record.box == pytest.approx(objects[0], abs=1e-12), record.image_id
        assert list(record.others) == [pytest.approx(b, abs=1e-12) for b in objects[1:4]], record.image_id
        assert record.other_classes == ("raccoon",) * (len(objects) - 1)


# --- the folder layouts ---------------------------------------------------------------------------


def test_images_and_xmls_side_by_side(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_xml(tmp_path / "a.xml", [("cat", BOX)], "a.jpg")
    write_image(tmp_path / "b.png")
    write_xml(tmp_path / "b.xml", [("dog", (1, 1, W, H))], "b.png")
    dataset = read_dataset(tmp_path, "voc")
    assert by_id(dataset) == {
        "a": ("a.jpg", pytest.approx(NORMALIZED), "cat"),
        "b": ("b.png", (0.0, 0.0, 1.0, 1.0), "dog"),
    }
    assert kinds(dataset.report) == set() and dataset.report.n_images == 2
    assert not dataset.has_split and dataset.report.notes == []


def test_two_folders_of_any_names_and_nested_xmls(tmp_path: Path) -> None:
    write_image(tmp_path / "photos" / "a.jpg")
    write_image(tmp_path / "photos" / "b.jpg")
    write_xml(tmp_path / "labels" / "a.xml", [("cat", BOX)], "a.jpg")
    write_xml(tmp_path / "labels" / "batch2" / "b.xml", [("cat", (41, 31, 80, 60))], "b.jpg")
    dataset = read_dataset(tmp_path, "voc")
    assert by_id(dataset) == {
        "a": ("a.jpg", pytest.approx(NORMALIZED), "cat"),
        "b": ("b.jpg", pytest.approx((0.5, 0.5, 1.0, 1.0)), "cat"),
    }
    assert all(r.path.parent == tmp_path / "photos" for r in dataset.records)
    assert kinds(dataset.report) == set()


def test_voc_devkit_layout_with_its_split_lists(tmp_path: Path) -> None:
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for stem in ("a", "b", "c", "d"):
        write_image(tmp_path / "JPEGImages" / f"{stem}.jpg")
        write_xml(tmp_path / "Annotations" / f"{stem}.xml", [("cat", BOX)], f"{stem}.jpg")
    (main / "train.txt").write_text("a\n")
    (main / "trainval.txt").write_text("c\n\n")
    (main / "val.txt").write_text("b\n")
    (main / "test.txt").write_text("d\n")
    (main / "cat_val.txt").write_text("a  1\nd -1\n")  # a per-class list: not a split
    dataset = read_dataset(tmp_path, "voc")
    splits = {r.image_id: r.split for r in dataset.records}
    assert splits == {"a": "train", "b": "val", "c": "train", "d": "test"}
    assert dataset.has_split
    assert dataset.report.notes == [f"split given by {main}"]
    assert all(r.box == pytest.approx(NORMALIZED) for r in dataset.records)


def test_images_in_no_split_list_have_no_split(tmp_path: Path) -> None:
    for stem in ("a", "b"):
        write_image(tmp_path / "JPEGImages" / f"{stem}.jpg")
        write_xml(tmp_path / "Annotations" / f"{stem}.xml", [("cat", BOX)], f"{stem}.jpg")
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    dataset = read_dataset(tmp_path, "voc")
    assert {r.image_id: r.split for r in dataset.records} == {"a": "train", "b": None}
    assert not dataset.has_split


# --- pairing XMLs with images ---------------------------------------------------------------------


def test_filename_pairs_first_then_the_xml_stem_then_the_filename_stem(tmp_path: Path) -> None:
    for stem in ("a", "b", "c", "d"):
        write_image(tmp_path / "images" / f"{stem}.jpg")
    write_xml(tmp_path / "xmls" / "a.xml", [("cat", BOX)], "b.jpg")  # <filename> wins over the stem
    write_xml(tmp_path / "xmls" / "c.xml", [("cat", BOX)])  # no <filename>: its own stem
    # an annotator's path, named .png, of what is d.jpg here: <filename>'s stem
    write_xml(tmp_path / "xmls" / "scan_7.xml", [("cat", BOX)], "/home/ann/d.png")
    dataset = read_dataset(tmp_path, "voc")
    assert {r.image_id: r.path.name for r in dataset.records} == {"b": "b.jpg", "c": "c.jpg", "d": "d.jpg"}
    assert dataset.report.problems["missing_annotation"] == ["images/a.jpg: no XML for a"]


def test_xml_whose_image_is_missing_and_image_without_xml(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_xml(tmp_path / "a.xml", [("cat", BOX)], "a.jpg")
    write_xml(tmp_path / "gone.xml", [("cat", BOX)], "gone.jpg")
    write_xml(tmp_path / "unnamed.xml", [("cat", BOX)])
    write_image(tmp_path / "lonely.jpg")
    dataset = read_dataset(tmp_path, "voc")
    assert dataset.report.problems["missing_image"] == [
        f"gone.xml: no image {tmp_path / 'gone.jpg'}",
        f"unnamed.xml: no image {tmp_path / 'unnamed.jpg'}",
    ]
    assert dataset.report.problems["missing_annotation"] == ["lonely.jpg: no XML for lonely"]
    assert [r.image_id for r in dataset.records] == ["a"]
    assert dataset.report.n_images == 2


def test_two_xmls_of_one_image_and_two_images_of_one_stem(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "a.png")
    write_xml(tmp_path / "a.xml", [("cat", BOX)], "a.jpg")
    write_xml(tmp_path / "a_copy.xml", [("dog", (1, 1, W, H))], "a.jpg")
    dataset = read_dataset(tmp_path, "voc")
    assert dataset.report.problems["bad_name"] == ["a.png: same stem as a.jpg"]
    assert names(dataset.report, "malformed_entry") == ["a_copy.xml"]
    assert by_id(dataset) == {"a": ("a.jpg", pytest.approx(NORMALIZED), "cat")}  # the first XML


# --- what an XML says -----------------------------------------------------------------------------


def test_class_names_come_from_name(tmp_path: Path) -> None:
    for stem, objects in {
        "a": [("dog", BOX)],
        "b": [(" cat\n", BOX)],  # whitespace around the name is not part of it
        "c": [("cat", (1, 1, 20, 20)), ("raccoon", (21, 21, W, H))],  # the largest object's class
    }.items():
        write_image(tmp_path / f"{stem}.jpg")
        write_xml(tmp_path / f"{stem}.xml", objects, f"{stem}.jpg")
    dataset = read_dataset(tmp_path, "voc")
    assert dataset.classes == ["cat", "dog", "raccoon"]
    got = by_id(dataset)
    assert {i: c for i, (_, _, c) in got.items()} == {"a": "dog", "b": "cat", "c": "raccoon"}
    c = next(r for r in dataset.records if r.image_id == "c")
    assert c.box == pytest.approx((20 / W, 20 / H, 1.0, 1.0))
    assert list(c.others) == [pytest.approx((0.0, 0.0, 20 / W, 20 / H))] and c.other_classes == ("cat",)


def test_difficult_objects_are_used_and_reported(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_xml(tmp_path / "a.xml", [("cat", BOX)], "a.jpg", difficult=True)
    dataset = read_dataset(tmp_path, "voc")
    assert names(dataset.report, "difficult_object") == ["a.xml"]
    assert by_id(dataset) == {"a": ("a.jpg", pytest.approx(NORMALIZED), "cat")}


def test_fractional_coordinates_are_edges_and_reported(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_xml(tmp_path / "a.xml", [("cat", (10.5, 5, 50, 40.25))], "a.jpg")
    dataset = read_dataset(tmp_path, "voc")
    assert names(dataset.report, "float_coordinates") == ["a.xml"]
    assert dataset.records[0].box == pytest.approx((10.5 / W, 5 / H, 50 / W, 40.25 / H))


def test_an_xml_that_is_no_voc_annotation_is_named(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    write_xml(tmp_path / "a.xml", [("cat", BOX)], "a.jpg")
    (tmp_path / "settings.xml").write_text("<config><theme>dark</theme></config>")
    dataset = read_dataset(tmp_path, "voc")
    assert dataset.report.problems["bad_annotation"] == [
        "settings.xml: root element is <config>, not <annotation>"
    ]
    assert [r.image_id for r in dataset.records] == ["a"]


# --- detection ------------------------------------------------------------------------------------


@pytest.mark.parametrize("xml", ["a.xml", "Annotations/a.xml", "my labels/a.xml"])
def test_detect_xmls_in_root_or_a_folder_of_it(tmp_path: Path, xml: str) -> None:
    write_image(tmp_path / "JPEGImages" / "a.jpg")
    write_xml(tmp_path / xml, [("cat", BOX)], "a.jpg")
    assert FORMATS["voc"].detect(tmp_path)
    assert detect_format(tmp_path) == "voc"


@pytest.mark.parametrize("xml", [None, "deeper/down/a.xml", ".hidden/a.xml", "a.xml.txt"])
def test_detect_refuses_folders_without_xmls_at_the_top(tmp_path: Path, xml: str | None) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    if xml is not None:
        write_xml(tmp_path / xml, [("cat", BOX)], "a.jpg")
    assert not FORMATS["voc"].detect(tmp_path)
    assert not FORMATS["voc"].detect(tmp_path / "missing")  # no such folder: False, no crash


def test_an_oxford_folder_is_not_taken_for_voc(tmp_path: Path) -> None:
    root = write_pets(tmp_path, good())
    assert not FORMATS["voc"].detect(root)  # its XMLs are two levels down
    assert detect_format(root) == "oxford"


# --- XML quirks, through both readers of VOC XMLs ------------------------------------------------


@pytest.fixture(params=["voc", "oxford"])
def layout(request: pytest.FixtureRequest) -> str:
    """A VOC folder (images and XMLs side by side) or the Oxford layout: both parse with voc.py."""
    return request.param


def write_set(root: Path, pets: list[Pet], layout: str) -> Path:
    """``pets`` as images and XMLs in ``layout``; returns the folder of the XMLs."""
    if layout == "oxford":
        return write_pets(root, pets) / "annotations" / "xmls"
    root.mkdir(parents=True, exist_ok=True)
    for i, pet in enumerate(pets):
        (root / f"{pet.stem}{pet.ext}").write_bytes(image_bytes(pet.fmt, pet.mode, pet.size, i))
        if pet.boxes is not None:
            (root / f"{pet.stem}.xml").write_text(voc_xml(pet.xml_size or pet.size, pet.boxes))
    return root


def test_two_objects_keep_the_largest_valid_box(tmp_path: Path, layout: str) -> None:
    small, large = (5, 5, 20, 20), (30, 10, 70, 50)
    inverted_both_ways = (79, 59, 1, 1)  # (xmax-xmin+1)*(ymax-ymin+1) is positive and the largest
    two = [Pet("Bengal_1", boxes=[small, large]), Pet("Bengal_2", boxes=[inverted_both_ways, small])]
    write_set(tmp_path, [*good(), *two], layout)
    dataset = read_dataset(tmp_path, layout)
    assert names(dataset.report, "multiple_objects") == ["Bengal_1.xml", "Bengal_2.xml"]
    records = {r.image_id: r for r in dataset.records}
    assert records["Bengal_1"].box == pytest.approx(expected_box(large, 80, 60))
    assert records["Bengal_2"].box == pytest.approx(expected_box(small, 80, 60))


def test_box_reaching_outside_is_clipped(tmp_path: Path, layout: str) -> None:
    write_set(tmp_path, [*good(), Pet("Bengal_1", boxes=[(-4, 20, 120, 61)])], layout)
    dataset = read_dataset(tmp_path, layout)
    assert names(dataset.report, "box_clipped") == ["Bengal_1.xml"]
    record = next(r for r in dataset.records if r.image_id == "Bengal_1")
    assert record.box == pytest.approx((0.0, 19 / 60, 1.0, 1.0))


@pytest.mark.parametrize(
    "box",
    [
        pytest.param((50, 6, 11, 40), id="inverted-x"),
        pytest.param((11, 40, 50, 6), id="inverted-y"),
        pytest.param((21, 6, 20, 40), id="zero-width"),  # VOC xmax = xmin - 1 covers no pixel
        pytest.param((90, 6, 120, 40), id="outside"),
        pytest.param((11, 6, float("inf"), 40), id="infinite"),
    ],
)
def test_invalid_box_is_skipped(tmp_path: Path, layout: str, box: Box) -> None:
    write_set(tmp_path, [*good(), Pet("Bengal_1", boxes=[box])], layout)
    dataset = read_dataset(tmp_path, layout)
    assert names(dataset.report, "invalid_box") == ["Bengal_1.xml"]
    assert "Bengal_1" not in {r.image_id for r in dataset.records}


def test_a_one_pixel_box_is_kept(tmp_path: Path, layout: str) -> None:
    write_set(tmp_path, [*good(), Pet("Bengal_1", boxes=[(20, 30, 20, 30)])], layout)
    record = next(r for r in read_dataset(tmp_path, layout).records if r.image_id == "Bengal_1")
    assert record.box == pytest.approx((19 / 80, 29 / 60, 20 / 80, 30 / 60))


def test_xml_size_disagreeing_with_the_image_rescales_the_box(tmp_path: Path, layout: str) -> None:
    # The XML was written for a 160x120 version of the 80x60 file: the box covers the same region.
    box = (21, 11, 100, 80)
    write_set(tmp_path, [*good(), Pet("Bengal_1", boxes=[box], xml_size=(160, 120))], layout)
    dataset = read_dataset(tmp_path, layout)
    assert names(dataset.report, "size_mismatch") == ["Bengal_1.xml"]
    record = next(r for r in dataset.records if r.image_id == "Bengal_1")
    assert record.box == pytest.approx(expected_box(box, 160, 120))
    assert record.box == pytest.approx((10 / 80, 5 / 60, 50 / 80, 40 / 60))
    assert (record.width, record.height) == (80, 60)


def test_entity_bomb_broken_xml_and_xml_without_box(tmp_path: Path, layout: str) -> None:
    pets = [*good(), Pet("Bengal_1"), Pet("Bengal_2"), Pet("Bengal_3"), Pet("Bengal_4")]
    xmls = write_set(tmp_path, pets, layout)
    lol = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    (xmls / "Bengal_1.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">{lol}]>'
        "<annotation><size><width>80</width><height>60</height></size>"
        "<object><name>&lol9;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
        "</bndbox></object></annotation>"
    )
    (xmls / "Bengal_2.xml").write_text("<annotation><size><width>80</width>")
    (xmls / "Bengal_3.xml").write_text(voc_xml((80, 60), []))
    (xmls / "Bengal_4.xml").write_text(voc_xml((80, 60), [(11, 6, "x", 40)]))  # type: ignore[list-item]
    dataset = read_dataset(tmp_path, layout)
    assert names(dataset.report, "bad_annotation") == ["Bengal_1.xml", "Bengal_2.xml", "Bengal_4.xml"]
    assert "Entit" in dataset.report.problems["bad_annotation"][0]  # defusedxml's EntitiesForbidden
    assert names(dataset.report, "no_object") == ["Bengal_3.xml"]  # parses, but holds no box
    assert {r.image_id for r in dataset.records} == {"Abyssinian_1", "Abyssinian_2"}
