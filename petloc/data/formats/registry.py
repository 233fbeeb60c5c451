"""The format registry: :class:`Format` (one per module of :mod:`petloc.data.formats`), detection
and :func:`read_dataset`.

A reader is ``read(root: Path, report: DataReport, **options) -> Parsed``: it parses its files into
:class:`~petloc.data.records.Annotation` s and reports what it cannot parse;
:func:`~petloc.data.records.assemble` does the rest for every format alike. A writer is
``write(images: Sequence[Labelled], classes: Sequence[str], out: Path, link: Link) -> None``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petloc.data.files import Link
from petloc.data.records import (
    MAX_OBJECTS,
    Annotation,
    DataReport,
    DatasetError,
    Labelled,
    MultiObject,
    RecordSet,
    assemble,
)


@dataclass
class Parsed:
    """What a reader returns: the annotations, the class lists where the format fixes them, and a
    one-line diagnosis for the error raised when nothing is usable (the first missing piece)."""

    annotations: list[Annotation]
    label_sets: dict[str, list[str]] = field(default_factory=dict)
    hint: str | None = None


Reader = Callable[..., Parsed]
Writer = Callable[[Sequence[Labelled], Sequence[str], Path, Link], None]


@dataclass(frozen=True)
class Format:
    """Everything the registry knows of one format."""

    name: str
    read: Reader
    detect: Callable[[Path], bool]
    priority: int  # detection order, lower first
    looks_for: str  # what detect looks for, for the "cannot tell the format" message
    write: Writer | None = None  # None: read only
    keep_split: bool = True  # whether the writer keeps each image's split


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add a format to :data:`FORMATS` (replacing one of the same name)."""
    FORMATS[fmt.name] = fmt
    return fmt


def detection_order() -> list[Format]:
    return sorted(FORMATS.values(), key=lambda f: (f.priority, f.name))


def writable() -> list[str]:
    """The names of the formats petloc can write, in detection order."""
    return [f.name for f in detection_order() if f.write is not None]


def detect_format(root: Path) -> str:
    """The first format (by priority) whose ``detect`` accepts ``root``; a clear error when none does."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist: pass data.root=PATH (or ROOT) to a folder")
    order = detection_order()
    for fmt in order:
        if fmt.detect(root):
            return fmt.name
    raise DatasetError(
        f"cannot tell the format of {root}: found no {', '.join(f.looks_for for f in order)}. "
        f"Name it with data.format=NAME (petloc-data check --format NAME), one of {[f.name for f in order]}"
    )


def read_dataset(
    root: str | Path,
    format: str = "auto",
    multi_object: MultiObject = "largest",
    max_objects: int | None = MAX_OBJECTS,
    **options: Any,
) -> RecordSet:
    """Read and validate a dataset folder in any registered format (``auto``: detect it).

    ``options`` are the format's own (e.g. ``file``, ``columns`` for CSV); ``max_objects`` caps the
    objects a record keeps (None: all, as ``convert`` needs). Raises
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
    return assemble(
        parsed.annotations, root, name, report, multi_object, parsed.label_sets, parsed.hint, max_objects
    )
