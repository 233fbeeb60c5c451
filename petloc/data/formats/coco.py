"""COCO JSON: ``images``, ``annotations`` and ``categories`` lists in one or several JSON files.

Layouts found in the wild, all read without options:

- COCO itself: ``ROOT/annotations/instances_{train,val}2017.json`` with the images in
  ``ROOT/{train,val}2017/`` or ``ROOT/images/{train,val}2017/``;
- Roboflow and CVAT exports: ``ROOT/{train,valid,test}/_annotations.coco.json`` beside the images;
- one ``ROOT/*.json`` or ``ROOT/annotations/*.json`` with the images in ``ROOT/images/`` or ``ROOT``.

Every COCO JSON in ROOT, ROOT/annotations and one folder below ROOT is read (``files`` names them
instead; COCO's companion files ``captions_*``, ``person_keypoints_*``, ``stuff_*``, ``panoptic_*``
and ``image_info_*`` are passed over). A file's split comes from a word in its name, else in its
folder's name: ``train``..., ``val``/``valid``/``validation``, ``test``... (whole words: ``latest``
is no test split). A ``file_name`` is looked up under ``image_dir``, the JSON's folder, its
``images/``, ``ROOT/images/<split folder>``, ``ROOT/<split folder>`` (``train2017`` for
``instances_train2017.json``), ``ROOT/images`` and ROOT; the first existing file wins.

``bbox`` is ``[x, y, w, h]`` in continuous 0-based pixel edges (x0 = x, x1 = x + w, no off-by-one as
in VOC) of the image entry's ``width`` x ``height``, which :func:`~petloc.data.records.assemble`
compares with the real image. Class = the category's name; the class list is the names of the
categories that at least one non-crowd box uses, in category-id order, so annotation tools' unused
super-categories (Roboflow's id 0) and gaps in the ids do not become classes. ``iscrowd`` regions
are crowds, not one object: reported and ignored.

A broken file or entry is reported and skipped; the rest is read. Each file is parsed once and
joined through dicts keyed by id, so 100,000 images take seconds.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petloc.data.files import FileIndex, Link, local_name, place_image
from petloc.data.files import image_id as to_image_id
from petloc.data.formats.registry import Format, Parsed, register
from petloc.data.records import (
    Annotation,
    DataReport,
    DatasetError,
    Labelled,
    RawObject,
    class_list,
    class_name,
    split_from_name,
)

Key = int | str

# What reading and parsing a JSON file can raise: JSONDecodeError and UnicodeDecodeError are
# ValueErrors (so is an integer literal too long to convert); deep nesting exhausts the recursion.
JSON_ERRORS = (ValueError, RecursionError, OSError)
SNIFF_BYTES = 64 * 1024  # COCO writers put "images" after info/licenses/categories: a KB can miss it
DETECT_MAX_FILES = 64  # a folder of per-image JSONs (LabelMe) must not make detection slow
DETECT_PARSE_MAX_BYTES = 4 * 1024 * 1024
COCO_KEYS = ("images", "annotations", "categories")
# COCO's own companion files beside instances_*.json: captions, keypoints, stuff and panoptic
# segments and test-image lists hold no object boxes of their own (or the persons again).
COMPANIONS = ("captions_", "person_keypoints_", "stuff_", "panoptic_", "image_info_")


def _json_files(index: FileIndex, root: Path) -> list[Path]:
    """``*.json`` in ROOT, ROOT/annotations and one folder below ROOT, in that order."""
    folders = [root, root / "annotations", *index.subfolders(root)]
    return list(dict.fromkeys(path for folder in folders for path in index.files(folder, (".json",))))


def _looks_like_coco(path: Path) -> bool:
    """The file's head names ``"images"``; else a small file parses to a dict with images and annotations."""
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
        if b'"images"' in head:
            return True
        if path.stat().st_size > DETECT_PARSE_MAX_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except JSON_ERRORS:
        return False
    return isinstance(data, dict) and "images" in data and "annotations" in data


def _detect(root: Path) -> bool:
    """A COCO JSON in ROOT, ROOT/annotations or one folder below (the first few JSONs are sniffed)."""
    files = _json_files(FileIndex(root, DataReport(root)), root)  # detection reports nothing
    return any(_looks_like_coco(p) for p in files[:DETECT_MAX_FILES])


