"""CSV box lists: one row per box, ``filename,xmin,ymin,xmax,ymax[,class][,width,height]``.

Rows naming the same file are one image with several objects. Columns are found by name in a header
row (any case), else by position (``filename,xmin,ymin,xmax,ymax,class``); ``columns`` renames them
(``{"filename": "image"}``) or gives 0-based positions (``{"filename": 0}``). With ``header=None``
the first row is a header when it holds the filename column's name or a non-number where a
coordinate would be. ``width,height`` are the image size the pixel boxes refer to.

``coordinates``, as a CSV cannot say which it uses: ``voc`` (the VOC XML rule,
:func:`~petloc.data.records.voc_pixels_to_edges`), ``edges`` (0-based pixel edges) or ``normalized``.
Images are looked up in ``image_dir`` (relative to ROOT), else in the CSV's folder, its ``images/``
and ``ROOT/images``, by :meth:`~petloc.data.files.FileIndex.find`. A bad row is a ``malformed_entry``
named ``FILE:LINE``.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from math import isfinite
from pathlib import Path

from petloc.data.files import FileIndex, Link, clean_name, image_id, local_name, place_image
from petloc.data.formats.registry import Format, Parsed, register
from petloc.data.records import (
    Annotation,
    DataReport,
    DatasetError,
    Labelled,
    RawObject,
    class_name,
    voc_pixels,
    voc_pixels_to_edges,
)

KEYS = ("filename", "xmin", "ymin", "xmax", "ymax", "class", "width", "height")
REQUIRED = KEYS[:5]
COORDINATES = ("voc", "edges", "normalized")
HEADERLESS = {"filename": 0, "xmin": 1, "ymin": 2, "xmax": 3, "ymax": 4, "class": 5}


@dataclass
class _Image:
    """The rows of one file name: its first row's ``FILE:LINE``, its annotated size, its boxes."""

    name: str
    where: str
    size: tuple[int, int] | None
    objects: list[RawObject] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"{self.name} ({self.where})"


def _detect(root: Path) -> bool:
    return bool(FileIndex(root, DataReport(root)).files(root, (".csv",)))


def _csv_file(index: FileIndex, root: Path, file: str | None) -> Path:
    """``file`` (relative to ROOT), else the only ``*.csv`` in ROOT."""
    if file is not None:
        if not (root / file).is_file():
            raise DatasetError(
                f"data.options.file={file!r}: no file {root / file} (the path is relative to {root})"
            )
        return root / file
    found = index.files(root, (".csv",))
    if not found:
        raise DatasetError(f"no *.csv file in {root}: name one with data.options.file=PATH (relative to it)")
    if len(found) > 1:
        raise DatasetError(
            f"several CSV files in {root} ({', '.join(p.name for p in found)}): pick one with "
            f"data.options.file=NAME, e.g. data.options.file={found[0].name}"
        )
    return found[0]


