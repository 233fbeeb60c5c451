"""Tests for petloc.data.formats.csv: the CSV reader behind ``read_dataset(root, "csv")``.

Oracles are independent of the reader: boxes normalized by hand from the documented conventions
(VOC integers 1-based inclusive, edges 0-based, normalized fractions), tiny datasets written here
with PIL and the stdlib csv module whose right answer is known by construction, and the real
raccoon dataset, whose CSV export must give exactly what its VOC XMLs give.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from PIL import Image

from petloc.data.formats import FORMATS, detect_format, read_dataset
from petloc.data.formats.csv import read_csv
from petloc.data.records import DataReport, DatasetError, Record, RecordSet

HEADER = ("filename", "xmin", "ymin", "xmax", "ymax", "class")
# A VOC-integer box in an 80x60 image and its normalization by hand: ((xmin-1)/W, (ymin-1)/H, xmax/W, ymax/H).
ROW = ("a.jpg", 11, 6, 50, 40, "cat")
EXPECTED = (10 / 80, 5 / 60, 50 / 80, 40 / 60)


def write_image(path: Path, size: tuple[int, int] = (80, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 60, 30)).save(path)
    return path


def write_csv(path: Path, rows: Iterable[Sequence[object]], header: Sequence[str] | None = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def dataset(
    root: Path,
    rows: Iterable[Sequence[object]],
    header: Sequence[str] | None = HEADER,
    images: dict[str, tuple[int, int]] | None = None,
    csv_name: str = "labels.csv",
    image_folder: str = "images",
) -> Path:
    """ROOT/csv_name plus 80x60 (or given) images in ROOT/image_folder."""
    for name, size in (images if images is not None else {"a.jpg": (80, 60)}).items():
        write_image(root / image_folder / name, size)
    write_csv(root / csv_name, rows, header)
    return root


def only(records: RecordSet) -> Record:
    assert len(records.records) == 1, records.report.format_text()
    return records.records[0]


def assert_box(actual: Sequence[float], expected: Sequence[float]) -> None:
    assert actual == pytest.approx(expected, abs=1e-9)


# --- the module itself -----------------------------------------------------------------------


def test_module_named_csv_still_uses_the_stdlib_csv() -> None:
    import petloc.data.formats.csv as reader

    assert reader.csv is csv and hasattr(reader.csv, "reader")
    assert FORMATS["csv"].read is read_csv


# --- coordinate conventions, by hand ----------------------------------------------------------


def test_voc_integer_row_is_one_based_inclusive(tmp_path: Path) -> None:
    rs = read_dataset(dataset(tmp_path, [ROW]), "csv")
    r = only(rs)
    assert_box(r.box, EXPECTED)
    assert (r.image_id, r.path, r.width, r.height) == ("a", tmp_path / "images" / "a.jpg", 80, 60)
    assert rs.classes == ["cat"] and r.labels == {"class": 0}
    assert rs.report.n_images == 1 and not any(rs.report.problems.values())


def test_edges_are_zero_based(tmp_path: Path) -> None:
    rs = read_dataset(dataset(tmp_path, [("a.jpg", 10, 5, 50, 40, "cat")]), "csv", coordinates="edges")
    assert_box(only(rs).box, EXPECTED)
    assert rs.report.count("float_coordinates") == 0


def test_normalized_coordinates(tmp_path: Path) -> None:
    rows = [("a.jpg", 0.125, 5 / 60, 0.625, 40 / 60, "cat")]
    rs = read_dataset(dataset(tmp_path, rows), "csv", coordinates="normalized")
    assert_box(only(rs).box, EXPECTED)
    assert not rs.report.notes


def test_fractional_voc_row_is_read_as_edges_and_reported(tmp_path: Path) -> None:
    rs = read_dataset(dataset(tmp_path, [("a.jpg", 10.5, 5, 50, 40, "cat")]), "csv")
    assert_box(only(rs).box, (10.5 / 80, 5 / 60, 50 / 80, 40 / 60))
    assert rs.report.problems["float_coordinates"] == ["labels.csv:2: 10.5, 5, 50, 40"]


def test_pixel_values_under_coordinates_normalized_get_a_hint(tmp_path: Path) -> None:
    rows = [("a.jpg", 11, 6, 50, 40, "cat")]
    with pytest.raises(DatasetError, match="coordinates=normalized but values reach 50"):
        read_dataset(dataset(tmp_path, rows), "csv", coordinates="normalized")  # clipped to nothing


def test_unknown_coordinates_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"coordinates='pixels'.*'voc', 'edges', 'normalized'"):
        read_dataset(dataset(tmp_path, [ROW]), "csv", coordinates="pixels")


# --- header, columns --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header_row", "option"),
    [
        (HEADER, None),  # the default names
        (("FileName", "XMin", "YMin", "XMax", "YMax", "Class"), None),  # any case
        (None, None),  # headerless: the default order
        (HEADER, True),
        (None, False),
    ],
)
def test_header_or_none(tmp_path: Path, header_row: Sequence[str] | None, option: bool | None) -> None:
    rs = read_dataset(dataset(tmp_path, [ROW], header=header_row), "csv", header=option)
    assert_box(only(rs).box, EXPECTED)
    assert rs.classes == ["cat"]
    assert rs.report.count("malformed_entry") == 0


def test_header_false_reads_a_header_row_as_a_bad_row(tmp_path: Path) -> None:
    rs = read_dataset(dataset(tmp_path, [ROW]), "csv", header=False)
    assert_box(only(rs).box, EXPECTED)
    assert rs.report.problems["malformed_entry"] == [
        "labels.csv:1: not a number: xmin='xmin', ymin='ymin', xmax='xmax', ymax='ymax'"
    ]


def test_utf8_byte_order_mark_before_the_header(tmp_path: Path) -> None:
    dataset(tmp_path, [ROW])
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert_box(only(read_dataset(tmp_path, "csv")).box, EXPECTED)


def test_custom_column_names_in_any_order(tmp_path: Path) -> None:
    header = ("label", "x1", "y1", "x2", "y2", "image", "comment")
    rows = [("cat", 11, 6, 50, 40, "a.jpg", "hand-drawn")]
    columns = {"filename": "image", "class": "label", "xmin": "x1", "ymin": "y1", "xmax": "x2", "ymax": "y2"}
    rs = read_dataset(dataset(tmp_path, rows, header=header), "csv", columns=columns)
    assert_box(only(rs).box, EXPECTED)
    assert rs.classes == ["cat"]


@pytest.mark.parametrize("header", [False, None])
def test_headerless_columns_by_position(tmp_path: Path, header: bool | None) -> None:
    rows = [("a.jpg", 80, 60, "cat", 11, 6, 50, 40)]  # the raccoon order, without its header
    columns = {
        "filename": 0,
        "width": "1",
        "height": 2,
        "class": 3,
        "xmin": 4,
        "ymin": 5,
        "xmax": 6,
        "ymax": 7,
    }
    rs = read_dataset(dataset(tmp_path, rows, header=None), "csv", columns=columns, header=header)
    assert_box(only(rs).box, EXPECTED)
    assert rs.classes == ["cat"] and not any(rs.report.problems.values())


def test_positions_also_work_with_a_header(tmp_path: Path) -> None:
    header = ("file", "left", "top", "right", "bottom", "class")
    columns = {"filename": "file", "xmin": 1, "ymin": "2", "xmax": 3, "ymax": 4}
    rs = read_dataset(dataset(tmp_path, [ROW], header=header), "csv", columns=columns)
    assert_box(only(rs).box, EXPECTED)
    assert rs.report.count("malformed_entry") == 0


def test_missing_required_column_names_the_file_the_columns_and_the_fix(tmp_path: Path) -> None:
    dataset(tmp_path, [("a.jpg", 11, 6, 50, 40)], header=("image", "xmin", "ymin", "xmax", "ymax"))
    with pytest.raises(DatasetError) as err:
        read_dataset(tmp_path, "csv")
    message = str(err.value)
    assert "labels.csv" in message and "'filename'" in message
    assert "['image', 'xmin', 'ymin', 'xmax', 'ymax']" in message and "data.options.columns=" in message


def test_unknown_column_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown keys \\['x0'\\]"):
        read_dataset(dataset(tmp_path, [ROW]), "csv", columns={"x0": "left"})


def test_without_class_column_records_are_box_only(tmp_path: Path) -> None:
    rows = [("a.jpg", 11, 6, 50, 40)]
    rs = read_dataset(dataset(tmp_path, rows, header=HEADER[:5]), "csv")
    assert_box(only(rs).box, EXPECTED)
    assert rs.classes == [] and only(rs).labels == {}


def test_empty_class_among_classed_rows_is_malformed(tmp_path: Path) -> None:
    images = {"a.jpg": (80, 60), "b.jpg": (80, 60)}
    rows = [ROW, ("b.jpg", 11, 6, 50, 40, "")]
    rs = read_dataset(dataset(tmp_path, rows, images=images), "csv")
    assert [r.image_id for r in rs.records] == ["a"]
    assert rs.report.problems["malformed_entry"] == ["labels.csv:3: b.jpg: empty class (other rows have one)"]


# --- sizes, several objects, missing images ------------------------------------------------


def test_width_height_columns_rescale_a_resized_image(tmp_path: Path) -> None:
    # Annotated at 160x120; the image on disk is 80x60: VOC (21, 11, 100, 80) -> edges (20, 10, 100, 80)
    # in 160x120 -> the same normalized box as (11, 6, 50, 40) in 80x60.
    header = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
    rs = read_dataset(dataset(tmp_path, [("a.jpg", 160, 120, "cat", 21, 11, 100, 80)], header=header), "csv")
    assert_box(only(rs).box, EXPECTED)
    assert rs.report.problems["size_mismatch"] == ["a.jpg (labels.csv:2): annotated 160x120, image 80x60"]


def test_width_height_matching_the_image_is_no_problem(tmp_path: Path) -> None:
    header = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
    rs = read_dataset(dataset(tmp_path, [("a.jpg", 80, 60, "cat", 11, 6, 50, 40)], header=header), "csv")
    assert_box(only(rs).box, EXPECTED)
    assert not any(rs.report.problems.values())


def test_several_rows_per_image_keep_the_largest_or_skip(tmp_path: Path) -> None:
    images = {"a.jpg": (80, 60), "b.jpg": (80, 60)}
    rows = [
        ("a.jpg", 1, 1, 10, 10, "cat"),
        ROW,
        ("b.jpg", 11, 6, 50, 40, "dog"),
        ("a.jpg", 2, 2, 5, 5, "dog"),
    ]
    root = dataset(tmp_path, rows, images=images)
    rs = read_dataset(root, "csv")
    by_id = {r.image_id: r for r in rs.records}
    assert_box(by_id["a"].box, EXPECTED)
    assert rs.classes[by_id["a"].labels["class"]] == "cat"
    assert rs.report.problems["multiple_objects"] == [
        "a.jpg (labels.csv:2): 3 objects, the largest valid one is the box"
    ]
    assert rs.report.n_images == 2

    skipped = read_dataset(root, "csv", multi_object="skip")
    assert [r.image_id for r in skipped.records] == ["b"]
    assert skipped.report.count("multiple_objects_left_out") == 1


def test_missing_image_is_reported(tmp_path: Path) -> None:
    rows = [ROW, ("gone.jpg", 11, 6, 50, 40, "cat")]
    rs = read_dataset(dataset(tmp_path, rows), "csv")
    assert [r.image_id for r in rs.records] == ["a"]
    # Found nowhere: the path named is the CSV folder's, the first place looked.
    assert rs.report.problems["missing_image"] == [
        f"gone.jpg (labels.csv:3): no image {tmp_path / 'gone.jpg'}"
    ]
    assert rs.report.n_images == 2


def test_same_id_from_two_names_is_a_bad_name(tmp_path: Path) -> None:
    images = {"a.jpg": (80, 60), "a.png": (80, 60)}
    rows = [ROW, ("a.png", 11, 6, 50, 40, "cat")]
    rs = read_dataset(dataset(tmp_path, rows, images=images), "csv")
    assert [r.path.name for r in rs.records] == ["a.jpg"]
    assert rs.report.problems["bad_name"] == ["a.png (labels.csv:3): same id 'a' as a.jpg: left out"]


# --- bad input ---------------------------------------------------------------------------------


def test_malformed_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    write_image(tmp_path / "images" / "a.jpg")
    text = (
        "filename,xmin,ymin,xmax,ymax,class\n"  # 1
        "a.jpg,11,6,50\n"  # 2: too few fields
        "\n"  # 3: blank, skipped
        "a.jpg,11,six,50,40,cat\n"  # 4: not a number
        ",11,6,50,40,cat\n"  # 5: no filename
        "a.jpg,nan,6,50,40,cat\n"  # 6: not finite
        "a.jpg;11;6;50;40;cat\n"  # 7: another separator
        "a.jpg,11,6,50,40,cat\n"  # 8: good
    )
    (tmp_path / "labels.csv").write_text(text)
    rs = read_dataset(tmp_path, "csv")
    assert_box(only(rs).box, EXPECTED)
    assert rs.report.problems["malformed_entry"] == [
        "labels.csv:2: 4 fields, no ymax",
        "labels.csv:4: not a number: ymin='six'",
        "labels.csv:5: empty filename",
        "labels.csv:6: non-finite coordinate in (nan, 6.0, 50.0, 40.0)",
        "labels.csv:7: 1 fields, no xmin, ymin, xmax, ymax (separated by ';' or tabs? only ',' is read)",
    ]
    assert rs.report.count("multiple_objects") == 0  # bad rows add no object


def test_not_utf8_decodes_with_replacement_and_fails_row_by_row(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "images" / "café.jpg")
    body = "filename,xmin,ymin,xmax,ymax,class\na.jpg,11,6,50,40,cat\ncafé.jpg,11,6,50,40,cat\n"
    (tmp_path / "labels.csv").write_bytes(body.encode("latin-1"))
    rs = read_dataset(tmp_path, "csv")
    assert [r.image_id for r in rs.records] == ["a"]
    assert rs.report.count("missing_image") == 1 and "caf\ufffd.jpg" in rs.report.problems["missing_image"][0]


@pytest.mark.parametrize(
    ("text", "diagnosis"),
    [
        ("", "labels.csv has no rows"),
        ("\n \n", "labels.csv has no rows"),
        ("filename,xmin,ymin,xmax,ymax,class\n", "labels.csv has a header but no data rows"),
        ("filename,xmin,ymin,xmax,ymax,class\na.jpg,1,2\n", "no row of labels.csv could be used"),
    ],
)
def test_csv_without_usable_rows_is_a_clear_dataset_error(tmp_path: Path, text: str, diagnosis: str) -> None:
    write_image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DatasetError, match="no usable boxed image") as err:
        read_dataset(tmp_path, "csv")
    assert diagnosis in str(err.value)


def test_images_found_nowhere_name_the_folders_looked_in(tmp_path: Path) -> None:
    write_csv(tmp_path / "labels.csv", [ROW])
    with pytest.raises(DatasetError) as err:
        read_dataset(tmp_path, "csv")
    assert f"none of the images labels.csv names is in {tmp_path}, {tmp_path / 'images'}" in str(err.value)
    assert "data.options.image_dir=DIR" in str(err.value)


# --- which CSV, which images ---------------------------------------------------------------


def test_several_csv_files_need_the_file_option(tmp_path: Path) -> None:
    dataset(tmp_path, [ROW], csv_name="train.csv")
    write_csv(tmp_path / "val.csv", [ROW])
    with pytest.raises(DatasetError) as err:
        read_dataset(tmp_path, "csv")
    assert "train.csv, val.csv" in str(err.value) and "data.options.file=" in str(err.value)
    assert_box(only(read_dataset(tmp_path, "csv", file="val.csv")).box, EXPECTED)


def test_no_csv_or_a_missing_file_option_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no \*\.csv file in"):
        read_dataset(tmp_path, "csv")
    with pytest.raises(DatasetError, match=r"data\.options\.file='nope\.csv'"):
        read_dataset(tmp_path, "csv", file="nope.csv")


@pytest.mark.parametrize(
    ("csv_name", "image_folder"),
    [
        ("labels.csv", ""),  # images beside the CSV
        ("labels.csv", "images"),  # ROOT/images
        ("ann/train.csv", "ann"),  # beside a CSV in a subfolder
        ("ann/train.csv", "ann/images"),  # the subfolder's images/
        ("ann/train.csv", "images"),  # ROOT/images for a CSV in a subfolder
    ],
)
def test_images_are_found_beside_the_csv_or_in_images(
    tmp_path: Path, csv_name: str, image_folder: str
) -> None:
    dataset(tmp_path, [ROW], csv_name=csv_name, image_folder=image_folder)
    rs = read_dataset(tmp_path, "csv", file=csv_name)
    assert only(rs).path == tmp_path / image_folder / "a.jpg"
    assert_box(only(rs).box, EXPECTED)


def test_image_dir_option_and_subpaths(tmp_path: Path) -> None:
    write_image(tmp_path / "pics" / "set1" / "a.jpg")
    write_csv(tmp_path / "labels.csv", [("set1/a.jpg", 11, 6, 50, 40, "cat")])
    r = only(read_dataset(tmp_path, "csv", image_dir="pics"))
    assert (r.path, r.image_id) == (tmp_path / "pics" / "set1" / "a.jpg", "set1/a")
    with pytest.raises(DatasetError, match="image_dir='nope'"):
        read_dataset(tmp_path, "csv", image_dir="nope")


def test_absolute_paths_from_another_machine_fall_back_to_the_file_name(tmp_path: Path) -> None:
    rows = [("C:\\Users\\me\\raccoon\\a.jpg", 11, 6, 50, 40, "cat")]
    r = only(read_dataset(dataset(tmp_path, rows), "csv"))
    assert r.path == tmp_path / "images" / "a.jpg"
    here = tmp_path / "images" / "a.jpg"
    write_csv(tmp_path / "labels.csv", [(str(here), 11, 6, 50, 40, "cat")])
    assert only(read_dataset(tmp_path, "csv")).path == here


def test_detect_a_folder_with_a_csv_and_images(tmp_path: Path) -> None:
    dataset(tmp_path, [ROW], image_folder="")
    assert FORMATS["csv"].detect(tmp_path)
    assert not FORMATS["csv"].detect(tmp_path / "images")  # no such folder: False, no crash
    assert [n for n, f in FORMATS.items() if n != "csv" and f.detect(tmp_path)] == []
    assert detect_format(tmp_path) == "csv"


# --- the real raccoon dataset: the CSV export equals the VOC XMLs ----------------------------


@pytest.mark.realdata
def test_raccoon_csv_gives_the_same_records_as_its_voc_xmls(raccoon: Path) -> None:
    from_csv = read_dataset(raccoon, "csv")
    from_voc = read_dataset(raccoon, "voc")
    assert len(from_csv.records) == len(from_voc.records) == 200
    assert from_csv.report.n_images == 200
    assert from_csv.report.count("multiple_objects") == from_voc.report.count("multiple_objects") == 16
    assert from_csv.classes == from_voc.classes == ["raccoon"]
    for c, v in zip(from_csv.records, from_voc.records, strict=True):
        assert (c.image_id, c.path, c.width, c.height) == (v.image_id, v.path, v.width, v.height)
        assert c.box == pytest.approx(v.box, abs=1e-9)
        assert from_csv.classes[c.labels["class"]] == from_voc.classes[v.labels["class"]]
    # The same 16 images have several objects, so skipping them leaves the same 184.
    skip_csv = read_dataset(raccoon, "csv", multi_object="skip")
    skip_voc = read_dataset(raccoon, "voc", multi_object="skip")
    assert [r.image_id for r in skip_csv.records] == [r.image_id for r in skip_voc.records]
    assert len(skip_csv.records) == 184
    # Hand-read from the first CSV row: raccoon-1.jpg, 650x417, 81,88,522,408.
    first = next(r for r in from_csv.records if r.image_id == "raccoon-1")
    assert first.box == pytest.approx((80 / 650, 87 / 417, 522 / 650, 408 / 417), abs=1e-9)


# --- never a crash, and at scale --------------------------------------------------------------


FIELDS = [
    "",
    "a.jpg",
    "b.png",
    "x",
    "1",
    "0",
    "-5",
    "11",
    "50",
    "1e308",
    "nan",
    "inf",
    "1.5",
    '"',
    "\x00",
    "é",
]


def _fuzzed(rng: random.Random, good: bytes) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:  # truncated
        return good[: rng.randrange(len(good) + 1)]
    if kind == 1:  # random bytes written over a good file
        data = bytearray(good)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:  # pure noise
        return bytes(rng.randrange(256) for _ in range(rng.randrange(400)))
    rows = [[rng.choice(FIELDS) for _ in range(rng.randrange(9))] for _ in range(rng.randrange(1, 12))]
    lines = [",".join(row) for row in rows]  # raw, so quotes and NULs stay unbalanced
    if rng.random() < 0.5:
        lines.insert(0, ",".join(rng.sample((*HEADER, "width", "height"), rng.randint(1, 8))))
    return "\n".join(lines).encode("utf-8", errors="replace")


def test_fuzzed_csv_gives_records_or_a_dataset_error(tmp_path: Path) -> None:
    rng = random.Random(1234)
    images = {"a.jpg": (80, 60), "b.png": (80, 60)}
    for name, size in images.items():
        write_image(tmp_path / "images" / name, size)
    good_path = write_csv(
        tmp_path / "good.csv", [ROW, ("b.png", 1, 1, 80, 60, "dog"), ("a.jpg", 1, 1, 5, 5, "x")]
    )
    good = good_path.read_bytes()
    good_path.unlink()
    outcomes = {"records": 0, "error": 0}
    for case in range(300):
        data = _fuzzed(rng, good)
        (tmp_path / "labels.csv").write_bytes(data)
        options = {
            "header": rng.choice([None, None, True, False]),
            "coordinates": rng.choice(["voc", "edges", "normalized"]),
        }
        try:
            rs = read_dataset(tmp_path, "csv", multi_object=rng.choice(["largest", "skip"]), **options)
        except DatasetError:
            outcomes["error"] += 1
            continue
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"case {case} {options} {data[:200]!r}: {type(exc).__name__}: {exc}")
        outcomes["records"] += 1
        assert all(0 <= v <= 1 for r in rs.records for v in r.box)
    assert min(outcomes.values()) > 10, outcomes  # both outcomes are exercised


def test_100k_rows_are_all_parsed(tmp_path: Path) -> None:
    rows = (
        (f"img_{i // 2:06d}.jpg", 640, 480, "cat" if i % 3 else "dog", 11 + i % 7, 6, 50 + i % 5, 40)
        for i in range(100_000)
    )
    header = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
    write_csv(tmp_path / "labels.csv", rows, header)
    report = DataReport(root=tmp_path)
    parsed = read_csv(tmp_path, report)
    assert len(parsed.annotations) == report.n_images == 50_000
    first = parsed.annotations[0]
    assert first.image_id == "img_000000" and first.size == (640, 480) and len(first.objects) == 2
    assert first.objects[0].box == (10, 5, 50, 40) and first.objects[1].label == "cat"