def _key(value: Any) -> Key | None:
    """An id as a dict key: an int (also from ``3.0`` or ``"3"``, which some tools write) or a
    non-empty string; None for anything else (bools, null, lists)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return text
    return None


def _order(key: Key) -> tuple[int, int | str]:
    """Sort key for category ids that may mix ints and strings."""
    return (0, key) if isinstance(key, int) else (1, key)


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for strings, bools, null and ints too big for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _size(entry: dict[str, Any]) -> tuple[int, int] | None:
    """The image entry's (width, height) when both are positive numbers; else None (the image's own)."""
    width, height = _number(entry.get("width")), _number(entry.get("height"))
    if width is None or height is None or not (0 < width < 1e9 and 0 < height < 1e9):
        return None
    return round(width), round(height)


@dataclass
class _Resolver:
    """Finds an image entry's ``file_name`` under the candidate folders of one JSON (module doc)."""

    root: Path
    bases: list[str]  # existing candidate folders, in order of precedence
    fallback: str  # the JSON's folder: where a missing image is reported
    index: FileIndex
    ids: dict[str, str] = field(default_factory=dict)  # image_id -> path from ROOT: ids stay unique

    def __post_init__(self) -> None:
        # Each folder's path relative to ROOT, once: the image ids are built from it by string
        # concatenation (os.path.relpath per image costs more than the whole JSON parse).
        self.prefixes = {base: self._relative(base) for base in [*self.bases, self.fallback]}

    def _relative(self, path: str) -> str:
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return "" if rel == "." else rel + "/"

    def resolve(self, file_name: str) -> tuple[Path, str]:
        """(path of the first existing file, else the path under the JSON's folder; image_id)."""
        name = file_name.replace("\\", "/")
        base, found = self.index.find(name, self.bases) or (self.fallback, local_name(name))
        return Path(base, found), self._image_id(base, found)

    def _image_id(self, base: str, name: str) -> str:
        """The path relative to ROOT without suffix, with forward slashes: unique across split files
        (``train/a`` and ``valid/a``); the suffix is kept where two files differ only in it."""
        if posixpath.isabs(name):
            rel = self._relative(name).rstrip("/")
        else:
            rel = posixpath.normpath(self.prefixes[base] + name)
        image_id = to_image_id(rel)
        if self.ids.setdefault(image_id, rel) != rel:  # rel is normalized: one per file
            image_id = rel
            self.ids.setdefault(image_id, rel)
        return image_id


def _bases(root: Path, json_path: Path, image_dir: str | None) -> list[str]:
    """The folders a ``file_name`` is looked up in, in order, that exist: ``image_dir``, the JSON's
    folder, its ``images/``, ``ROOT/images/<name>`` and ``ROOT/<name>`` for the split folder names
    the JSON suggests (``instances_train2017.json`` -> ``train2017``; its own folder's name),
    ``ROOT/images``, ROOT."""
    folder = json_path.parent
    names = [json_path.stem.removeprefix("instances_"), json_path.stem]
    if folder != root and folder.name != "annotations":
        names.append(folder.name)
    candidates = [root / image_dir] if image_dir else []
    candidates += [folder, folder / "images"]
    candidates += [root / "images" / n for n in names] + [root / n for n in names]
    candidates += [root / "images", root]
    bases: list[str] = []
    for path in candidates:
        text = os.path.normpath(path)
        if text not in bases and os.path.isdir(text):
            bases.append(text)
    return bases


@dataclass
class _File:
    """What one JSON file contributed: its annotations, and its used categories (name -> id)."""

    annotations: list[Annotation] = field(default_factory=list)
    used: dict[str, Key] = field(default_factory=dict)