def _rows(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """(first line number, row) per CSV record, or (line, error) for a record csv refuses: csv
    starts afresh at every record, so a bad one costs itself only."""
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        line = reader.line_num + 1
        try:
            yield line, next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, str(exc)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _as_position(value: object) -> int | None:
    """A column given as a 0-based position (an int or a digit string); None for a name."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


def _layout(
    first: list[str] | None, columns: Mapping[str, object], header: bool | None, source: str
) -> tuple[dict[str, int], bool]:
    """(the column of each key, whether ``first`` is a header); see the module doc."""
    if unknown := sorted(set(columns) - set(KEYS)):
        raise DatasetError(f"data.options.columns: unknown keys {unknown}; the keys are {list(KEYS)}")
    if header not in (None, True, False):
        raise DatasetError(f"data.options.header={header!r}: allowed values are [null, true, false]")
    if header is None:
        header = first is not None and _looks_like_header(first, columns)
    if not header:
        index = {key: _as_position(value) for key, value in {**HEADERLESS, **columns}.items()}
        for key, position in index.items():
            if position is None:
                raise DatasetError(
                    f"{source} is read without a header row (data.options.header=false, or the first row "
                    f"reads as data), so data.options.columns must give 0-based column positions, e.g. "
                    f"{{{key}: 0}}, not {key}: {columns[key]!r}; or set data.options.header=true"
                )
        return index, False  # type: ignore[return-value]
    if first is None:
        raise DatasetError(f"{source}: data.options.header=true but the first row cannot be read")
    found: dict[str, int] = {}
    for i, cell in enumerate(first):
        found.setdefault(cell.strip().casefold(), i)  # a repeated name: its first column
    index = {}
    for key in KEYS:
        name = columns.get(key, key)
        position = _as_position(name)
        position = found.get(str(name).strip().casefold()) if position is None else position
        if position is not None:
            index[key] = position
    if missing := [str(columns.get(k, k)) for k in REQUIRED if k not in index]:
        example = ", ".join(f"{k}: {columns.get(k, k)}" for k in REQUIRED)
        raise DatasetError(
            f"{source}: the header has no column {', '.join(map(repr, missing))}; its columns are "
            f"{[c.strip() for c in first]}. Name yours with data.options.columns={{{example}}} "
            "(keys: filename, xmin, ymin, xmax, ymax, and optional class, width, height)"
        )
    return index, True


def _looks_like_header(first: list[str], columns: Mapping[str, object]) -> bool:
    """The filename column's name in the row, or a non-number where a headerless file has coordinates."""
    name = columns.get("filename", "filename")
    if _as_position(name) is None and str(name).strip().casefold() in {c.strip().casefold() for c in first}:
        return True
    for key in REQUIRED[1:]:
        pos = _as_position(columns.get(key, HEADERLESS[key]))
        if pos is None or (pos < len(first) and first[pos].strip() and not _is_number(first[pos])):
            return True  # (a column *name* was given: only a header can have it)
    return False


def _cell(row: list[str], i: int | None) -> str:
    return row[i].strip() if i is not None and i < len(row) else ""


def _parse_rows(
    rows: Iterator[tuple[int, list[str] | str]],
    index: dict[str, int],
    label: str,
    voc: bool,
    report: DataReport,
) -> tuple[dict[str, _Image], int, float]:
    """Group the rows by file name: (images in first-seen order, distinct names, largest coordinate)."""
    fi, x0i, y0i, x1i, y1i = (index[k] for k in REQUIRED)
    ci, wi, hi = index.get("class"), index.get("width"), index.get("height")
    need = max(fi, x0i, y0i, x1i, y1i) + 1
    images: dict[str, _Image] = {}
    names: set[str] = set()
    unlabeled: list[tuple[str, str]] = []  # (name, FILE:LINE) of rows without a class
    largest = 0.0
    for line, row in rows:
        where = f"{label}:{line}"
        if isinstance(row, str):
            report.add("malformed_entry", where, f"unreadable CSV record ({row})")
            continue
        if len(row) < need or not (name := clean_name(row[fi])):
            if any(cell.strip() for cell in row):  # else a blank line
                short = [k for k in REQUIRED if index[k] >= len(row)]
                one = len(row) == 1 and any(sep in row[0] for sep in ";\t")
                hint = " (separated by ';' or tabs? only ',' is read)" if one else ""
                why = f"{len(row)} fields, no {', '.join(short)}{hint}" if short else "empty filename"
                report.add("malformed_entry", where, why)
            continue
        names.add(name)
        try:
            values = (float(row[x0i]), float(row[y0i]), float(row[x1i]), float(row[y1i]))
        except ValueError:
            bad = [
                f"{k}={row[index[k]].strip()[:40]!r}" for k in REQUIRED[1:] if not _is_number(row[index[k]])
            ]
            report.add("malformed_entry", where, f"not a number: {', '.join(bad)}")
            continue
        if not all(map(isfinite, values)):
            report.add("malformed_entry", where, f"non-finite coordinate in {values}")
            continue
        size = None
        w, h = (_cell(row, wi), _cell(row, hi)) if wi is not None and hi is not None else ("", "")
        if w or h:
            try:
                size = (round(float(w)), round(float(h)))
            except (ValueError, OverflowError):
                report.add("malformed_entry", where, f"width, height {w[:20]!r}, {h[:20]!r} are not numbers")
                continue
            size = size if min(size) > 0 else None  # 0 is what some tools write for "unknown"
        box = values
        if voc:
            box, fractional = voc_pixels_to_edges(values)
            if fractional:
                report.add("float_coordinates", where, ", ".join(row[index[k]].strip() for k in REQUIRED[1:]))
        largest = max(largest, *values)
        image = images.setdefault(name, _Image(name, where, size))
        if size is not None and image.size not in (None, size):
            sizes = f"{size[0]}x{size[1]} differs from {image.size[0]}x{image.size[1]}"
            report.add("malformed_entry", where, f"size {sizes} at {image.where}")
            continue
        image.size = image.size or size
        if not (cls := _cell(row, ci)):
            unlabeled.append((name, where))
        image.objects.append(RawObject(box, cls or None))

    if unlabeled and len(unlabeled) < sum(len(i.objects) for i in images.values()):
        # Some rows have a class, so a row without one is a gap, not a box-only dataset.
        for name, where in unlabeled:
            report.add("malformed_entry", where, f"{name}: empty class (other rows have one)")
        for name in {n for n, _ in unlabeled}:
            images[name].objects = [o for o in images[name].objects if o.label is not None]
            if not images[name].objects:
                del images[name]
    return images, len(names), largest


def read_csv(
    root: Path,
    report: DataReport,
    file: str | None = None,
    columns: dict[str, str] | None = None,
    header: bool | None = None,
    coordinates: str = "voc",
    image_dir: str | None = None,
) -> Parsed:
    """The images and boxes of one CSV file (see the module doc for the options)."""
    if coordinates not in COORDINATES:
        raise DatasetError(
            f"data.options.coordinates={coordinates!r}: allowed values are {list(COORDINATES)}"
        )
    if columns is not None and not isinstance(columns, Mapping):
        raise DatasetError(
            f"data.options.columns={columns!r}: a mapping such as {{filename: image, class: label}}"
        )
    index = FileIndex(root, report)
    path = _csv_file(index, root, file)
    label = index.rel(path)
    if image_dir is not None:
        folders = [root / image_dir]
        if not folders[0].is_dir():
            raise DatasetError(f"data.options.image_dir={image_dir!r}: no folder {folders[0]}")
    else:
        folders = list(dict.fromkeys([path.parent, path.parent / "images", root / "images"]))
    try:
        # utf-8-sig drops a spreadsheet's byte-order mark; a bad byte fails its own row only (U+FFFD).
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        report.add("bad_annotation", label, str(exc)[:120])
        return Parsed([])
    rows = _rows(text)
    first = next(((n, r) for n, r in rows if isinstance(r, str) or any(c.strip() for c in r)), None)
    if first is None:
        return Parsed([], hint=f"{label} has no rows")
    layout, has_header = _layout(
        first[1] if isinstance(first[1], list) else None, columns or {}, header, label
    )
    body = rows if has_header else itertools.chain([first], rows)
    images, report.n_images, largest = _parse_rows(body, layout, label, coordinates == "voc", report)
    if coordinates == "normalized" and largest > 1.5:
        report.notes.append(
            f"coordinates=normalized but values reach {largest:g}: pixels? data.options.coordinates=voc|edges"
        )
    elif coordinates != "normalized" and images and 0 < largest <= 1:
        report.notes.append(
            f"coordinates={coordinates} but no value exceeds 1: fractions? "
            "data.options.coordinates=normalized"
        )

    ids: dict[str, str] = {}
    annotations = []
    found = 0
    normalized = coordinates == "normalized"
    for name, image in images.items():
        key = image_id(name)
        if (other := ids.setdefault(key, name)) != name:
            report.add("bad_name", image.source, f"same id {key!r} as {other}: left out")
            continue
        hit = index.find(name, folders)
        found += hit is not None
        path = Path(*(hit or (folders[0], local_name(name))))  # missing: reported by assemble
        annotations.append(
            Annotation(path, image.source, image.objects, image.size, normalized, image_id=key)
        )
    if not annotations:
        if report.count("malformed_entry"):
            hint = f"no row of {label} could be used (see malformed_entry below)"
        else:
            hint = f"{label} has a header but no data rows" if has_header else f"{label} has no usable rows"
    elif not found:
        hint = (
            f"none of the images {label} names is in {', '.join(map(str, folders))}: "
            "data.options.image_dir=DIR names their folder"
        )
    else:
        hint = None
    return Parsed(annotations, hint=hint)


def write_csv(images: Sequence[Labelled], classes: Sequence[str], out: Path, link: Link) -> None:
    """``images/`` + ``labels.csv``: ``filename,width,height,class,xmin,ymin,xmax,ymax`` in VOC pixels,
    a row per object, and ``score`` when any object has one. A CSV has no place for a split."""
    out.mkdir(parents=True, exist_ok=True)
    scored = any(s is not None for im in images for s in im.scores)
    with (out / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        head = ["filename", "width", "height", "class", *REQUIRED[1:]]
        writer.writerow([*head, "score"] if scored else head)
        for im in images:
            name = place_image(im, out / "images", link)
            for i, (box, label) in enumerate(zip(im.boxes, im.labels, strict=True)):
                pixels = voc_pixels(box, im.width, im.height)
                score = [im.score(i)] if scored else []
                writer.writerow([name, im.width, im.height, class_name(label), *pixels, *score])


register(Format("csv", read_csv, _detect, priority=50, looks_for="CSV", write=write_csv, keep_split=False))
