"""Tests for petloc.data.datamodule.LocalizationDataModule on the real sample.

Oracles: the sample's files themselves (its 730 XMLs are the usable boxed images), the documented
batch format (uint8 NHWC at ``image_size``, normalized float boxes), and a second loader built with
the same seed (or with a worker process) for reproducibility.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from PIL import Image

from petloc import CONFIG_DIR
from petloc.data.augment import MAX_BOXES
from petloc.data.datamodule import LocalizationDataModule

SIZE = 64
BATCH = 16


def preset(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / "augment" / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def make_dm(oxford_sample: Path, cache_dir: Path) -> Callable[..., LocalizationDataModule]:
    """Data modules on the sample; all share the session's decode cache, so it is built once."""

    def make(**overrides: object) -> LocalizationDataModule:
        kwargs: dict = dict(
            root=str(oxford_sample),
            image_size=SIZE,
            batch_size=BATCH,
            num_workers=0,
            val_fraction=0.2,
            seed=0,
            augment=None,
            cache_dir=str(cache_dir),
            persistent_workers=False,
        )
        dm = LocalizationDataModule(**{**kwargs, **overrides})
        dm.setup("fit")
        return dm

    return make


@pytest.mark.realdata
def test_batches_have_the_documented_shapes_and_types(make_dm: Callable[..., LocalizationDataModule]) -> None:
    dm = make_dm(augment=preset("light"), label_set="class")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        assert batch["image"].shape == (BATCH, SIZE, SIZE, 3) and batch["image"].dtype == torch.uint8
        box = batch["box"]
        assert box.shape == (BATCH, 4) and box.dtype == torch.float32
        assert ((box >= 0) & (box <= 1)).all()
        assert (box[:, 0] < box[:, 2]).all() and (box[:, 1] < box[:, 3]).all()
        label = batch["label"]
        assert label.dtype == torch.int64 and ((label >= 0) & (label < 37)).all()
        assert len(set(label.tolist())) > 1
    assert len(dm.class_names) == 37 and dm.class_names[0] == "Abyssinian"
    species = make_dm(label_set="species")
    labels = torch.cat([batch["label"] for batch in species.val_dataloader()])
    assert labels.tolist() == [r.labels["species"] for r in species.val_records]
    assert set(labels.tolist()) == {0, 1}
    with pytest.raises(ValueError, match=r"label set 'breed'.*'class', 'species'"):
        make_dm(label_set="breed")


@pytest.mark.realdata
def test_every_usable_image_is_used_exactly_once(
    make_dm: Callable[..., LocalizationDataModule], oxford_sample: Path
) -> None:
    dm = make_dm()
    xml_stems = {p.stem for p in (oxford_sample / "annotations" / "xmls").glob("*.xml")}
    train_ids = [r.image_id for r in dm.train_records]
    val_ids = [r.image_id for r in dm.val_records]
    assert len(train_ids) + len(val_ids) == len(xml_stems) == 730
    assert set(train_ids) | set(val_ids) == xml_stems and not set(train_ids) & set(val_ids)
    assert 0.15 < len(val_ids) / 730 < 0.25

    val_seen = [i for batch in dm.val_dataloader() for i in batch["index"].tolist()]
    assert sorted(val_seen) == list(range(len(val_ids)))  # no shuffle, no drop: each once
    train_seen = [i for batch in dm.train_dataloader() for i in batch["index"].tolist()]
    assert len(train_seen) == len(set(train_seen)) == len(train_ids) // BATCH * BATCH  # drop_last
    assert dm.train_passes == 1  # 580 training images: above data.min_epoch_images (512)


@pytest.mark.realdata
def test_a_small_training_set_is_gone_over_several_times_per_epoch(raccoon: Path, cache_dir: Path) -> None:
    """160 raccoon training photos, at least 512 images per epoch: 4 passes, every photo 4 times."""
    dm = LocalizationDataModule(
        root=str(raccoon),
        format="voc",
        image_size=SIZE,
        batch_size=BATCH,
        num_workers=0,
        augment=preset("strong"),
        cache_dir=str(cache_dir),
        persistent_workers=False,
    )
    dm.setup("fit")
    assert (len(dm.train_records), dm.train_passes) == (160, 4)
    assert "training epoch: 4 passes over the 160 training images" in dm.dataset.report.format_text()
    seen = [i for batch in dm.train_dataloader() for i in batch["index"].tolist()]
    assert len(seen) == 640  # 640 is a multiple of the batch: drop_last drops nothing
    assert sorted(seen) == sorted(list(range(160)) * 4)
    assert len(dm.val_dataloader().dataset) == 40  # validation is still one pass
    with pytest.raises(ValueError, match=r"data.min_epoch_images=0: must be >= 1"):
        LocalizationDataModule(root=str(raccoon), min_epoch_images=0)


@pytest.mark.realdata
def test_val_batches_carry_the_record_boxes(make_dm: Callable[..., LocalizationDataModule]) -> None:
    dm = make_dm()
    batch = next(iter(dm.val_dataloader()))
    want = torch.tensor([dm.val_records[i].box for i in batch["index"].tolist()], dtype=torch.float32)
    assert torch.allclose(batch["box"], want, atol=1e-6)  # the eval resize keeps normalized boxes


