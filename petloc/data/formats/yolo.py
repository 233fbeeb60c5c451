"""YOLO txt labels: one ``class cx cy w h`` line per object, fractions of the image's size.

An image's label file is its path with the last ``images`` folder replaced by ``labels`` and the
suffix by ``.txt`` (Ultralytics' rule: ``images/train/x.jpg`` + ``labels/train/x.txt``, Roboflow's
``train/images`` + ``train/labels``), else ``x.txt`` beside ``x.jpg``. A polygon line (an odd count of
at least 7 numbers) is read as its bounding box, a pose line (the yaml has ``kpt_shape``) as its first
five numbers; any other count is a malformed entry. A value outside [0, 1] is not what YOLO writes,
so its line is an invalid box, not clipped. An image without a label file (a "background" image) or
with an empty one has no object.

Class names come from the dataset yaml's ``names:`` (a list or ``{index: name}``; ``data.yaml``,
``dataset.yaml``, any ``*.yaml`` in ROOT with ``names``, or the ``yaml`` option), else from a
``classes.txt``, else are the class indices. A ``train``/``val``/``test`` folder in an image's path
(:func:`~petloc.data.records.split_from_name`) gives its split.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml import YAMLError, safe_load

from petloc.data.files import FileIndex, Link, place_image
from petloc.data.formats.registry import Format, Parsed, register
from petloc.data.images import IMAGE_SUFFIXES
from petloc.data.records import (
    Annotation,
    Box,
    DataReport,
    DatasetError,
    Labelled,
    RawObject,
    class_list,
    class_name,
    listed,
    split_from_name,
)

LINE_FORMAT = "expected 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...')"
YAML_NAMES = ("data.yaml", "dataset.yaml")
# The largest class index accepted where it sets the class count (a names dict, or no names at all):
# one garbage line or key must not make a list of a billion names.
MAX_CLASSES = 100_000


@dataclass
class _Tree:
    """What one walk of ROOT found; paths are relative to ROOT, with ``/``."""

    images: list[tuple[str, str]] = field(default_factory=list)  # (folder, file name)
    labels: dict[str, str] = field(default_factory=dict)  # "folder/stem" -> path of the .txt
    txt_folders: set[str] = field(default_factory=set)  # "folder/stem" of folders named stem.txt
    classes_txt: list[str] = field(default_factory=list)
    yamls: list[str] = field(default_factory=list)  # file names in ROOT itself


def _scan(root: Path, report: DataReport) -> _Tree:
    tree = _Tree()
    for rel, listing in FileIndex(root, report).walk():
        prefix = f"{rel}/" if rel else ""
        tree.txt_folders.update(prefix + n[:-4] for n in listing.folders if n.lower().endswith(".txt"))
        for name in listing.files:
            lower = name.lower()
            if lower.endswith(IMAGE_SUFFIXES):
                tree.images.append((rel, name))
            elif lower == "classes.txt":
                tree.classes_txt.append(prefix + name)
            elif lower.endswith(".txt"):
                tree.labels.setdefault(prefix + name[:-4], prefix + name)
            elif not rel and lower.endswith((".yaml", ".yml")):
                tree.yamls.append(name)
    return tree


def _swap_last(parts: list[str], old: str, new: str) -> list[str] | None:
    """``parts`` with its last ``old`` replaced by ``new``; None when there is none."""
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == old:
            return [*parts[:i], new, *parts[i + 1 :]]
    return None


def _split_of(parts: list[str]) -> tuple[str, str] | None:
    """(split, the folder that gives it) from the outermost split-named folder of an image's path."""
    for i, part in enumerate(parts):
        if (split := split_from_name(part)) is not None:
            return split, "/".join(parts[: i + 1])
    return None


@dataclass
class _Names:
    names: list[str] | None  # None: the class indices are the names
    source: str | None = None
    kpt_values: int | None = None  # numbers per pose line (5 + keypoints) when the yaml has kpt_shape


