"""COCO JSON: ``images``, ``annotations`` and ``categories`` lists in one or several JSON files.

Every COCO JSON in ROOT, ROOT/annotations and one folder below ROOT is read (``files`` names them
instead; COCO's companion files ``captions_*``, ``person_keypoints_*``, ... are passed over), which
covers COCO itself (``annotations/instances_train2017.json``), Roboflow and CVAT exports
(``train/_annotations.coco.json``) and a single ``*.json``. A file's split comes from a word in its
name, else its folder's (:func:`~petloc.data.records.split_from_name`). A ``file_name`` is looked up
under ``image_dir``, the JSON's folder, its ``images/``, ``ROOT/images/<split folder>``, ``ROOT/<split
folder>`` (``train2017`` for ``instances_train2017.json``), ``ROOT/images`` and ROOT.

``bbox`` is ``[x, y, w, h]`` in 0-based pixel edges of the image entry's ``width`` x ``height``. The
class list is the names of the categories that a non-crowd box uses, in category-id order, so unused
super-categories (Roboflow's id 0) do not become classes. ``iscrowd`` regions are reported and ignored.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence
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
    listed,
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
COMPANIONS = ("captions_", "person_keypoints_", "stuff_", "panoptic_", "image_info_")  # no boxes of their own


def _json_files(index: FileIndex, root: Path) -> list[Path]:
    """``*.json`` in ROOT, ROOT/annotations and one folder below ROOT, in that order."""
    folders = [root, root / "annotations", *index.subfolders(root)]
    return list(dict.fromkeys(path for folder in folders for path in index.files(folder, (".json",))))


def _looks_like_coco(path: Path) -> bool:
    """The file's head names ``"images"``; else a small file parses to a dict with images and annotations."""
    try:
        with path.open("rb") as f:
            if b'"images"' in f.read(SNIFF_BYTES):
                return True
        if path.stat().st_size > DETECT_PARSE_MAX_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except JSON_ERRORS:
        return False
    return isinstance(data, dict) and "images" in data and "annotations" in data


def _detect(root: Path) -> bool:
    files = _json_files(FileIndex(root, DataReport(root)), root)  # detection reports nothing
    return any(_looks_like_coco(p) for p in files[:DETECT_MAX_FILES])


def _key(value: Any) -> Key | None:
    """An id as a dict key: an int (also from ``3.0`` or ``"3"``, as some tools write) or a non-empty
    string; None for anything else (bools, null, lists)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    if isinstance(value, str) and value.strip():
        try:
            return int(value)
        except ValueError:
            return value.strip()
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
    """Finds an image entry's ``file_name`` in the folders of one JSON (module doc) and names its id."""

    index: FileIndex
    bases: list[str]  # existing candidate folders, in order of precedence
    fallback: str  # the JSON's folder: where a missing image is reported
    ids: dict[str, str]  # image_id -> path from ROOT, for every JSON: ids stay unique
    prefixes: dict[str, str] = field(default_factory=dict)  # folder -> its path from ROOT + "/"

    def resolve(self, file_name: str) -> tuple[Path, str]:
        """(the first existing file, else the path under the JSON's folder; its image_id: the path from
        ROOT without suffix, or with it where two files differ only in it)."""
        name = file_name.replace("\\", "/")
        base, found = self.index.find(name, self.bases) or (self.fallback, local_name(name))
        if posixpath.isabs(found):
            rel = self.index.rel(found)
        else:
            if base not in self.prefixes:  # once per folder: a relpath per image costs more than the parse
                self.prefixes[base] = "" if (rel := self.index.rel(base)) == "." else rel + "/"
            rel = posixpath.normpath(self.prefixes[base] + found)
        image_id = to_image_id(rel)
        if self.ids.setdefault(image_id, rel) != rel:  # rel is normalized: one per file
            image_id = rel
            self.ids.setdefault(image_id, rel)
        return Path(base, found), image_id


def _bases(root: Path, json_path: Path, image_dir: str | None) -> list[str]:
    """The existing folders a ``file_name`` is looked up in, in the module doc's order."""
    folder = json_path.parent
    names = [json_path.stem.removeprefix("instances_"), json_path.stem]
    if folder != root and folder.name != "annotations":
        names.append(folder.name)
    candidates = [*([root / image_dir] if image_dir else []), folder, folder / "images"]
    candidates += [*(root / "images" / n for n in names), *(root / n for n in names), root / "images", root]
    return [p for p in dict.fromkeys(map(os.path.normpath, candidates)) if os.path.isdir(p)]


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
        data, problem = None, f"not valid JSON: {str(exc)[:120]}"
        coco_like = any(f'"{k}"'.encode() in raw for k in COCO_KEYS)
    else:
        problem = (
            None if isinstance(data, dict) else f"top level is a JSON {type(data).__name__}, not a COCO dict"
        )
        coco_like = isinstance(data, dict) and any(k in data for k in COCO_KEYS)
    if searched and not coco_like:
        ignored.append(source)
        return None
    if problem is None:
        missing = [f'"{k}"' for k in ("images", "annotations") if not isinstance(data.get(k), list)]
        problem = f"no {' and '.join(missing)} list: not a COCO detection file" if missing else None
    if problem is not None:
        report.add("bad_annotation", source, problem)
        return None
    return data


