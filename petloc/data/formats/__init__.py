"""Dataset formats: one module per format behind one signature, and the registry that finds them.

A reader is ``read(root: Path, report: DataReport, **options) -> Parsed``: it parses its files into
:class:`~petloc.data.records.Annotation` s and reports what it cannot parse;
:func:`~petloc.data.records.assemble` does the rest for every format alike. Each reader registers
itself with :func:`register`, with a cheap ``detect(root)`` that says whether a folder looks like its
format, so ``petloc-data check ROOT`` and ``data.format=auto`` can name it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petloc.data.records import Annotation, DataReport, DatasetError, MultiObject, RecordSet, assemble


@dataclass
class Parsed:
    """What a reader returns: the annotations, the class lists where the format fixes them, and a
    one-line diagnosis for the error raised when nothing is usable (the first missing piece)."""

    annotations: list[Annotation]
    label_sets: dict[str, list[str]] = field(default_factory=dict)
    hint: str | None = None


Reader = Callable[..., Parsed]


@dataclass(frozen=True)
class Format:
    name: str
    read: Reader
    detect: Callable[[Path], bool]


FORMATS: dict[str, Format] = {}
# Detection order matters where one folder holds several formats: the Oxford layout is also VOC
# XMLs, and a VOC folder may carry a CSV export beside it (the richer format wins; --format picks).
DETECTION_ORDER = ("oxford", "coco", "yolo", "voc", "csv")


def register(name: str, detect: Callable[[Path], bool]) -> Callable[[Reader], Reader]:
    """Decorator: add a reader to :data:`FORMATS` under ``name``."""

    def wrap(read: Reader) -> Reader:
        FORMATS[name] = Format(name, read, detect)
        return read

    return wrap


def detect_format(root: Path) -> str:
    """The first registered format whose ``detect`` accepts ``root``; a clear error when none does."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist: pass data.root=PATH (or ROOT) to a folder")
    for name in DETECTION_ORDER:
        if FORMATS[name].detect(root):
            return name
    raise DatasetError(
        f"cannot tell the format of {root}: found no Oxford-IIIT Pet lists, COCO JSON, YOLO labels, VOC "
        f"XMLs or CSV. Name it with data.format=NAME (petloc-data check --format NAME), "
        f"one of {list(FORMATS)}"
    )


def read_dataset(
    root: str | Path, format: str = "auto", multi_object: MultiObject = "largest", **options: Any
) -> RecordSet:
    """Read and validate a dataset folder in any registered format (``auto``: detect it).

    ``options`` are the format's own (e.g. ``file``, ``columns`` for CSV). Raises
    :class:`~petloc.data.records.DatasetError` only when no usable boxed image remains; everything
    else is counted and named in the record set's report.
    """
    root = Path(root).expanduser()
    name = detect_format(root) if format == "auto" else format
    if name not in FORMATS:
        raise DatasetError(f"data.format={format!r}: allowed values are {['auto', *FORMATS]}")
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist: pass data.root=PATH to a {name} folder")
    report = DataReport(root=root, format=name)
    read = FORMATS[name].read
    try:
        inspect.signature(read).bind(root, report, **options)
    except TypeError as exc:
        raise DatasetError(f"data.options for format {name!r}: {exc}") from exc
    parsed = read(root, report, **options)
    return assemble(parsed.annotations, root, name, report, multi_object, parsed.label_sets, parsed.hint)


# Importing the modules registers them.
from petloc.data.formats import oxford, coco, yolo, voc, csv  # noqa: E402, F401, I001
