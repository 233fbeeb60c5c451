"""Seeded, stratified train/val split of the boxed records."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from petloc.data.oxford import Record


def stratified_split(
    records: Sequence[Record], val_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Split per breed so every class keeps its share of validation images.

    The result depends only on the image ids, the fraction and the seed: records are sorted by id
    and each class is shuffled by a generator seeded from (seed, crc32 of the class's name), so the
    split is identical on every machine and does not change when another class gains images.
    ``val_fraction=1.0`` puts every image in validation (evaluation of a whole folder).
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1], got {val_fraction}")
    by_class: dict[int, list[Record]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.image_id):
        by_class[record.breed].append(record)
    train: list[Record] = []
    val: list[Record] = []
    for breed, members in sorted(by_class.items()):
        rng = np.random.default_rng([seed, zlib.crc32(f"breed{breed}".encode())])
        order = rng.permutation(len(members))
        n_val = len(members) if val_fraction >= 1.0 else round(val_fraction * len(members))
        if 0 < val_fraction < 1.0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    train.sort(key=lambda r: r.image_id)
    val.sort(key=lambda r: r.image_id)
    return train, val
