"""Tests for petloc.data.split: the seeded stratified split (deterministic, stratified, total) and
the dataset's own split.

Records are built by hand (the split only looks at ids, classes and given splits), with class sizes
chosen to hit the edge cases: a singleton class, a class of two, and classes where rounding matters.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from petloc.data.datamodule import LocalizationDataModule
from petloc.data.records import DataReport, Record, RecordSet
from petloc.data.split import split_records, stratified_split

CLASS_SIZES = {0: 40, 1: 13, 2: 7, 3: 2, 4: 1, 5: 25}


def make_records(sizes: dict[int, int] = CLASS_SIZES) -> list[Record]:
    return [
        Record(
            f"breed{breed}_{i}",
            Path(f"breed{breed}_{i}.jpg"),
            100,
            80,
            (0.1, 0.1, 0.5, 0.5),
            {"class": breed},
        )
        for breed, n in sizes.items()
        for i in range(1, n + 1)
    ]


def ids(records: list[Record]) -> list[str]:
    return [r.image_id for r in records]


def test_same_seed_same_split_whatever_the_input_order() -> None:
    records = make_records()
    train, val = stratified_split(records, 0.2, seed=3)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    train2, val2 = stratified_split(shuffled, 0.2, seed=3)
    assert (ids(train), ids(val)) == (ids(train2), ids(val2))


def test_different_seed_different_split() -> None:
    records = make_records()
    assert set(ids(stratified_split(records, 0.2, seed=0)[1])) != set(
        ids(stratified_split(records, 0.2, seed=1)[1])
    )


def test_split_is_a_partition() -> None:
    records = make_records()
    train, val = stratified_split(records, 0.2, seed=0)
    assert set(ids(train)).isdisjoint(ids(val))
    assert sorted(ids(train) + ids(val)) == sorted(ids(records))


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_every_class_keeps_its_share(fraction: float) -> None:
    train, val = stratified_split(make_records(), fraction, seed=0)
    n_val, n_train = Counter(r.labels["class"] for r in val), Counter(r.labels["class"] for r in train)
    for breed, n in CLASS_SIZES.items():
        if n >= 2:
            # at least one image on each side, otherwise the share rounded to the nearest image
            assert 1 <= n_val[breed] <= n - 1, breed
            assert n_train[breed] >= 1, breed
            if 1.5 <= fraction * n <= n - 1.5:
                assert abs(n_val[breed] - fraction * n) <= 0.5, breed
        else:
            assert (n_val[breed], n_train[breed]) == (0, 1)  # a singleton must be trained on


def test_a_class_gaining_images_does_not_move_the_others() -> None:
    before = stratified_split(make_records(), 0.2, seed=0)
    after = stratified_split(make_records({**CLASS_SIZES, 1: 30}), 0.2, seed=0)
    for part_before, part_after in zip(before, after, strict=True):
        assert [i for i in ids(part_before) if not i.startswith("breed1_")] == [
            i for i in ids(part_after) if not i.startswith("breed1_")
        ]


def test_fraction_one_puts_everything_in_val_and_zero_in_train() -> None:
    records = make_records()
    train, val = stratified_split(records, 1.0, seed=0)
    assert train == [] and sorted(ids(val)) == sorted(ids(records))
    train, val = stratified_split(records, 0.0, seed=0)
    assert val == [] and sorted(ids(train)) == sorted(ids(records))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, float("nan")])
def test_bad_fraction_raises_at_construction(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"data.val_fraction.*\(0, 1\]"):
        LocalizationDataModule(root="unused", val_fraction=fraction)


def record_set(splits: list[str | None]) -> RecordSet:
    records = [
        Record(f"img{i}", Path(f"img{i}.jpg"), 100, 80, (0.1, 0.1, 0.5, 0.5), {"class": 0}, split)
        for i, split in enumerate(splits)
    ]
    return RecordSet(Path("root"), "voc", records, {"class": ["a"]}, DataReport(Path("root")))


def test_a_given_split_is_used_by_default_and_test_is_held_out() -> None:
    dataset = record_set(["train", "train", "val", "test", "train"])
    train, val, how = split_records(dataset, 0.2, seed=0)
    assert (ids(train), ids(val)) == (["img0", "img1", "img4"], ["img2"])
    assert "own split" in how and "1 test images held out" in how
    train, val, how = split_records(dataset, 0.2, seed=0, mode="random")
    assert len(train) + len(val) == 5 and "seeded stratified" in how


def test_without_val_the_test_split_validates() -> None:
    train, val, _ = split_records(record_set(["train", "test", "train"]), 0.2, seed=0)
    assert (ids(train), ids(val)) == (["img0", "img2"], ["img1"])


def test_a_partial_split_is_not_a_split() -> None:
    dataset = record_set(["train", None, "val"])
    assert not dataset.has_split
    assert "seeded stratified" in split_records(dataset, 0.5, seed=0)[2]
    with pytest.raises(ValueError, match=r"data\.split=given"):
        split_records(dataset, 0.5, seed=0, mode="given")


def test_fraction_one_validates_on_every_image_even_with_a_given_split() -> None:
    train, val, _ = split_records(record_set(["train", "val"]), 1.0, seed=0)
    assert train == [] and ids(val) == ["img0", "img1"]
