"""CSV box lists: one row per box, ``filename,xmin,ymin,xmax,ymax[,class][,width,height]``.

Rows naming the same file are one image with several objects (first-seen order is kept). The
columns are found by name in a header row (any case), or by position without one; ``columns``
renames them (``{"filename": "image", "class": "label"}``) or gives 0-based positions
(``{"filename": 0, "xmin": 4}``: the one way to reorder a headerless file's columns). With
``header=None`` the first row is a header when it holds the filename column's name or anything
non-numeric where the coordinates would be; a headerless file is read in the common export order
``filename,xmin,ymin,xmax,ymax,class``. ``width,height``, where present, are the image size the
pixel boxes refer to, so a resized image gets its box rescaled (reported as ``size_mismatch``).

Coordinates (``coordinates``), stated because a CSV cannot say which it uses:

- ``voc`` (default): the rule shared with VOC XMLs, :func:`~petloc.data.records.voc_pixels_to_edges`:
  integers are 1-based inclusive pixels (``x0 = xmin - 1``, ``x1 = xmax``); a row with a fractional
  value is read as 0-based edges unchanged and reported as ``float_coordinates``;
- ``edges``: 0-based continuous pixel edges (``x0 = xmin``), what most Python tools write;
- ``normalized``: fractions of the image's width and height, in [0, 1].

Images are looked up in ``image_dir`` (relative to ROOT) when given, else, per file, in the CSV's
folder, its ``images/`` subfolder and ``ROOT/images``; a name written as an absolute path (often
one from another machine) is used if it exists, else its last part is looked up the same way.
``Annotation.image_id`` is the file name as written (``/`` for ``\\``) without its suffix.

A reader only parses: a bad row is a named ``malformed_entry`` (``FILE:LINE`` and what is wrong),
never a crash, and the file is read in one pass with the stdlib :mod:`csv` module, so 100,000
rows take about a second (one dict lookup per row, one directory listing per image folder).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from math import isfinite
from pathlib import Path

from petloc.data.files import FileIndex, Link, clean_name, local_name, place_image
from petloc.data.files import image_id as to_image_id
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
# Column positions of a headerless file: the order most exporters write (exports that put
# width,height first, like the raccoon set, carry a header in practice).
HEADERLESS = {"filename": 0, "xmin": 1, "ymin": 2, "xmax": 3, "ymax": 4, "class": 5}


@dataclass(frozen=True)
class Layout:
    """Where each of our keys sits in a row (0-based), and whether the first row is a header."""

    index: dict[str, int]
    header: bool


@dataclass
class _Image:
    """The rows of one file name so far: where it was first named, its annotated size, its boxes."""

    name: str
    where: str  # FILE:LINE of its first row
    size: tuple[int, int] | None
    objects: list[RawObject] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"{self.name} ({self.where})"


def _detect(root: Path) -> bool:
    """A ``*.csv`` file directly in ROOT."""
    return bool(FileIndex(root, DataReport(root)).files(root, (".csv",)))


def _csv_file(index: FileIndex, root: Path, file: str | None) -> Path:
    """The CSV to read: ``file`` (relative to ROOT), else the only ``*.csv`` in ROOT."""
    if file is not None:
        path = root / file
        if not path.is_file():
            raise DatasetError(f"data.options.file={file!r}: no file {path} (the path is relative to {root})")
        return path
    found = index.files(root, (".csv",))
    if not found:
        raise DatasetError(f"no *.csv file in {root}: name one with data.options.file=PATH (relative to it)")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DatasetError(
            f"several CSV files in {root} ({names}): pick one with data.options.file=NAME, "
            f"e.g. data.options.file={found[0].name}"
        )
    return found[0]


def _rows(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """(first line number, row) per CSV record, or (line, error text) for a record csv refuses.

    csv resets its state at every record, so one bad record (an oversized field, say) costs that
    record only. Quoted fields may span lines, so the number is the record's first line.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        before = reader.line_num
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if reader.line_num == before:  # consumed nothing: cannot happen, but never loop forever
                return
            yield before + 1, str(exc)
            continue
        yield before + 1, row


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _position(key: str, value: object, source: str) -> int:
    """A headerless file's column ``value`` for ``key`` as a 0-based position."""
    if (pos := _as_position(value)) is not None:
        return pos
    raise DatasetError(
        f"{source} is read without a header row (data.options.header=false, or the first row reads as "
        "data), so data.options.columns must give "
        f"0-based column positions, e.g. {{{key}: 0}}, not {key}: {value!r}; or set data.options.header=true"
    )


