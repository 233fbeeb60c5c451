"""Write a readable dataset in another format: ``petloc-data convert`` and ``petloc-data synth``.

The source is read like any training set (every problem counted in its report), keeping every
object of each image (not only the :data:`~petloc.data.records.MAX_OBJECTS` a record carries for
training), then written by the target format's writer: the images (linked or copied), each object's
box and class, the class list and the split. What the target has no place for (a second label set
such as the pets' species, a split in a CSV) is counted and named in a report of its own, as
``not_carried``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from petloc.data.files import Link, file_names
from petloc.data.formats import FORMATS, read_dataset, writable
from petloc.data.records import DataReport, DatasetError, Labelled, Record, RecordSet


def labelled(records: Sequence[Record], classes: Sequence[str] | None) -> list[Labelled]:
    """The records as a writer takes them: the box and the other objects, each with its class
    (``classes``: the ``class`` label set's names; None writes a box-only set)."""
    names = file_names([r.image_id for r in records], [r.path for r in records])
    images = []
    for r, name in zip(records, names, strict=True):
        labels: tuple[str | None, ...] = (None,) * (1 + len(r.others))
        if classes is not None and "class" in r.labels:
            others = (*r.other_classes, *(None,) * (len(r.others) - len(r.other_classes)))
            labels = (classes[r.labels["class"]], *others)
        images.append(Labelled(name, r.path, r.width, r.height, (r.box, *r.others), labels, split=r.split))
    return images


def empty_folder(out: Path) -> None:
    """Refuse to write into a folder that holds anything (nothing is overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} is not an empty folder: choose a new one (nothing was written)")


def convert(
    source: Path, out: Path, format: str, link: Link = "hardlink", source_format: str = "auto"
) -> tuple[RecordSet, DataReport]:
    """Write the usable images of ``source`` into the empty or new folder ``out`` in ``format``;
    returns the source as read (its report) and the report of what was not carried over."""
    target = FORMATS.get(format)
    if target is None or target.write is None:
        raise DatasetError(f"cannot write format {format!r}: petloc writes {writable()}")
    empty_folder(out)
    dataset = read_dataset(source, source_format, max_objects=None)
    report = DataReport(root=out, format=format, n_images=len(dataset.records), n_usable=len(dataset.records))
    for r in dataset.records:
        for key, index in r.labels.items():
            if key != "class":
                name = dataset.label_sets[key][index]
                report.add("not_carried", r.image_id, f"{key} {name!r}: {format} keeps one class per object")
        if r.split is not None and not target.keep_split:
            report.add("not_carried", r.image_id, f"split {r.split}: {format} has no place for a split")
    out.mkdir(parents=True, exist_ok=True)
    target.write(labelled(dataset.records, dataset.classes), dataset.classes, out, link)
    return dataset, report