@pytest.mark.realdata
def test_same_seed_gives_the_same_first_batch(make_dm: Callable[..., LocalizationDataModule]) -> None:
    def first_batch(seed: int) -> dict:
        dm = make_dm(augment=preset("strong"))
        L.seed_everything(seed, verbose=False)
        return next(iter(dm.train_dataloader()))

    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
    assert torch.equal(a["box"], b["box"])
    assert not torch.equal(a["index"], c["index"])


@pytest.mark.realdata
def test_a_worker_process_serves_the_same_val_batches(make_dm: Callable[..., LocalizationDataModule]) -> None:
    in_process = next(iter(make_dm(num_workers=0, label_set="class").val_dataloader()))
    in_worker = next(iter(make_dm(num_workers=1, label_set="class").val_dataloader()))
    for key in ("index", "image", "box", "label"):
        assert torch.equal(in_process[key], in_worker[key]), key


@pytest.mark.realdata
def test_a_worker_process_serves_augmented_train_batches(
    make_dm: Callable[..., LocalizationDataModule],
) -> None:
    dm = make_dm(num_workers=1, augment=preset("light"))
    L.seed_everything(0, verbose=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (BATCH, SIZE, SIZE, 3)
    assert ((batch["box"] >= 0) & (batch["box"] <= 1)).all()


@pytest.mark.realdata
def test_train_batches_carry_the_augmented_boxes(make_dm: Callable[..., LocalizationDataModule]) -> None:
    dm = make_dm(augment={"name": "flip", "hflip": 1.0})
    L.seed_everything(0, verbose=False)
    batch = next(iter(dm.train_dataloader()))
    boxes = torch.tensor([dm.train_records[i].box for i in batch["index"].tolist()], dtype=torch.float32)
    mirrored = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
    assert torch.allclose(batch["box"], mirrored, atol=1e-6)


@pytest.mark.realdata
def test_mosaic_batches_carry_several_boxes_in_fixed_slots(
    make_dm: Callable[..., LocalizationDataModule],
) -> None:
    dm = make_dm(augment={**preset("strong"), "mosaic": 0.5})
    L.seed_everything(0, verbose=False)
    batches = [batch for _, batch in zip(range(4), dm.train_dataloader(), strict=False)]
    counts = torch.cat([b["num_boxes"] for b in batches])
    flags = torch.cat([b["mosaic"] for b in batches])
    assert 0.25 < flags.float().mean() < 0.75  # about half the samples are mosaics
    assert (counts[~flags] == 1).all() and (counts >= 1).all() and (counts[flags] > 1).any()
    for batch in batches:
        boxes, n = batch["boxes"], batch["num_boxes"]
        assert boxes.shape == (BATCH, MAX_BOXES, 4)
        assert torch.equal(batch["box"], boxes[:, 0])
        used = torch.arange(MAX_BOXES) < n[:, None]
        assert (boxes[~used] == 0).all()  # empty slots stay zero
        real = boxes[used]
        assert ((real >= 0) & (real <= 1)).all() and (real[:, :2] < real[:, 2:]).all()
    val = next(iter(dm.val_dataloader()))
    assert (val["num_boxes"] == 1).all() and not val["mosaic"].any()


@pytest.mark.realdata
def test_set_mosaic_reaches_a_running_loader_worker(make_dm: Callable[..., LocalizationDataModule]) -> None:
    """CloseMosaic flips the flag in the training process; a persistent worker, started before, must
    stop making mosaics from the next epoch on."""
    dm = make_dm(augment={**preset("strong"), "mosaic": 1.0}, num_workers=1, persistent_workers=True)
    L.seed_everything(0, verbose=False)
    loader = dm.train_dataloader()
    assert next(iter(loader))["mosaic"].float().mean() > 0.9
    dm.set_mosaic(False)
    assert not any(batch["mosaic"].any() for batch in loader)
    dm.set_mosaic(True)
    assert next(iter(loader))["mosaic"].float().mean() > 0.9


def test_a_class_mode_leaves_out_and_names_images_without_a_class(tmp_path: Path) -> None:
    """A COCO annotation without category_id has no class: mode=class must not meet it mid-epoch."""
    images = tmp_path / "images"
    images.mkdir()
    entries, annotations = [], []
    for i in range(4):
        Image.new("RGB", (80, 60), (40 * i, 90, 120)).save(images / f"im{i}.jpg")
        entries.append({"id": i, "file_name": f"im{i}.jpg", "width": 80, "height": 60})
        annotation = {"id": i, "image_id": i, "bbox": [10, 5, 40, 30], "iscrowd": 0}
        if i != 2:
            annotation["category_id"] = 1 + i % 2
        annotations.append(annotation)
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    document = {"images": entries, "annotations": annotations, "categories": categories}
    (tmp_path / "annotations.json").write_text(json.dumps(document))

    def make(label_set: str | None) -> LocalizationDataModule:
        dm = LocalizationDataModule(
            root=str(tmp_path),
            format="coco",
            label_set=label_set,
            image_size=32,
            val_fraction=0.5,
            cache_dir=str(tmp_path / "cache"),
            num_workers=0,
            augment=None,
        )
        dm.setup("fit")
        return dm

    boxed = make(None)
    assert len(boxed.train_records) + len(boxed.val_records) == 4
    classed = make("class")
    assert sorted(r.path.stem for r in classed.train_records + classed.val_records) == ["im0", "im1", "im3"]
    (entry,) = classed.dataset.report.problems["malformed_entry"]
    assert "im2.jpg" in entry and "no class label" in entry
    assert classed.class_names == ["a", "b"]
