"""LightningDataModule over a dataset folder in any registered format (:mod:`petloc.data.formats`).

Batches carry uint8 NHWC images; normalization to the backbone's mean/std happens on the model's
device (:class:`petloc.models.module.PetLocModule`), which moves 4x fewer bytes through the loader
and keeps per-sample work in the workers to the augmentation itself.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from petloc.data.augment import MAX_BOXES, AugmentConfig, augment_boxes, colour_transform, mosaic
from petloc.data.cache import DecodedImages, build_decode_cache
from petloc.data.formats import read_dataset
from petloc.data.images import ImageReader, resize_to_input
from petloc.data.records import DatasetError, MultiObject, Record, RecordSet
from petloc.data.split import SplitMode, split_records

log = logging.getLogger(__name__)


class BoxDataset(Dataset):
    """Cached images + boxes (+ class label); augmentation keeps the sample's box (see augment.py).

    A sample's ``boxes`` has :data:`MAX_BOXES` rows, of which the first ``num_boxes`` are the objects
    in view: its own box first (also ``box``), then the image's other objects that stay in view, or,
    in a mosaic, those of four training images. ``passes`` > 1 makes one epoch go over the records
    that many times (mmdetection's ``RepeatDataset``): sample ``i`` is record ``i % len(records)``.
    """

    def __init__(
        self,
        records: list[Record],
        cache: DecodedImages,
        image_size: int,
        augment: AugmentConfig | None,
        mosaic_on: torch.Tensor | None = None,
        label_set: str | None = None,
        passes: int = 1,
    ) -> None:
        self.records = records
        self.passes = passes
        self.label_set = label_set
        self.cache = cache
        self.image_size = image_size
        self.augment = augment
        self.colour = colour_transform(augment) if augment is not None else None
        self.rng = np.random.default_rng()
        # shared-memory flag: the training process switches mosaics off, loader workers see it
        self.mosaic_on = mosaic_on if mosaic_on is not None else torch.ones(1, dtype=torch.bool)
        self._seeded = False

    def __len__(self) -> int:
        return len(self.records) * self.passes

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")  # ends iteration over the dataset
        index %= len(self.records)
        r = self.records[index]
        image, boxes, is_mosaic = self._augment(index) if self.augment is not None else (None, None, False)
        if image is None:
            image, boxes = resize_to_input(self.cache.get(r.image_id), self.image_size), np.float32([r.box])
        slots = np.zeros((MAX_BOXES, 4), dtype=np.float32)
        slots[: len(boxes)] = boxes
        return {
            "image": torch.from_numpy(image),
            "box": torch.from_numpy(slots[0].copy()),
            "boxes": torch.from_numpy(slots),
            "num_boxes": len(boxes),
            "mosaic": is_mosaic,
            # the class index in the mode's label set (0 in box mode, where nothing reads it)
            "label": r.labels[self.label_set] if self.label_set is not None else 0,
            "index": index,
        }

    def _augment(self, index: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """(image, boxes, is_mosaic): the preset's geometry (a mosaic or the single-image draw),
        then its colour operations."""
        assert self.augment is not None and self.colour is not None
        if not self._seeded:
            # torch.initial_seed() differs per worker and is fixed by Lightning's seed_everything,
            # so augmentation is random across workers yet reproducible for a given seed.
            seed = torch.initial_seed() % 2**32
            self.colour.set_random_seed(seed)
            self.rng = np.random.default_rng(seed)
            self._seeded = True
        image, boxes = self._mosaic(index)
        is_mosaic = image is not None
        if image is None:
            r = self.records[index]
            image, boxes, _ = augment_boxes(
                self.cache.get(r.image_id), r.boxes(), self.image_size, self.augment, self.rng
            )
        return self.colour(image=image)["image"], boxes, is_mosaic

    def _mosaic(self, index: int, attempts: int = 5) -> tuple[np.ndarray | None, np.ndarray | None]:
        """With probability ``augment.mosaic`` (while mosaics are on), this sample tiled with three
        random others; else (or when no draw keeps a box in view) (None, None)."""
        assert self.augment is not None
        if not self.augment.mosaic or not self.mosaic_on[0] or self.rng.random() >= self.augment.mosaic:
            return None, None
        for _ in range(attempts):
            picks = [self.records[i] for i in (index, *self.rng.integers(len(self.records), size=3))]
            images = [self.cache.get(r.image_id) for r in picks]
            image, boxes = mosaic(images, [r.boxes() for r in picks], self.image_size, self.augment, self.rng)
            if len(boxes):
                return image, boxes
        return None, None


class LocalizationDataModule(L.LightningDataModule):
    """Reads the folder (any format), reports its problems once, splits, decodes once, serves batches.

    ``format`` names the reader (``auto`` detects it) and ``options`` are that reader's own keys;
    ``label_set`` is the label set the mode trains (``class``; ``species`` for Oxford pets; None:
    box only). ``image_size`` is the network's input side, validated with the config
    (:func:`petloc.models.backbone.check_image_size`). A training set of fewer than
    ``min_epoch_images`` images is gone over several times per epoch (``train_passes``): validation,
    ``last.ckpt`` and Lightning's own bookkeeping run once per epoch, and on a set of 160 images
    (5 batches) they would otherwise take a quarter of a wall-clock budget (BENCHMARKS.md).
    """

    def __init__(
        self,
        root: str,
        format: str = "auto",
        options: dict[str, Any] | None = None,
        multi_object: MultiObject = "largest",
        split: SplitMode = "auto",
        label_set: str | None = None,
        image_size: int = 128,
        batch_size: int = 32,
        num_workers: int = 1,
        val_fraction: float = 0.2,
        seed: int = 0,
        augment: AugmentConfig | dict | None = None,
        cache_dir: str = ".cache/petloc",
        cache_scale: float = 1.25,
        synthetic: dict | None = None,
        persistent_workers: bool = True,
        min_epoch_images: int = 512,
    ) -> None:
        super().__init__()
        if not 0 < val_fraction <= 1:
            raise ValueError(f"data.val_fraction={val_fraction!r}: must be in (0, 1]")
        if min_epoch_images < 1:
            raise ValueError(f"data.min_epoch_images={min_epoch_images!r}: must be >= 1 (1: one pass)")
        self.root = Path(root).expanduser()
        self.format = format
        self.options = dict(options or {})
        self.multi_object = multi_object
        self.split = split
        self.label_set = label_set
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = AugmentConfig(**augment) if isinstance(augment, dict) else augment or AugmentConfig()
        self.cache_dir = Path(cache_dir).expanduser()
        self.max_side = round(image_size * cache_scale)
        self.synthetic = synthetic
        self.persistent_workers = persistent_workers
        self.min_epoch_images = min_epoch_images
        self.dataset: RecordSet | None = None
        self.train_records: list[Record] = []
        self.val_records: list[Record] = []
        self.cache: DecodedImages | None = None
        self.mosaic_on = torch.ones(1, dtype=torch.bool).share_memory_()

    def set_mosaic(self, enabled: bool) -> None:
        """Switch the training set's mosaics on or off, in running loader workers too."""
        self.mosaic_on.fill_(enabled)

    def prepare_data(self) -> None:
        """Generate the synthetic set if this data config asks for it (rank 0 only under DDP)."""
        if self.synthetic is not None:
            from petloc.data.synthetic import generate_synthetic_pets

            generate_synthetic_pets(self.root, n=self.synthetic["n"], seed=self.synthetic["seed"])

    def setup(self, stage: str | None = None) -> None:
        if self.cache is not None:
            return
        self.prepare_data()  # idempotent; makes setup() alone enough for scripts and tests
        dataset = read_dataset(self.root, self.format, self.multi_object, **self.options)
        if self.label_set is not None and self.label_set not in dataset.label_sets:
            raise ValueError(
                f"this mode trains the label set {self.label_set!r}, but {self.root} (format "
                f"{dataset.format}) has {sorted(dataset.label_sets) or 'no class labels'}: use mode=box"
                + (" or mode=class" if "class" in dataset.label_sets else "")
            )
        if self.label_set is not None:
            # a class-aware mode needs every image's class: an image without one is left out, named
            unlabeled = [r for r in dataset.records if self.label_set not in r.labels]
            for r in unlabeled:
                dataset.report.add("malformed_entry", str(r.path), f"no {self.label_set} label for this mode")
            dataset.records = [r for r in dataset.records if self.label_set in r.labels]
            if not dataset.records:
                raise DatasetError(
                    f"no image of {self.root} has a {self.label_set!r} label: use mode=box\n"
                    f"{dataset.report.format_text()}"
                )
        cache, usable = build_decode_cache(dataset.records, self.max_side, self.cache_dir, dataset.report)
        dataset.records = usable
        self.train_records, self.val_records, how = split_records(
            dataset, self.val_fraction, self.seed, self.split
        )
        dataset.report.notes.append(
            f"split: {len(self.train_records)} train, {len(self.val_records)} val; {how}"
        )
        if self.train_passes > 1:
            dataset.report.notes.append(
                f"training epoch: {self.train_passes} passes over the {len(self.train_records)} training "
                f"images (fewer than data.min_epoch_images={self.min_epoch_images})"
            )
        self.dataset, self.cache = dataset, cache

    @property
    def train_passes(self) -> int:
        """Passes over the training records per epoch: enough for ``min_epoch_images`` samples."""
        return math.ceil(self.min_epoch_images / len(self.train_records)) if self.train_records else 1

    @property
    def class_names(self) -> list[str]:
        """The names of the mode's classes (empty in box mode)."""
        assert self.dataset is not None, "call setup() first"
        return list(self.dataset.label_sets[self.label_set]) if self.label_set is not None else []

    def image_reader(self) -> ImageReader:
        """Reads an image file as this datamodule's validation loader delivers it (no file is touched
        here: the sizes come from the config), for eval's, predict's and export's new images."""
        return ImageReader(self.image_size, self.max_side)

    def train_mean_box(self) -> torch.Tensor:
        """The training set's mean box [4]: the trivial "no localization" baseline, predicted for every
        validation image and logged as val/iou_mean_box. A model that does not clearly beat it has learnt
        the dataset's framing bias, not where the object is. The coordinate-wise mean of valid xyxy
        boxes is itself a valid box (each mean x0 is below the mean x1), so it is scored like a model."""
        if not self.train_records:
            raise ValueError("no training records: call setup() first (or the split left none to train on)")
        return torch.tensor([r.box for r in self.train_records], dtype=torch.float32).mean(dim=0)

    def _loader(self, records: list[Record], train: bool) -> DataLoader:
        assert self.cache is not None, "call setup() first"
        dataset = BoxDataset(
            records,
            self.cache,
            self.image_size,
            self.augment if train else None,
            self.mosaic_on,
            self.label_set,
            self.train_passes if train else 1,
        )
        sampler = None
        if not train and self.trainer is not None and self.trainer.world_size > 1:
            # Lightning's default DistributedSampler pads the set to a multiple of the world size by
            # repeating images, which would count them twice in every val metric.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_records, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_records, train=False)