def _layout(
    first: list[str] | None, columns: Mapping[str, object], header: bool | None, source: str
) -> Layout:
    """Decide whether ``first`` is a header and where each key's column is (see the module doc)."""
    unknown = sorted(set(columns) - set(KEYS))
    if unknown:
        raise DatasetError(f"data.options.columns: unknown keys {unknown}; the keys are {list(KEYS)}")
    if header not in (None, True, False):
        raise DatasetError(f"data.options.header={header!r}: allowed values are [null, true, false]")
    if header is None:
        header = first is not None and _looks_like_header(first, columns)
    if not header:
        index = {
            key: _position(key, columns[key], source) if key in columns else pos
            for key, pos in HEADERLESS.items()
        }
        index.update({k: _position(k, v, source) for k, v in columns.items() if k not in index})
        return Layout(index, header=False)
    if first is None:
        raise DatasetError(f"{source}: data.options.header=true but the first row cannot be read")
    found: dict[str, int] = {}
    for i, cell in enumerate(first):
        found.setdefault(cell.strip().casefold(), i)  # a repeated name: its first column
    index = {}
    for key in KEYS:
        name = columns.get(key, key)
        if (i := _as_position(name)) is not None or (
            i := found.get(str(name).strip().casefold())
        ) is not None:
            index[key] = i
    missing = [str(columns.get(k, k)) for k in REQUIRED if k not in index]
    if missing:
        example = ", ".join(f"{k}: {columns.get(k, k)}" for k in REQUIRED)
        raise DatasetError(
            f"{source}: the header has no column {', '.join(map(repr, missing))}; its columns are "
            f"{[c.strip() for c in first]}. Name yours with data.options.columns={{{example}}} "
            "(keys: filename, xmin, ymin, xmax, ymax, and optional class, width, height)"
        )
    return Layout(index, header=True)


def _looks_like_header(first: list[str], columns: Mapping[str, object]) -> bool:
    """The filename column's name in the row, or a non-number where a headerless file has coordinates."""
    name = columns.get("filename", "filename")
    if _as_position(name) is None and any(
        cell.strip().casefold() == str(name).strip().casefold() for cell in first
    ):
        return True
    for key in ("xmin", "ymin", "xmax", "ymax"):
        pos = _as_position(columns.get(key, HEADERLESS[key]))
        if pos is None:  # a column *name* was given: only a header can have it
            return True
        if pos < len(first) and first[pos].strip() and not _is_number(first[pos]):
            return True
    return False