def _categories(data: dict, source: str, report: DataReport) -> dict[Key, str]:
    """Category id -> name; entries without an id or a name are reported, a repeated id keeps the first."""
    categories: dict[Key, str] = {}
    entries = data.get("categories")
    if entries is not None and not isinstance(entries, list):
        report.add("malformed_entry", source, '"categories" is not a list: every category_id is unknown')
        return categories
    for i, entry in enumerate(entries or []):
        key = _key(entry.get("id")) if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if key is None or not isinstance(name, str) or not name.strip():
            report.add("malformed_entry", f"{source}:categories[{i}]", "needs an id and a name")
        elif key in categories:
            report.add("malformed_entry", f"{source}:categories[{i}]", f"id {key!r} repeats: first kept")
        else:
            categories[key] = name.strip()
    return categories


def _read_file(
    data: dict, source: str, split: str | None, resolver: _Resolver, report: DataReport, used: dict[str, Key]
) -> tuple[list[Annotation], int]:
    """The annotations of one parsed COCO dict and how many image entries it declares; the categories
    its boxes use go into ``used`` (name -> its lowest id)."""
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
        elif key in images:
            report.add("malformed_entry", where, f"image id {key!r} repeats: first kept")
        else:
            images[key] = (file_name.strip(), _size(entry))

    objects: dict[Key, list[RawObject]] = {key: [] for key in images}
    crowds: dict[Key, int] = {}
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
                    "malformed_entry", where, f"category_id {entry['category_id']!r} is not in categories"
                )
                continue
            label = categories[category]
            if label not in used or _order(category) < _order(used[label]):
                used[label] = category
        x, y, w, h = values
        objects[image_key].append(RawObject((x, y, x + w, y + h), label))  # type: ignore[operator]

    annotations = []
    for key, (file_name, size) in images.items():
        path, image_id = resolver.resolve(file_name)
        name = f"{source}:{file_name}"
        if key in crowds:
            report.add("crowd_annotation", name, f"{crowds[key]} iscrowd region(s) ignored")
        annotations.append(Annotation(path, name, objects[key], size, split=split, image_id=image_id))
    return annotations, len(images)


def read_coco(
    root: Path, report: DataReport, files: list[str] | None = None, image_dir: str | None = None
) -> Parsed:
    """Every COCO JSON under ``root`` (or ``files``, relative to root), its images looked up under
    ``image_dir`` (relative to root) first; see the module doc."""
    index = FileIndex(root, report)
    if files is None:
        paths = _json_files(index, root)
        if companions := [p.name for p in paths if p.name.startswith(COMPANIONS)]:
            paths = [p for p in paths if p.name not in companions]
            report.notes.append(
                f"COCO companion files without object boxes not read: {listed(companions, 5)}"
            )
    else:
        paths = [root / f for f in ([files] if isinstance(files, str) else map(str, files))]
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
        source = index.rel(path)
        if not path.is_file():
            report.add("bad_annotation", source, "no such file")
            continue
        if (data := _load(path, source, report, files is None, ignored)) is None:
            continue
        folder = path.parent
        split = split_from_name(path.stem) or (split_from_name(folder.name) if folder != root else None)
        resolver = _Resolver(index, _bases(root, path, image_dir), os.path.normpath(folder), ids)
        parsed, n_images = _read_file(data, source, split, resolver, report, used)
        annotations.extend(parsed)
        report.n_images += n_images
        report.notes.append(f"{source}: {n_images} images, {f'split {split}' if split else 'no split named'}")
    if ignored:
        report.notes.append(f"{len(ignored)} JSON file(s) without COCO keys not read: {listed(ignored, 5)}")
    classes = sorted(used, key=lambda name: (_order(used[name]), name))
    return Parsed(annotations, {"class": classes} if classes else {})


def write_coco(images: Sequence[Labelled], classes: Sequence[str], out: Path, link: Link) -> None:
    """``images/`` + ``annotations/instances_<split>.json`` per split (``instances.json`` for images
    without one); category ids from 1 in class order; a score is the annotation's ``score`` (as
    COCO's detection results write it)."""
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