def _names_from(data: Any) -> list[str]:
    """The class list of a ``names:`` (a list, or {index: name} whose gaps are named by their index)."""
    if isinstance(data, (list, tuple)):
        return [str(i) if n is None else str(n) for i, n in enumerate(data)]
    if not isinstance(data, dict):
        raise ValueError(f"names is a {type(data).__name__}, not a list or {{index: name}}")
    by_index: dict[int, str] = {}
    for key, name in data.items():
        if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            raise ValueError(f"names key {key!r} is not a class index (0, 1, ...)")
        if int(key) >= MAX_CLASSES:
            raise ValueError(f"names key {key} is not a plausible class index (at most {MAX_CLASSES - 1})")
        by_index[int(key)] = str(name)
    return [by_index.get(i, str(i)) for i in range(max(by_index, default=-1) + 1)]


def _yaml_names(path: Path, label: str) -> _Names:
    """Names (and pose line length) from a dataset yaml (``safe_load``); ValueError says what is wrong."""
    try:
        data = safe_load(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, YAMLError, RecursionError) as exc:
        raise ValueError(str(exc).replace("\n", " ")[:160]) from exc
    if not isinstance(data, dict) or "names" not in data:
        raise ValueError("no 'names:' key")
    kpt = data.get("kpt_shape")
    pose = isinstance(kpt, (list, tuple)) and len(kpt) == 2 and all(isinstance(v, int) and v > 0 for v in kpt)
    return _Names(_names_from(data["names"]), label, 5 + kpt[0] * kpt[1] if pose else None)


def _find_names(root: Path, tree: _Tree, report: DataReport, option: str | None) -> _Names:
    """Class names by precedence: the ``yaml`` option, a dataset yaml in ROOT, classes.txt, none."""
    if option is not None:
        if not (root / option).is_file():
            raise DatasetError(
                f"data.options.yaml={option!r}: no file {root / option} (give a path relative to {root})"
            )
        try:
            return _yaml_names(root / option, option)
        except ValueError as exc:
            raise DatasetError(
                f"data.options.yaml={option!r}: {exc}; "
                "it needs 'names: [a, b, ...]' or 'names: {0: a, 1: b}'"
            ) from exc
    for name in sorted(tree.yamls, key=lambda n: n not in YAML_NAMES):  # data.yaml, dataset.yaml first
        try:
            return _yaml_names(root / name, name)
        except ValueError as exc:
            if name in YAML_NAMES or str(exc) != "no 'names:' key":
                report.add("bad_annotation", name, f"{exc}: not used for class names")
    if tree.classes_txt:  # the shallowest: ROOT's own, else the one beside the labels (LabelImg's)
        path = min(tree.classes_txt, key=lambda p: (p.count("/"), p))
        try:
            lines = (root / path).read_bytes().decode("utf-8-sig").rstrip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            report.add("bad_annotation", path, f"{str(exc)[:120]}: not used for class names")
        else:
            return _Names([n.strip() or str(i) for i, n in enumerate(lines)], path)
    return _Names(None)


def _unique(names: list[str], report: DataReport) -> list[str]:
    """Repeated names made distinct (``cat#3``), so every index stays its own class; noted."""
    seen: set[str] = set()
    out = []
    for i, name in enumerate(names):
        if name in seen:
            report.notes.append(f"class name {name!r} repeats: index {i} renamed {name}#{i}")
            name = f"{name}#{i}"
        seen.add(name)
        out.append(name)
    return out


def _box(values: list[float], kpt_values: int | None) -> Box | str | None:
    """The box of a line's numbers after the class, else why it is invalid; None: no YOLO line."""
    n = len(values)
    if n == 4 or (kpt_values is not None and n == kpt_values - 1):
        cx, cy, w, h = values[:4]
        if all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)) and w > 0 and h > 0:
            return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        return "cx cy w h must lie in [0, 1] with w, h > 0 (fractions of the image size)"
    if n < 6 or n % 2:
        return None
    if not all(0.0 <= v <= 1.0 for v in values):
        return "polygon points must lie in [0, 1] (fractions of the image size)"
    box = (min(values[0::2]), min(values[1::2]), max(values[0::2]), max(values[1::2]))
    return box if box[2] > box[0] and box[3] > box[1] else "polygon has no area"


