"""Train/val split: the dataset's own where it brings one, else seeded and stratified by class."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import numpy as np

from petloc.data.records import Record, RecordSet

SplitMode = Literal["auto", "given", "random"]


def stratified_split(
    records: Sequence[Record], val_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Split per class so every class keeps its share of validation images.

    The result depends only on the image ids, the classes, the fraction and the seed: records are
    sorted by id and each class is shuffled by a generator seeded from (seed, crc32 of the salt
    ``breed<index>``), so the split is identical on every machine and does not change when another
    class gains images. (The salt is part of the split's definition: changing it would re-split
    every dataset.) Records without a class form one stratum. ``val_fraction=1.0`` puts every image
    in validation (evaluation of a whole folder).
    """
    by_class: dict[int, list[Record]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.image_id):
        by_class[record.labels.get("class", 0)].append(record)
    train: list[Record] = []
    val: list[Record] = []
    for label, members in sorted(by_class.items()):
        rng = np.random.default_rng([seed, zlib.crc32(f"breed{label}".encode())])
        order = rng.permutation(len(members))
        n_val = len(members) if val_fraction >= 1.0 else round(val_fraction * len(members))
        if 0 < val_fraction < 1.0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    train.sort(key=lambda r: r.image_id)
    val.sort(key=lambda r: r.image_id)
    return train, val


def split_records(
    dataset: RecordSet, val_fraction: float, seed: int, mode: SplitMode = "auto"
) -> tuple[list[Record], list[Record], str]:
    """(train, val, how): the dataset's own split (``auto`` when it has one, or ``given``) or
    :func:`stratified_split`. ``how`` is the line the report prints.

    A given split validates on ``val`` (``test`` when there is no ``val``); ``test`` images are
    then held out of both. ``val_fraction=1.0`` always validates on every image.
    """
    records = dataset.records
    if mode not in ("auto", "given", "random"):
        raise ValueError(f"data.split={mode!r}: allowed values are ['auto', 'given', 'random']")
    if mode == "given" and not dataset.has_split:
        raise ValueError(
            f"data.split=given but {dataset.root} brings no train/val split (every image needs one); "
            "use data.split=random"
        )
    if val_fraction >= 1.0:
        return (
            [],
            sorted(records, key=lambda r: r.image_id),
            "every image in validation (data.val_fraction=1.0)",
        )
    if mode != "random" and dataset.has_split:
        splits = {r.split for r in records}
        val_name = "val" if "val" in splits else "test"
        train = [r for r in records if r.split == "train"]
        val = [r for r in records if r.split == val_name]
        held = len(records) - len(train) - len(val)
        how = f"the dataset's own split: train, {val_name} as validation" + (
            f", {held} test images held out" if held else ""
        )
        return train, val, how
    train, val = stratified_split(records, val_fraction, seed)
    return train, val, f"seeded stratified split (data.val_fraction={val_fraction}, seed {seed})"