def _as_position(value: object) -> int | None:
    """A column given as a 0-based position (an int or a digit string); None for a name."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


class _Finder:
    """Finds the image a row names in the candidate folders, through the file index (one listing
    per folder, not a stat per file per folder: 100,000 missing images would cost seconds)."""

    def __init__(self, index: FileIndex, folders: list[Path]) -> None:
        self.index = index
        self.folders = list(dict.fromkeys(folders))
        self.found = 0

    def find(self, name: str) -> Path:
        """The image ``name`` names; a path that does not exist (reported missing by ``assemble``)."""
        found = self.index.find(name, self.folders)
        self.found += found is not None
        return Path(*(found or (self.folders[0], local_name(name))))


def _parse_rows(
    rows: Iterator[tuple[int, list[str] | str]],
    layout: Layout,
    label: str,
    coordinates: str,
    report: DataReport,
) -> tuple[dict[str, _Image], int, float]:
    """Group the rows by file name: (images in first-seen order, distinct names, largest coordinate)."""
    index = layout.index
    fi, x0i, y0i, x1i, y1i = (index[k] for k in REQUIRED)
    ci, wi, hi = index.get("class"), index.get("width"), index.get("height")
    need = max(fi, x0i, y0i, x1i, y1i) + 1
    images: dict[str, _Image] = {}
    names: set[str] = set()
    unlabeled: list[tuple[str, str]] = []  # (name, FILE:LINE) of rows without a class, resolved at the end
    largest = 0.0
    voc = coordinates == "voc"

    for line, row in rows:
        where = f"{label}:{line}"
        if isinstance(row, str):
            report.add("malformed_entry", where, f"unreadable CSV record ({row})")
            continue
        if len(row) < need:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            short = [k for k in REQUIRED if index[k] >= len(row)]
            one = len(row) == 1 and any(sep in row[0] for sep in ";\t")
            hint = " (separated by ';' or tabs? only ',' is read)" if one else ""
            report.add("malformed_entry", where, f"{len(row)} fields, no {', '.join(short)}{hint}")
            continue
        name = clean_name(row[fi])
        if not name:
            if any(cell.strip() for cell in row):  # else a line of empty fields: blank
                report.add("malformed_entry", where, "empty filename")
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
        if not (isfinite(values[0]) and isfinite(values[1]) and isfinite(values[2]) and isfinite(values[3])):
            report.add("malformed_entry", where, f"non-finite coordinate in {values}")
            continue
        size = None
        if wi is not None and hi is not None and (wi < len(row) or hi < len(row)):
            w, h = (row[wi].strip() if wi < len(row) else ""), (row[hi].strip() if hi < len(row) else "")
            if w or h:
                try:
                    size = (round(float(w)), round(float(h)))
                except (ValueError, OverflowError):
                    report.add(
                        "malformed_entry", where, f"width, height {w[:20]!r}, {h[:20]!r} are not numbers"
                    )
                    continue
                if size[0] <= 0 or size[1] <= 0:
                    size = None  # 0 is what some tools write for "unknown"
        cls = row[ci].strip() if ci is not None and ci < len(row) else ""

        if voc:
            box, fractional = voc_pixels_to_edges(values)
            if fractional:
                report.add("float_coordinates", where, ", ".join(row[index[k]].strip() for k in REQUIRED[1:]))
        else:
            box = values
        largest = max(largest, *values)

        image = images.get(name)
        if image is None:
            images[name] = image = _Image(name, where, size)
        elif size is not None and image.size is not None and size != image.size:
            sizes = f"{size[0]}x{size[1]} differs from {image.size[0]}x{image.size[1]}"
            report.add("malformed_entry", where, f"size {sizes} at {image.where}")
            continue
        elif image.size is None:
            image.size = size
        if not cls:
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
    label = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    if image_dir is not None:
        folders = [root / image_dir]
        if not folders[0].is_dir():
            raise DatasetError(f"data.options.image_dir={image_dir!r}: no folder {folders[0]}")
    else:
        folders = [path.parent, path.parent / "images", root / "images"]
    try:
        # utf-8-sig drops the byte-order mark spreadsheets write; undecodable bytes become U+FFFD,
        # so the rows holding them fail one by one instead of the whole file.
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        report.add("bad_annotation", label, str(exc)[:120])
        return Parsed([])

    rows = _rows(text)
    first: tuple[int, list[str] | str] | None = None
    for line, row in rows:
        if isinstance(row, str) or any(cell.strip() for cell in row):
            first = (line, row)
            break
    if first is None:
        return Parsed([], hint=f"{label} has no rows")
    layout = _layout(first[1] if isinstance(first[1], list) else None, columns or {}, header, label)
    body = rows if layout.header else itertools.chain([first], rows)
    images, report.n_images, largest = _parse_rows(body, layout, label, coordinates, report)

    if coordinates == "normalized" and largest > 1.5:
        report.notes.append(
            f"coordinates=normalized but values reach {largest:g}: pixels? data.options.coordinates=voc|edges"
        )
    elif coordinates != "normalized" and images and 0 < largest <= 1:
        report.notes.append(
            f"coordinates={coordinates} but no value exceeds 1: fractions? "
            "data.options.coordinates=normalized"
        )

    finder = _Finder(index, folders)
    ids: dict[str, str] = {}
    annotations = []
    for name, image in images.items():
        image_id = to_image_id(name)
        other = ids.setdefault(image_id, name)
        if other != name:
            report.add("bad_name", image.source, f"same id {image_id!r} as {other}: left out")
            continue
        annotations.append(
            Annotation(
                image=finder.find(name),
                source=image.source,
                objects=image.objects,
                size=image.size,
                normalized=coordinates == "normalized",
                image_id=image_id,
            )
        )
    return Parsed(annotations, hint=_hint(label, layout, report, annotations, finder))


def _hint(
    label: str, layout: Layout, report: DataReport, annotations: list[Annotation], finder: _Finder
) -> str | None:
    """The first missing piece, for the error raised when no image is usable (None: see the report)."""
    if not annotations:
        if report.count("malformed_entry"):
            return f"no row of {label} could be used (see malformed_entry below)"
        return f"{label} has a header but no data rows" if layout.header else f"{label} has no usable rows"
    if finder.found == 0:
        folders = ", ".join(str(f) for f in finder.folders)
        return (
            f"none of the images {label} names is in {folders}: data.options.image_dir=DIR names their folder"
        )
    return None


def write_csv(images: Sequence[Labelled], classes: Sequence[str], out: Path, link: Link) -> None:
    """``images/`` + ``labels.csv``: ``filename,width,height,class,xmin,ymin,xmax,ymax`` (VOC pixels,
    :func:`~petloc.data.records.voc_pixels`), a row per object, and a ``score`` column when any
    object has one. A CSV has no place for a split."""
    out.mkdir(parents=True, exist_ok=True)
    scored = any(s is not None for im in images for s in im.scores)
    with (out / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*KEYS[:1], "width", "height", "class", *KEYS[1:5], *(["score"] if scored else [])])
        for im in images:
            name = place_image(im, out / "images", link)
            for i, (box, label) in enumerate(zip(im.boxes, im.labels, strict=True)):
                score = [im.score(i)] if scored else []
                pixels = voc_pixels(box, im.width, im.height)
                writer.writerow([name, im.width, im.height, class_name(label), *pixels, *score])


register(Format("csv", read_csv, _detect, priority=50, looks_for="CSV", write=write_csv, keep_split=False))