def _read_label(
    path: str, source: str, report: DataReport, n_names: int | None, kpt_values: int | None
) -> list[tuple[int, Box]] | None:
    """(class, box) of every good line of one label file (each bad line is reported with file:line);
    None when the file cannot be read or no line of it is usable."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report.add("bad_annotation", source, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    except OSError as exc:
        report.add("bad_annotation", source, f"cannot be read: {exc.strerror or exc}")
        return None
    objects = []
    n_lines = 0
    limit = MAX_CLASSES if n_names is None else n_names
    unknown = f"not among the {n_names} class names" if n_names is not None else "no plausible class index"
    unknown += f" (at most {MAX_CLASSES - 1})" if n_names is None else ""
    # Line numbers as an editor counts them: str.splitlines would also split at form feeds and others.
    for lineno, raw in enumerate(re.split(r"\r\n?|\n", text), start=1):
        if not (tokens := raw.split()):
            continue
        n_lines += 1
        where, shown = f"{source}:{lineno}", repr(raw.strip()[:80])
        try:
            cls, *values = (float(t) for t in tokens)
        except ValueError:
            report.add("malformed_entry", where, f"{shown} is not numbers: {LINE_FORMAT}")
            continue
        box = _box(values, kpt_values)
        if not cls.is_integer() or cls < 0:
            report.add(
                "malformed_entry", where, f"{shown}: class {tokens[0]!r} is no class index: {LINE_FORMAT}"
            )
        elif cls >= limit:
            report.add("malformed_entry", where, f"{shown}: class {tokens[0]} is {unknown}")
        elif box is None:
            report.add("malformed_entry", where, f"{shown} has {len(tokens)} numbers: {LINE_FORMAT}")
        elif isinstance(box, str):
            report.add("invalid_box", where, f"{shown}: {box}")
        else:
            objects.append((int(cls), box))
    return objects if objects or not n_lines else None  # all lines reported: no second "no object"


def _detect(root: Path) -> bool:
    """``labels/`` holding .txt files (two folders deep at most) in ROOT or one folder below, a ROOT
    yaml with a ``names:`` line, or a ``classes.txt`` beside other .txt files."""
    index = FileIndex(root, DataReport(root))  # detection reports nothing
    top = [root, *index.subfolders(root)]
    if any(
        n.lower().endswith(".txt")
        for folder in top
        for _, ls in index.walk(folder / "labels", 2)
        for n in ls.files
    ):
        return True
    for path in index.files(root, (".yaml", ".yml")):
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 16).decode("utf-8", errors="replace")
        except OSError:
            continue
        if re.search(r"^names\s*:", head, re.MULTILINE):
            return True
    return any(
        "classes.txt" in (files := index.listing(folder).files)
        and any(n.lower().endswith(".txt") and n != "classes.txt" for n in files)
        for folder in top
    )


def read_yolo(root: Path, report: DataReport, yaml: str | None = None) -> Parsed:
    """Every image under ``root`` with its label file's objects; ``yaml``: the dataset yaml with
    ``names:`` (relative to ``root``) when it is not found by name."""
    tree, root_str = _scan(root, report), str(root)
    found = _find_names(root, tree, report, yaml)
    n_names = None if found.names is None else len(found.names)
    if found.kpt_values is not None:
        report.notes.append(
            f"pose labels ({found.source} has kpt_shape): box from each line's first five values"
        )

    parsed: list[tuple[Path, str, str, str | None, list[tuple[int, Box]]]] = []
    ids: dict[str, str] = {}
    claimed: set[str] = set()
    split_folders: Counter[tuple[str, str]] = Counter()
    n_unsplit = n_background = 0
    for folder, name in tree.images:
        parts = folder.split("/") if folder else []
        stem = os.path.splitext(name)[0]
        image_id, rel = (f"{folder}/{stem}", f"{folder}/{name}") if folder else (stem, name)
        if image_id in ids:
            report.add(
                "bad_name", rel, f"same stem as {ids[image_id]}, which is used (one label file for both)"
            )
            continue
        ids[image_id] = rel
        label_parts = _swap_last(parts, "images", "labels")
        label_key = image_id if label_parts is None else "/".join([*label_parts, stem])
        if label_key not in tree.labels and image_id in tree.labels:
            label_key = image_id  # x.txt beside x.jpg inside an images/ tree: clearly its label
        claimed.add(label_key)
        split, split_folder = _split_of(parts) or (None, None)
        if split_folder is None:
            n_unsplit += 1
        else:
            split_folders[split_folder, split] += 1
        if (source := tree.labels.get(label_key)) is None:
            if label_key in tree.txt_folders:
                report.add("bad_annotation", f"{label_key}.txt", "is a folder, not a label file")
                continue
            n_background += 1
            parsed.append((root / rel, f"{rel} (no label file {label_key}.txt)", image_id, split, []))
        else:
            objects = _read_label(os.path.join(root_str, source), source, report, n_names, found.kpt_values)
            if objects is not None:
                parsed.append((root / rel, source, image_id, split, objects))
    report.n_images = len(ids)

    for key, source in sorted(tree.labels.items()):
        image_parts = _swap_last(key.split("/")[:-1], "labels", "images")
        if key not in claimed and image_parts is not None:
            images = "/".join(image_parts) or "."
            report.add("missing_image", source, f"no image {key.rsplit('/', 1)[-1]}.* in {images}")

    if found.names is None:
        top = max((c for *_, objects in parsed for c, _ in objects), default=-1)
        names = [str(i) for i in range(top + 1)]
        report.notes.append(
            "no class names (no dataset yaml with 'names:', no classes.txt): classes are named by their index"
        )
    else:
        names = _unique(found.names, report)
        report.notes.append(f"class names from {found.source} ({len(names)})")
    if split_folders:
        shown = listed([f"{f} ({s}, {n})" for (f, s), n in sorted(split_folders.items())], 8)
        report.notes.append(f"split given by the folders {shown}")
        if n_unsplit:
            report.notes.append(f"{n_unsplit} images are in no train/val/test folder: no split")
    if n_background:
        report.notes.append(f"{n_background} images have no label file (YOLO background images)")
    annotations = [
        Annotation(
            image, source, [RawObject(box, names[c]) for c, box in objects], None, True, split, image_id=i
        )
        for image, source, i, split, objects in parsed
    ]
    return Parsed(annotations, {"class": names})


def write_yolo(images: Sequence[Labelled], classes: Sequence[str], out: Path, link: Link) -> None:
    """``images/[<split>/]`` + ``labels/[<split>/]`` (``class cx cy w h``, a line per object) +
    ``data.yaml`` with the names and each split's image folder. A score is not written: a sixth
    number is a detector's output, not a label YOLO tools train on."""
    names = class_list(images, classes)
    folders: dict[str, str] = {}
    for im in images:
        sub = "" if im.split is None else f"/{im.split}"
        folders.setdefault(im.split or "train", f"images{sub}")
        place_image(im, out / f"images{sub}", link)
        (out / f"labels{sub}").mkdir(parents=True, exist_ok=True)
        lines = [
            f"{names.index(class_name(lb))} {(x0 + x1) / 2:.9f} {(y0 + y1) / 2:.9f} "
            f"{x1 - x0:.9f} {y1 - y0:.9f}\n"
            for (x0, y0, x1, y1), lb in zip(im.boxes, im.labels, strict=True)
        ]
        (out / f"labels{sub}" / f"{im.stem}.txt").write_text("".join(lines))
    folders.setdefault("val", folders.get("test", folders.get("train", "images")))
    paths = "".join(f"{split}: {folder}\n" for split, folder in folders.items())
    yaml_names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(names))
    (out / "data.yaml").write_text(f"path: {json.dumps(str(out.resolve()))}\n{paths}names:\n{yaml_names}")


# Before VOC: a folder of YOLO labels may carry VOC XMLs beside them, and YOLO's own files are plainer.
register(Format("yolo", read_yolo, _detect, priority=30, looks_for="YOLO labels", write=write_yolo))
