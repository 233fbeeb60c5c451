"""petloc.data.records, without a reader: the pixel conventions and their inverses, the clip, the
split a file or folder name gives, the problem report, and assemble() on annotations written out
here over images written with PIL.

Every expected box is computed by hand from the documented conventions: VOC integers are 1-based
inclusive pixels (``x0 = xmin - 1``, ``x1 = xmax``), a normalized box is edges over the image size.
(How each reader fills the annotations: tests/data/formats/.)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petloc.data.records import (
    PROBLEMS,
    Annotation,
    DataReport,
    DatasetError,
    Labelled,
    RawObject,
    Record,
    RecordSet,
    assemble,
    class_list,
    class_name,
    clip_normalized,
    normalize_box,
    probe_into,
    split_from_name,
    to_voc_pixels,
    voc_pixels,
    voc_pixels_to_edges,
)

W, H = 80, 60


# ---- pixel conventions ------------------------------------------------------------------------------


def test_voc_integers_are_one_based_inclusive_and_fractions_are_edges() -> None:
    assert voc_pixels_to_edges((11, 6, 50, 40)) == ((10, 5, 50, 40), False)
    assert voc_pixels_to_edges((11.0, 6.0, 50.0, 40.0)) == ((10, 5, 50, 40), False)
    assert voc_pixels_to_edges((10.5, 6, 50, 40)) == ((10.5, 6, 50, 40), True)


def test_to_voc_pixels_inverts_the_reading_to_a_tenth_of_a_pixel() -> None:
    assert to_voc_pixels((0.2, 0.125, 0.5, 1.0), 50, 40) == (11.0, 6.0, 25.0, 40.0)
    assert to_voc_pixels((0.1234, 0, 1, 1), 100, 10) == (13.3, 1.0, 100.0, 10.0)
    # an XML box read, normalized and mapped back gives its own values
    edges, _ = voc_pixels_to_edges((11, 6, 50, 40))
    normalized, _ = normalize_box(edges, W, H)
    assert to_voc_pixels(normalized, W, H) == (11, 6, 50, 40)


def test_voc_pixels_writes_integers_on_pixel_edges_and_edges_otherwise() -> None:
    on_edges = (10 / W, 15 / H, 40 / W, 60 / H)
    assert voc_pixels(on_edges, W, H) == (11, 16, 40, 60)
    between = (8.5 / W, 15 / H, 40 / W, 60 / H)
    assert voc_pixels(between, W, H) == (8.5, 15, 40, 60)
    for box in (on_edges, between):  # read back exactly
        edges, _ = voc_pixels_to_edges(voc_pixels(box, W, H))
        assert normalize_box(edges, W, H) == (pytest.approx(box), False)


def test_normalize_divides_by_the_size_and_clips_to_the_image() -> None:
    assert normalize_box((10, 5, 50, 40), W, H) == ((10 / W, 5 / H, 50 / W, 40 / H), False)
    assert normalize_box((-8, 5, 50, 66), W, H) == ((0.0, 5 / H, 50 / W, 1.0), True)


@pytest.mark.parametrize(
    "box",
    [
        (math.nan, 5, 50, 40),
        (10, 5, math.inf, 40),
        (50, 5, 10, 40),  # inverted
        (10, 5, 10, 40),  # zero width
        (90, 5, 100, 40),  # right of the image
        (10, -20, 50, 0),  # above it
    ],
)
def test_nothing_valid_left_is_none(box: tuple[float, float, float, float]) -> None:
    assert normalize_box(box, W, H) is None


def test_a_clip_within_rounding_is_not_reported() -> None:
    assert clip_normalized((0.0, 0.0, 1 + 1e-7, 1.0)) == ((0.0, 0.0, 1.0, 1.0), False)
    assert clip_normalized((-0.01, 0.0, 1.0, 1.0)) == ((0.0, 0.0, 1.0, 1.0), True)


# ---- records, labelled images, class names ----------------------------------------------------------


def test_a_record_lists_its_box_then_the_other_objects() -> None:
    record = Record("a", Path("a.jpg"), W, H, (0.1, 0.2, 0.5, 0.6), others=((0.6, 0.6, 0.7, 0.9),))
    boxes = record.boxes()
    assert boxes.dtype == np.float64
    assert boxes.tolist() == [[0.1, 0.2, 0.5, 0.6], [0.6, 0.6, 0.7, 0.9]]
    assert Record("b", Path("b.jpg"), W, H, (0, 0, 1, 1)).boxes().shape == (1, 4)


def test_a_labelled_image_has_a_score_per_object_or_none() -> None:
    image = Labelled(
        "sub/cat.jpg", Path("cat.jpg"), W, H, ((0, 0, 1, 1), (0, 0, 0.5, 0.5)), ("cat", None), (0.9,)
    )
    assert image.stem == "cat"
    assert (image.score(0), image.score(1)) == (0.9, None)


def test_class_list_keeps_the_given_classes_first_and_names_unlabelled_objects() -> None:
    def image(*labels: str | None) -> Labelled:
        return Labelled("x.jpg", Path("x.jpg"), W, H, tuple((0, 0, 1, 1) for _ in labels), labels)

    assert class_name(None) == "object" and class_name("dog") == "dog"
    assert class_list([image("dog", "ant"), image("cat")], ["cat"]) == ["cat", "ant", "dog"]
    assert class_list([image(None)], []) == ["object"]
    assert class_list([image(None, "dog")], ["zebra"]) == ["zebra", "dog", "object"]


def record_set(*splits: str | None) -> RecordSet:
    records = [Record(f"r{i}", Path(f"r{i}.jpg"), W, H, (0, 0, 1, 1), split=s) for i, s in enumerate(splits)]
    return RecordSet(Path("root"), "voc", records, {"class": ["cat", "dog"]}, DataReport(Path("root")))


@pytest.mark.parametrize(
    ("splits", "has_split"),
    [
        (("train", "val"), True),
        (("train", "test", "train"), True),
        (("train", "val", None), False),  # one record without a split
        (("train", "train"), False),  # nothing to validate on
        (("val", "test"), False),  # nothing to train on
    ],
)
def test_a_dataset_brings_its_split_when_every_record_has_one_of_train_and_val_or_test(
    splits: tuple[str | None, ...], has_split: bool
) -> None:
    assert record_set(*splits).has_split is has_split


def test_the_class_list_is_the_class_label_set() -> None:
    assert record_set("train").classes == ["cat", "dog"]
    assert RecordSet(Path("r"), "yolo", [], {}, DataReport(Path("r"))).classes == []


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("instances_train2017", "train"),
        ("instances_val2017", "val"),
        ("valid", "val"),
        ("validation", "val"),
        ("image_info_test-dev2017", "test"),
        ("trainval", "train"),
        ("_annotations.coco", None),
        ("latest", None),
        ("interval", None),
    ],
)
def test_split_from_name_reads_a_whole_word(name: str, split: str | None) -> None:
    assert split_from_name(name) == split


# ---- the report -------------------------------------------------------------------------------------


def test_the_report_lists_problems_in_their_order_with_what_was_done() -> None:
    report = DataReport(
        Path("pets"), format="voc", n_images=5, n_usable=3, notes=["the test split is unboxed"]
    )
    report.add("missing_annotation", "c.jpg")
    report.add("box_clipped", "a.xml", "box (-1, 0, 5, 5)")
    report.add("box_clipped", "b.xml")
    assert report.count("box_clipped") == 2 and report.count("no_object") == 0
    assert report.format_text().splitlines() == [
        "dataset pets (format: voc): 5 images, 3 usable boxed images",
        "  the test split is unboxed",
        f"  box_clipped (fixed up, 2): {PROBLEMS['box_clipped'][1]}",
        "    - a.xml: box (-1, 0, 5, 5)",
        "    - b.xml",
        f"  missing_annotation (left out, 1): {PROBLEMS['missing_annotation'][1]}",
        "    - c.jpg",
    ]


def test_the_report_shortens_long_lists_and_says_when_all_is_well() -> None:
    report = DataReport(Path("pets"))
    assert report.format_text().splitlines()[1:] == ["  no problems found"]
    for i in range(5):
        report.add("no_object", f"{i}.xml")
    assert report.format_text(max_names=2).splitlines()[2:] == [
        "    - 0.xml",
        "    - 1.xml",
        "    ... and 3 more",
    ]


def test_an_unknown_problem_kind_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown problem kind 'typo'"):
        DataReport(Path("pets")).add("typo", "a.jpg")


# ---- probing and assembling -------------------------------------------------------------------------


def write_image(
    path: Path, size: tuple[int, int] = (W, H), mode: str = "RGB", fmt: str | None = None, **params: object
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path, format=fmt, **params)
    return path


def orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def test_probe_into_reports_what_petloc_works_around(tmp_path: Path) -> None:
    report = DataReport(tmp_path)
    assert probe_into(write_image(tmp_path / "png.jpg", (30, 20), "RGBA", "PNG"), report) == (30, 20)
    assert probe_into(write_image(tmp_path / "turned.jpg", exif=orientation(6)), report) == (W, H)
    for value in (0, 1):  # unset, and upright
        assert probe_into(write_image(tmp_path / f"upright{value}.jpg", exif=orientation(value)), report)
    assert probe_into(write_image(tmp_path / "plain.jpg"), report) == (W, H)
    (tmp_path / "notes.jpg").write_text("no image")
    assert probe_into(tmp_path / "notes.jpg", report) is None
    (unreadable,) = report.problems.pop("unreadable_image")
    assert unreadable.startswith("notes.jpg: ")  # then PIL's reason
    assert report.problems == {
        "format_mismatch": ["png.jpg: is PNG"],
        "color_mode": ["png.jpg: RGBA"],
        "exif_orientation": ["turned.jpg: orientation 6"],
    }


def pixel_box(
    x0: float, y0: float, x1: float, y1: float, label: str | None = "cat", difficult: bool = False
) -> RawObject:
    return RawObject((x0, y0, x1, y1), label, difficult)


def annotation(image: Path, *objects: RawObject, **keys: object) -> Annotation:
    return Annotation(image, f"{image.stem}.xml", list(objects), **keys)


def test_assemble_normalizes_sorts_and_indexes_the_classes(tmp_path: Path) -> None:
    b = write_image(tmp_path / "b.jpg")
    a = write_image(tmp_path / "a.png", (40, 20), fmt="PNG")
    dataset = assemble(
        [annotation(b, pixel_box(8, 6, 40, 30, "dog"), split="val"), annotation(a, pixel_box(0, 0, 10, 20))],
        tmp_path,
        "voc",
        DataReport(tmp_path),
    )
    assert dataset.label_sets == {"class": ["cat", "dog"]}  # sorted names that occur
    assert dataset.records == [
        Record("a", a, 40, 20, (0.0, 0.0, 0.25, 1.0), {"class": 0}),
        Record("b", b, W, H, (0.1, 0.1, 0.5, 0.5), {"class": 1}, "val"),
    ]
    assert dataset.report.n_usable == 2 and dataset.report.format == "voc"
    assert not any(dataset.report.problems.values())


def test_boxes_follow_the_annotated_size_or_are_already_normalized(tmp_path: Path) -> None:
    """An annotation made on a 160x120 copy of the 80x60 image: its boxes are rescaled (and
    reported); a normalized box is used as it is."""
    a, b = write_image(tmp_path / "a.jpg"), write_image(tmp_path / "b.jpg")
    report = DataReport(tmp_path)
    dataset = assemble(
        [
            annotation(a, pixel_box(16, 12, 80, 60), size=(160, 120)),
            annotation(b, pixel_box(0.25, 0.5, 0.75, 1.0), normalized=True, size=(1000, 1000)),
        ],
        tmp_path,
        "coco",
        report,
    )
    assert [r.box for r in dataset.records] == [(0.1, 0.1, 0.5, 0.5), (0.25, 0.5, 0.75, 1.0)]
    assert report.problems == {"size_mismatch": ["a.xml: annotated 160x120, image 80x60"]}


def test_the_largest_valid_object_is_the_box_and_the_next_largest_are_in_view(tmp_path: Path) -> None:
    """Validity comes before size: the box inverted on both axes has the largest 'area' but none."""
    image = write_image(tmp_path / "a.jpg")
    objects = [
        pixel_box(0, 0, 8, 6, "s"),  # area 48
        pixel_box(80, 60, 0, 0, "inverted"),
        pixel_box(0, 0, 40, 30, "l"),  # 1200
        pixel_box(0, 0, 16, 12, None),  # 192
        pixel_box(0, 0, 24, 18, "m", difficult=True),  # 432
        pixel_box(0, 0, 4, 3, "xs"),  # 12: a fifth valid object, beyond MAX_OBJECTS
    ]
    report = DataReport(tmp_path)
    (record,) = assemble([annotation(image, *objects)], tmp_path, "voc", report).records
    assert record.box == (0.0, 0.0, 0.5, 0.5) and record.labels == {"class": 0}
    assert record.others == ((0.0, 0.0, 0.3, 0.3), (0.0, 0.0, 0.2, 0.2), (0.0, 0.0, 0.1, 0.1))
    assert record.other_classes == ("m", None, "s")
    assert report.problems == {
        "multiple_objects": ["a.xml: 6 objects, the largest valid one is the box"],
        "difficult_object": ["a.xml"],
    }
    (every,) = assemble(
        [annotation(image, *objects)], tmp_path, "voc", DataReport(tmp_path), max_objects=None
    ).records
    assert len(every.others) == 4

    report = DataReport(tmp_path)
    with pytest.raises(DatasetError):
        assemble([annotation(image, *objects)], tmp_path, "voc", report, multi_object="skip")
    assert report.problems["multiple_objects_left_out"] == ["a.xml: 6 objects"]


def test_each_unusable_annotation_is_named_once_and_the_rest_are_used(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.jpg")
    clipped = write_image(tmp_path / "clipped.jpg")
    empty = write_image(tmp_path / "empty.jpg")
    outside = write_image(tmp_path / "outside.jpg")
    report = DataReport(tmp_path)
    dataset = assemble(
        [
            annotation(good, pixel_box(8, 6, 40, 30)),
            annotation(good, pixel_box(0, 0, 80, 60)),  # the same image again
            annotation(tmp_path / "gone.jpg", pixel_box(8, 6, 40, 30)),
            annotation(empty),
            annotation(outside, pixel_box(90, 6, 100, 30)),
            annotation(clipped, pixel_box(-8, 6, 40, 66)),
        ],
        tmp_path,
        "csv",
        report,
    )
    assert [(r.image_id, r.box) for r in dataset.records] == [
        ("clipped", (0.0, 0.1, 0.5, 1.0)),
        ("good", (0.1, 0.1, 0.5, 0.5)),
    ]
    assert report.problems == {
        "malformed_entry": ["good.xml: good.jpg is annotated twice: first kept"],
        "missing_image": [f"gone.xml: no image {tmp_path / 'gone.jpg'}"],
        "no_object": ["empty.xml"],
        "invalid_box": ["outside.xml: box (90, 6, 100, 30) in a 80x60 frame"],
        "box_clipped": ["clipped.xml: box (-8, 6, 40, 66)"],
    }


def test_fixed_label_sets_keep_their_order_and_refuse_other_names(tmp_path: Path) -> None:
    """A format's own class list (COCO categories, Oxford's CLASS-IDs) fixes the indices; an image's
    label (Oxford's list.txt) goes before its object's name."""
    images = [write_image(tmp_path / f"{name}.jpg") for name in ("a", "b", "c")]
    report = DataReport(tmp_path)
    dataset = assemble(
        [
            annotation(images[0], pixel_box(8, 6, 40, 30, "dog")),
            annotation(
                images[1], pixel_box(8, 6, 40, 30, "dog"), labels={"class": "zebra", "species": "cat"}
            ),
            annotation(images[2], pixel_box(8, 6, 40, 30, "wolf")),
        ],
        tmp_path,
        "oxford",
        report,
        label_sets={"class": ["zebra", "dog"]},
    )
    assert dataset.label_sets == {"class": ["zebra", "dog"], "species": ["cat"]}
    assert [r.labels for r in dataset.records] == [{"class": 1}, {"class": 0, "species": 0}]
    assert report.problems == {"malformed_entry": ["c.xml: class 'wolf' is not in the dataset's class list"]}


def test_nothing_usable_is_a_dataset_error_with_the_hint_and_the_report(tmp_path: Path) -> None:
    report = DataReport(tmp_path)
    with pytest.raises(DatasetError) as error:
        assemble(
            [annotation(write_image(tmp_path / "a.jpg"))], tmp_path, "yolo", report, hint="no labels/ folder"
        )
    message = str(error.value)
    assert message.startswith(
        f"no usable boxed image in {tmp_path} (read as format 'yolo'): no labels/ folder\n"
    )
    assert report.format_text() in message and "`petloc-data check ROOT`" in message
    with pytest.raises(
        ValueError, match=r"data.multi_object='all': allowed values are \['largest', 'skip'\]"
    ):
        assemble([], tmp_path, "yolo", DataReport(tmp_path), multi_object="all")  # type: ignore[arg-type]
