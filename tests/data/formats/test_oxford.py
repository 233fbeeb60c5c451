"""Tests for the Oxford-IIIT Pet reader (petloc.data.formats.oxford) and the shared problem report.

Oracles are independent of the reader: numbers hand-read from the real sample's XML files and lists
(and the box arithmetic done by hand from them), the sample README's list of quirks, and tiny
datasets crafted here with PIL, one quirk each, whose right answer is known by construction.

The crafted-dataset helpers live in tests/helpers.py (the cache and CLI tests use them too). The
quirks of the VOC XMLs themselves (boxes, sizes, unsafe or broken XML) are in test_voc.py, checked
through both readers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petloc.data.cache import build_decode_cache
from petloc.data.formats import read_dataset
from petloc.data.records import PROBLEMS, DataReport, DatasetError, RecordSet
from tests.helpers import (
    GOOD_BOX,
    Pet,
    expected_box,
    good,
    image_bytes,
    kinds,
    names,
    write_pets,
)


def read_oxford_pets(root: Path) -> RecordSet:
    return read_dataset(root, "oxford")


# --- the real sample -------------------------------------------------------------------------


@pytest.mark.realdata
def test_sample_records_carry_hand_computed_boxes_and_classes(oxford_sample: Path) -> None:
    pets = read_oxford_pets(oxford_sample)
    by_id = {r.image_id: r for r in pets.records}
    cases = {
        # id: (width, height, normalized box by hand, breed 0-based, species 0 cat / 1 dog)
        "Abyssinian_1": (600, 400, (332 / 600, 71 / 400, 425 / 600, 158 / 400), 0, 0),
        # two objects: 63x44 px and 55x30 px, the first is the larger
        "Bengal_105": (500, 466, (48 / 500, 124 / 466, 111 / 500, 168 / 466), 5, 0),
        "Birman_10": (299, 299, (26 / 299, 92 / 299, 115 / 299, 203 / 299), 6, 0),
        "yorkshire_terrier_10": (299, 299, (62 / 299, 35 / 299, 229 / 299, 136 / 299), 36, 1),
    }
    for image_id, (w, h, box, breed, species) in cases.items():
        r = by_id[image_id]
        assert (r.width, r.height, r.labels["class"], r.labels["species"]) == (w, h, breed, species), image_id
        assert r.box == pytest.approx(box, abs=1e-12), image_id
        assert r.path == oxford_sample / "images" / f"{image_id}.jpg"
    assert len(pets.classes) == 37
    assert pets.classes[0] == "Abyssinian"
    assert pets.classes[5] == "Bengal"
    assert pets.classes[36] == "yorkshire_terrier"


@pytest.mark.realdata
def test_sample_report_names_exactly_the_readme_quirks(oxford_sample: Path) -> None:
    pets = read_oxford_pets(oxford_sample)
    report = pets.report
    assert kinds(report) == {
        "format_mismatch",
        "color_mode",
        "multiple_objects",
        "not_in_list",
        "missing_annotation",
    }
    assert report.problems["format_mismatch"] == ["Abyssinian_34.jpg: is GIF", "Abyssinian_5.jpg: is PNG"]
    assert report.problems["color_mode"] == ["Abyssinian_34.jpg: P", "Abyssinian_5.jpg: RGBA"]
    assert names(report, "multiple_objects") == ["Bengal_105.xml"]
    assert names(report, "not_in_list") == ["Abyssinian_34.jpg", "Abyssinian_82.jpg"]
    assert sorted(names(report, "missing_annotation")) == sorted(
        ["Abyssinian_104.jpg", "american_bulldog_202.jpg", "Bengal_175.jpg", "Bengal_111.jpg"]
    )
    # Every XML is in trainval.txt with its image, and every box is valid: all 730 are usable.
    xml_stems = {p.stem for p in (oxford_sample / "annotations" / "xmls").glob("*.xml")}
    assert len(xml_stems) == 730
    assert {r.image_id for r in pets.records} == xml_stems
    assert (report.n_images, report.n_usable) == (1034, 730)

    text = report.format_text()
    assert "1034 images, 730 usable boxed images" in text
    assert "298 images in test.txt have no box" in text
    assert "test_split" not in text and "Abyssinian_2.jpg" not in text  # test images are not listed
    for name in ("Abyssinian_34.jpg: is GIF", "Abyssinian_5.jpg: RGBA", "Bengal_105.xml", "Bengal_111.jpg"):
        assert name in text


# --- crafted datasets, one quirk each ----------------------------------------------------------


def test_clean_dataset_reports_no_problems(tmp_path: Path) -> None:
    pets = read_oxford_pets(write_pets(tmp_path, [*good(), Pet("Abyssinian_9", boxes=None, split="test")]))
    assert kinds(pets.report) == set()
    assert [r.box for r in pets.records] == [pytest.approx(expected_box(GOOD_BOX, 80, 60))] * 2
    assert pets.report.n_usable == 2
    assert "1 images in test.txt have no box" in pets.report.format_text()
    assert "no problems found" in pets.report.format_text()


def test_png_and_gif_named_jpg_are_reported_and_still_used(tmp_path: Path) -> None:
    root = write_pets(tmp_path, [*good(), Pet("Bengal_1", fmt="PNG"), Pet("Bengal_2", fmt="GIF")])
    pets = read_oxford_pets(root)
    assert pets.report.problems["format_mismatch"] == ["Bengal_1.jpg: is PNG", "Bengal_2.jpg: is GIF"]
    assert pets.report.problems["color_mode"] == ["Bengal_2.jpg: P"]  # a GIF is a palette image
    assert {r.image_id for r in pets.records} == {"Abyssinian_1", "Abyssinian_2", "Bengal_1", "Bengal_2"}


def test_a_jpeg_with_embedded_pictures_is_not_a_format_mismatch(tmp_path: Path) -> None:
    root = write_pets(tmp_path, good())
    frames = [Image.new("RGB", (80, 60), c) for c in ("red", "blue")]
    frames[0].save(
        root / "images" / "Abyssinian_1.jpg", format="MPO", save_all=True, append_images=frames[1:]
    )
    with Image.open(root / "images" / "Abyssinian_1.jpg") as photo:
        assert photo.format == "MPO"
    pets = read_oxford_pets(root)
    assert kinds(pets.report) == set()
    assert len(pets.records) == 2


def test_non_rgb_modes_are_reported_and_decode_to_rgb(tmp_path: Path, cache_dir: Path) -> None:
    quirky = [
        Pet("Bengal_1", fmt="PNG", mode="RGBA", ext=".png"),
        Pet("Bengal_2", fmt="JPEG", mode="L"),
        Pet("Bengal_3", fmt="JPEG", mode="CMYK"),
        Pet("Bengal_4", fmt="PNG", mode="P", ext=".png"),
    ]
    pets = read_oxford_pets(write_pets(tmp_path, [*good(), *quirky]))
    assert pets.report.problems["color_mode"] == [
        "Bengal_1.png: RGBA",
        "Bengal_2.jpg: L",
        "Bengal_3.jpg: CMYK",
        "Bengal_4.png: P",
    ]
    assert kinds(pets.report) == {"color_mode"}
    cache, usable = build_decode_cache(pets.records, 40, cache_dir, pets.report, progress=False)
    assert len(usable) == 6
    for pet in quirky:
        pixels = cache.get(pet.stem)
        assert pixels.shape == (30, 40, 3) and pixels.dtype == np.uint8
    gray = cache.get("Bengal_2")
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])


def test_truncated_jpeg_passes_the_header_probe_and_is_caught_by_the_decode(
    tmp_path: Path, cache_dir: Path
) -> None:
    root = write_pets(tmp_path, [*good(), Pet("Bengal_1", size=(200, 150))])
    jpeg = root / "images" / "Bengal_1.jpg"
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2])
    pets = read_oxford_pets(root)
    assert len(pets.records) == 3  # the header is intact
    cache, usable = build_decode_cache(pets.records, 40, cache_dir, pets.report, progress=False)
    assert [r.image_id for r in usable] == ["Abyssinian_1", "Abyssinian_2"]
    assert pets.report.n_usable == 2
    (entry,) = pets.report.problems["unreadable_image"]
    assert "Bengal_1.jpg" in entry and "truncated" in entry
    assert "Bengal_1" not in cache.index


def test_an_image_that_cannot_be_opened_is_reported(tmp_path: Path) -> None:
    root = write_pets(tmp_path, [*good(), Pet("Bengal_1")])
    (root / "images" / "Bengal_1.jpg").write_bytes(b"not an image at all")
    pets = read_oxford_pets(root)
    assert names(pets.report, "unreadable_image") == ["Bengal_1.jpg"]
    assert len(pets.records) == 2


def test_a_decompression_bomb_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_pets(tmp_path, [*good(), Pet("Bengal_1", size=(400, 300))])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # PIL refuses more than twice this
    pets = read_oxford_pets(root)
    assert names(pets.report, "unreadable_image") == ["Bengal_1.jpg"]
    assert len(pets.records) == 2


def test_listed_image_without_xml_and_xml_without_image(tmp_path: Path) -> None:
    root = write_pets(tmp_path, [*good(), Pet("Bengal_1", boxes=None), Pet("Bengal_2")])
    (root / "images" / "Bengal_2.jpg").unlink()
    pets = read_oxford_pets(root)
    assert names(pets.report, "missing_annotation") == ["Bengal_1.jpg"]
    assert names(pets.report, "missing_image") == ["Bengal_2.xml"]
    assert len(pets.records) == 2


def test_images_in_no_list_are_probed_and_not_used(tmp_path: Path) -> None:
    root = write_pets(
        tmp_path, [*good(), Pet("Bengal_1", split=None), Pet("Bengal_2", fmt="GIF", split=None)]
    )
    pets = read_oxford_pets(root)
    assert names(pets.report, "not_in_list") == ["Bengal_1.jpg", "Bengal_2.jpg"]
    assert names(pets.report, "format_mismatch") == ["Bengal_2.jpg"]
    assert {r.image_id for r in pets.records} == {"Abyssinian_1", "Abyssinian_2"}


def test_malformed_list_lines_are_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    bad = ("Bengal_9 x 1 1", "Bengal_9 1", "Bengal_9 1 3 1", "Bengal_9 0 1 1", "Bengal_9 1 1 1 extra")
    pets = read_oxford_pets(write_pets(tmp_path, good(), extra_list_lines=bad))
    # list.txt = 3 header lines, then the bad lines in order
    assert names(pets.report, "malformed_entry") == [f"list.txt:{n}" for n in range(4, 9)]
    assert len(pets.records) == 2


def test_empty_folder_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no image files in .*images"):
        read_oxford_pets(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        read_oxford_pets(tmp_path / "missing")


def test_folder_without_xmls_raises_a_clear_error(tmp_path: Path) -> None:
    root = write_pets(tmp_path, [Pet("Abyssinian_1", boxes=None), Pet("Abyssinian_2", boxes=None)])
    with pytest.raises(DatasetError, match=r"no XML files in .*xmls") as info:
        read_oxford_pets(root)
    assert "missing_annotation" in str(info.value) and "petloc-data check" in str(info.value)


def test_folder_without_lists_raises_a_clear_error(tmp_path: Path) -> None:
    root = write_pets(tmp_path, good())
    for name in ("list", "trainval", "test"):
        (root / "annotations" / f"{name}.txt").unlink()
    with pytest.raises(DatasetError, match=r"no class list"):
        read_oxford_pets(root)


def test_symlink_loop_dangling_link_and_non_utf8_name_are_bad_names(tmp_path: Path) -> None:
    root = write_pets(tmp_path, good())
    images = root / "images"
    (images / "Bengal_1.jpg").symlink_to("Bengal_2.jpg")
    (images / "Bengal_2.jpg").symlink_to("Bengal_1.jpg")
    (images / "Bengal_3.jpg").symlink_to("nowhere.jpg")
    raw_name = os.fsencode(images) + b"/Bengal_\xff.jpg"
    with open(raw_name, "wb") as f:
        f.write(image_bytes("JPEG"))
    pets = read_oxford_pets(root)
    entries = pets.report.problems["bad_name"]
    assert len(entries) == 4
    assert any("Bengal_\\xff.jpg" in e for e in entries)
    links = sorted(n for n in names(pets.report, "bad_name") if not n.startswith("b'"))
    assert links == ["images/Bengal_1.jpg", "images/Bengal_2.jpg", "images/Bengal_3.jpg"]  # from ROOT
    assert "Too many levels of symbolic links" in next(e for e in entries if e.startswith("images/Bengal_1"))
    assert len(pets.records) == 2
    assert "bad_name" in pets.report.format_text()  # the report prints, whatever the names are


def test_two_files_with_one_stem_report_the_second(tmp_path: Path) -> None:
    root = write_pets(tmp_path, good())
    (root / "images" / "Abyssinian_1.png").write_bytes(image_bytes("PNG"))
    pets = read_oxford_pets(root)
    assert names(pets.report, "bad_name") == ["Abyssinian_1.png"]
    assert next(r for r in pets.records if r.image_id == "Abyssinian_1").path.name == "Abyssinian_1.jpg"


def test_report_rejects_unknown_kinds_and_lists_long_kinds_briefly() -> None:
    report = DataReport(root=Path("x"))
    with pytest.raises(KeyError):
        report.add("no_such_kind", "a.jpg")
    for i in range(12):
        report.add("missing_annotation", f"img_{i}.jpg")
    text = report.format_text(max_names=10)
    assert "img_9.jpg" in text and "img_10.jpg" not in text and "... and 2 more" in text
    assert "missing_annotation (left out, 12)" in text
    assert set(PROBLEMS) >= {"format_mismatch", "color_mode", "bad_name", "unreadable_image"}