def _load(path: Path, source: str, report: DataReport, searched: bool, ignored: list[str]) -> dict | None:
    """The parsed top-level dict, or None: reported as ``bad_annotation``, or (when the search found
    the file and it names no COCO key at all) listed in ``ignored``, as another tool's JSON."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        report.add("bad_annotation", source, str(exc)[:120])
        return None
    try:
        data = json.loads(raw)
    except JSON_ERRORS as exc:
        if searched and not any(f'"{k}"'.encode() in raw for k in COCO_KEYS):
            ignored.append(source)
        else:
            report.add("bad_annotation", source, f"not valid JSON: {str(exc)[:120]}")
        return None
    if not isinstance(data, dict):
        if searched:
            ignored.append(source)
        else:
            report.add(
                "bad_annotation", source, f"top level is a JSON {type(data).__name__}, not a COCO dict"
            )
        return None
    if searched and not any(k in data for k in COCO_KEYS):
        ignored.append(source)
        return None
    missing = [k for k in ("images", "annotations") if not isinstance(data.get(k), list)]
    if missing:
        what = " and ".join(f'"{k}"' for k in missing)
        report.add("bad_annotation", source, f"no {what} list: not a COCO detection file")
        return None
    return data


def _categories(data: dict, source: str, report: DataReport) -> dict[Key, str]:
    """Category id -> name; entries without an id or a name are reported, a repeated id keeps the first."""
    categories: dict[Key, str] = {}
    entries = data.get("categories")
    if entries is None:
        return categories
    if not isinstance(entries, list):
        report.add("malformed_entry", source, '"categories" is not a list: every category_id is unknown')
        return categories
    for i, entry in enumerate(entries):
        key = _key(entry.get("id")) if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if key is None or not isinstance(name, str) or not name.strip():
            report.add("malformed_entry", f"{source}:categories[{i}]", "needs an id and a name")
            continue
        if key in categories:
            report.add("malformed_entry", f"{source}:categories[{i}]", f"id {key!r} repeats: first kept")
            continue
        categories[key] = name.strip()
    return categories


def _read_file(
    data: dict, source: str, split: str | None, resolver: _Resolver, report: DataReport
) -> tuple[_File, int]:
    """The annotations of one parsed COCO dict, and how many image entries it declares."""
    categories = _categories(data, source, report)
    images: dict[Key, tuple[str, tuple[int, int] | None]] = {}
    for i, entry in enumerate(data["images"]):
        where = f"{source}:images[{i}]"
        if not isinstance(entry, dict):
            report.add("malformed_entry", where, "not a JSON object: skipped")
            continue
        key, file_name = _key(entry.get("id")), entry.get("file_name")
        if key is None or not isinstance(file_name, str) or not file_name.strip():
            report.add("malformed_entry", where, f"no {'id' if key is None else 'file_name'}: skipped")
            continue
        if key in images:
            report.add("malformed_entry", where, f"image id {key!r} repeats: first kept")
            continue
        images[key] = (file_name.strip(), _size(entry))

    objects: dict[Key, list[RawObject]] = {key: [] for key in images}
    crowds: dict[Key, int] = {}
    used: dict[str, Key] = {}
    for i, entry in enumerate(data["annotations"]):
        where = f"{source}:annotations[{i}]"
        if not isinstance(entry, dict):
            report.add("malformed_entry", where, "not a JSON object")
            continue
        image_key = _key(entry.get("image_id"))
        if image_key not in images:
            report.add("malformed_entry", where, f"image_id {entry.get('image_id')!r} is not in images")
            continue
        if entry.get("iscrowd") in (1, True, "1"):
            crowds[image_key] = crowds.get(image_key, 0) + 1
            continue
        bbox = entry.get("bbox")
        values = [_number(v) for v in bbox] if isinstance(bbox, list) else []
        if len(values) != 4 or None in values:
            report.add("malformed_entry", where, f"bbox {str(bbox)[:60]} is not [x, y, w, h] numbers")
            continue
        label = None
        if entry.get("category_id") is not None:
            category = _key(entry.get("category_id"))
            if category not in categories:
                report.add(
                    "malformed_entry", where, f"category_id {entry.get('category_id')!r} is not in categories"
                )
                continue
            label = categories[category]
            if label not in used or _order(category) < _order(used[label]):
                used[label] = category
        x, y, w, h = values
        objects[image_key].append(RawObject((x, y, x + w, y + h), label))  # type: ignore[operator]

    result = _File(used=used)
    for key, (file_name, size) in images.items():
        path, image_id = resolver.resolve(file_name)
        name = f"{source}:{file_name}"
        if key in crowds:
            report.add("crowd_annotation", name, f"{crowds[key]} iscrowd region(s) ignored")
        result.annotations.append(
            Annotation(
                image=path, source=name, objects=objects[key], size=size, split=split, image_id=image_id
            )
        )
    return result, len(images)


def _given_files(root: Path, files: str | Iterable[str]) -> list[Path]:
    return [root / f for f in ([files] if isinstance(files, str) else [str(f) for f in files])]


def read_coco(
    root: Path, report: DataReport, files: list[str] | None = None, image_dir: str | None = None
) -> Parsed:
    """Every COCO JSON under ``root`` (or ``files``, relative to root), its images looked up under
    ``image_dir`` (relative to root) first; see the module doc."""
    searched = files is None
    index = FileIndex(root, report)
    paths = _json_files(index, root) if files is None else _given_files(root, files)
    companions = [p for p in paths if searched and p.name.startswith(COMPANIONS)]
    if companions:
        paths = [p for p in paths if p not in companions]
        names = ", ".join(p.name for p in companions[:5])
        report.notes.append(f"COCO companion files without object boxes not read: {names}")
    if not paths:
        raise DatasetError(
            f"no COCO JSON in {root}, {root / 'annotations'} or one folder below: "
            "name the files with data.options.files=[PATH, ...] (relative to the root)"
        )
    ids: dict[str, str] = {}
    annotations: list[Annotation] = []
    used: dict[str, Key] = {}
    ignored: list[str] = []
    for path in paths:
        source = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        if not path.is_file():
            report.add("bad_annotation", source, "no such file")
            continue
        data = _load(path, source, report, searched, ignored)
        if data is None:
            continue
        folder = path.parent
        split = split_from_name(path.stem) or (split_from_name(folder.name) if folder != root else None)
        bases = _bases(root, path, image_dir)
        resolver = _Resolver(root, bases, os.path.normpath(folder), index, ids)
        parsed, n_images = _read_file(data, source, split, resolver, report)
        annotations.extend(parsed.annotations)
        for name, key in parsed.used.items():
            if name not in used or _order(key) < _order(used[name]):
                used[name] = key
        report.n_images += n_images
        report.notes.append(f"{source}: {n_images} images, {f'split {split}' if split else 'no split named'}")
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        report.notes.append(f"{len(ignored)} JSON file(s) without COCO keys not read: {shown}")
    classes = sorted(used, key=lambda name: (_order(used[name]), name))
    return Parsed(annotations, {"class": classes} if classes else {})


def write_coco(images: Sequence[Labelled], classes: Sequence[str], out: Path, link: Link) -> None:
    """``images/`` + ``annotations/instances_<split>.json`` per split (``instances.json`` for images
    without one); category ids from 1 in class order; an object's score, where it has one, is the
    annotation's ``score`` (as COCO's detection results write it)."""
    names = class_list(images, classes)
    groups: dict[str | None, list[Labelled]] = {}
    for im in images:
        groups.setdefault(im.split, []).append(im)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, group in groups.items():
        entries, annotations = [], []
        for i, im in enumerate(group, start=1):
            name = place_image(im, out / "images", link)
            entries.append({"id": i, "file_name": name, "width": im.width, "height": im.height})
            for j, (box, label) in enumerate(zip(im.boxes, im.labels, strict=True)):
                x0, y0, x1, y1 = (v * s for v, s in zip(box, (im.width, im.height) * 2, strict=True))
                category = names.index(class_name(label)) + 1
                score = {} if im.score(j) is None else {"score": im.score(j)}
                bbox = [x0, y0, x1 - x0, y1 - y0]
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": i, "category_id": category, "bbox": bbox,
                     "area": bbox[2] * bbox[3], "iscrowd": 0, **score}
                )  # fmt: skip
        categories = [{"id": i, "name": n, "supercategory": "none"} for i, n in enumerate(names, start=1)]
        document = {"images": entries, "annotations": annotations, "categories": categories}
        file = "instances.json" if split is None else f"instances_{split}.json"
        (out / "annotations" / file).write_text(json.dumps(document))


register(Format("coco", read_coco, _detect, priority=20, looks_for="COCO JSON", write=write_coco))
