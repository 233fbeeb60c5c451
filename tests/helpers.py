"""Test helpers shared by several test modules (test modules import from here, never from each other):

- crafted datasets in the Oxford layout and report accessors. Oracles stay independent of petloc:
  images are written with PIL, XMLs and lists as text;
- small modules built from the real config, the batches the DataModule delivers, and the tiny
  training run whose checkpoint the ``trained_run`` fixture (tests/conftest.py) shares.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor

from petloc import CONFIG_DIR
from petloc.data.augment import MAX_BOXES
from petloc.data.records import DataReport
from petloc.models.heads import BoxHead
from petloc.models.module import PetLocModule

Box = tuple[float, float, float, float]

# A box well inside the default 80x60 crafted image, VOC style (1-based, inclusive).
GOOD_BOX: Box = (11, 6, 50, 40)
LIST_HEADER = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"


@dataclass
class Pet:
    """One crafted image: its file, its XML (``boxes=None``: no XML) and the list it is in."""

    stem: str
    fmt: str = "JPEG"
    mode: str = "RGB"
    size: tuple[int, int] = (80, 60)
    boxes: list[Box] | None = field(default_factory=lambda: [GOOD_BOX])
    xml_size: tuple[int, int] | None = None  # <size> written in the XML; default: the image's size
    split: str | None = "trainval"  # "trainval", "test" or None (in no list)
    ext: str = ".jpg"
    class_id: int = 1
    species: int = 1


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (80, 60), seed: int = 0) -> bytes:
    """Noise (so a JPEG has real entropy-coded data to cut), converted to ``mode``, encoded as ``fmt``."""
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def voc_xml(size: tuple[int, int], boxes: list[Box]) -> str:
    objects = "".join(
        f"<object><name>cat</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    return (
        f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"{objects}</annotation>"
    )


def write_pets(root: Path, pets: list[Pet], extra_list_lines: tuple[str, ...] = ()) -> Path:
    """Write ``pets`` into ``root`` in the Oxford layout and return ``root``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "xmls").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"list": list(extra_list_lines), "trainval": [], "test": []}
    for i, pet in enumerate(pets):
        (root / "images" / f"{pet.stem}{pet.ext}").write_bytes(image_bytes(pet.fmt, pet.mode, pet.size, i))
        if pet.boxes is not None:
            xml = voc_xml(pet.xml_size or pet.size, pet.boxes)
            (root / "annotations" / "xmls" / f"{pet.stem}.xml").write_text(xml)
        if pet.split is not None:
            line = f"{pet.stem} {pet.class_id} {pet.species} 1"
            lists["list"].append(line)
            lists[pet.split].append(line)
    for name, lines in lists.items():
        header = LIST_HEADER if name == "list" else ""
        (root / "annotations" / f"{name}.txt").write_text(header + "".join(f"{x}\n" for x in lines))
    return root


def good(n: int = 2) -> list[Pet]:
    """Clean images, so that a dataset with one quirk still has something usable."""
    return [Pet(f"Abyssinian_{i}") for i in range(1, n + 1)]


def names(report: DataReport, kind: str) -> list[str]:
    """The file names of one problem kind, without the details after ': '."""
    return [entry.split(": ")[0] for entry in report.problems.get(kind, [])]


def kinds(report: DataReport) -> set[str]:
    return {kind for kind, entries in report.problems.items() if entries}


def expected_box(box: Box, width: int, height: int) -> Box:
    """The documented normalization, written out: ((xmin-1)/W, (ymin-1)/H, xmax/W, ymax/H)."""
    return ((box[0] - 1) / width, (box[1] - 1) / height, box[2] / width, box[3] / height)


def run_export(checkpoint: Path, folder: Path) -> tuple[Path, dict, list[str]]:
    """``petloc-export`` through its console entry, as a user runs it: (ONNX file in ``folder``, the
    JSON report it prints last, every printed line)."""
    from petloc.cli.export import main

    onnx_path = folder / "model.onnx"
    argv = ["petloc-export", f"ckpt_path={checkpoint}", f"output={onnx_path}", "latency_runs=10"]
    printed = io.StringIO()
    with (
        mock.patch.object(sys, "argv", [*argv, f"hydra.run.dir={folder / 'run'}"]),
        contextlib.redirect_stdout(printed),
    ):
        main()
    lines = printed.getvalue().splitlines()
    return onnx_path, json.loads(lines[-1]), lines


# ---- models ---------------------------------------------------------------------------------------

SIZE = 64  # input side of the small modules and batches below
# The heads a run can pick, by option name (conf/head/*.yaml) with the class each one builds: tests
# parametrized over it cover a new head's config file without being edited.
HEADS: dict[str, type[BoxHead]] = {
    path.stem: get_class(OmegaConf.load(path)._target_)
    for path in sorted((CONFIG_DIR / "head").glob("*.yaml"))
}


@functools.cache
def _compose(overrides: tuple[str, ...], config_name: str) -> DictConfig:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=["paths.output_dir=unused", *overrides])


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """The real conf/ composed with ``overrides`` outside a Hydra app, for building a module (its
    ``paths.output_dir`` is a placeholder: nothing is written). Tests that write use ``make_cfg``."""
    return copy.deepcopy(_compose(overrides, config_name))


def make_module(
    head: str = "conv",
    *overrides: str,
    backbone: str = "mobilenetv3_small",
    mode: str = "box",
    num_classes: int = 0,
    loss: str = "mse",
    flip: bool = False,
) -> PetLocModule:
    """A small module built from the real config as petloc-train builds it: alpha 0.25, SIZE px, SGD
    at lr 0.1 without a scheduler, the inference options off unless asked for (``flip``,
    ``overrides``), classes named ``class_0``, ``class_1``, ... Seeded: two calls give one network."""
    cfg = compose_config(
        f"head={head}",
        f"backbone={backbone}",
        "alpha=0.25",
        f"image_size={SIZE}",
        f"mode={mode}",
        f"loss={loss}",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "~scheduler",
        f"inference.flip={flip}",
        "inference.refine=false",
        *overrides,
    )
    torch.manual_seed(0)
    return PetLocModule(cfg, [f"class_{i}" for i in range(num_classes)])


def make_batch(n: int, seed: int = 0) -> dict[str, Tensor]:
    """uint8 NHWC images with valid boxes and labels, as the DataModule delivers them."""
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=generator) * 0.5
    size = 0.2 + torch.rand(n, 2, generator=generator) * 0.3
    box = torch.cat([corner, corner + size], dim=1)
    return {
        "image": torch.randint(0, 256, (n, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator),
        "box": box,
        "boxes": torch.cat([box[:, None], torch.zeros(n, MAX_BOXES - 1, 4)], dim=1),
        "num_boxes": torch.ones(n, dtype=torch.long),
        "mosaic": torch.zeros(n, dtype=torch.bool),
        "label": torch.randint(0, 2, (n,), generator=generator),
    }


def make_samples(n: int, seed: int = 1) -> list[dict[str, Tensor]]:
    """:func:`make_batch` as ``n`` single samples, for a DataLoader to collate again."""
    batch = make_batch(n, seed)
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def assert_training_unaffected(module: PetLocModule, plain: PetLocModule, images: Tensor) -> None:
    """Inference options leave training alone: in train mode both modules predict the same boxes."""
    module.train(), plain.train()
    with torch.no_grad():
        torch.manual_seed(1)  # the same dropout draws for both
        boxes = module(images)[0].box
        torch.manual_seed(1)
        torch.testing.assert_close(boxes, plain(images)[0].box)


# ---- the shared tiny training run ------------------------------------------------------------------

# Tiny and quick: 60 synthetic images at 64 px, 2 epochs; species mode so class outputs are covered.
TINY_RUN = (
    "mode=species",
    "alpha=0.25",  # the smallest network: the checks need a checkpoint, not a good one
    "image_size=64",
    "data.synthetic.n=60",
    "data.min_epoch_images=1",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",  # two validations: eval must reproduce the best one's
    "trainer.max_time=null",
    "trainer.enable_progress_bar=false",
)


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run folder and what the tests read from it."""

    run_dir: Path
    data_root: Path

    @property
    def best(self) -> Path:
        return self.run_dir / "checkpoints" / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"


@dataclass(frozen=True)
class HydraRun:
    """A run of ``petloc.api.train`` (a Hydra job, as petloc-train runs one): its folder, its overrides
    and the metrics it returned."""

    run_dir: Path
    overrides: list[str]
    metrics: dict[str, float]


# The TensorBoard logger alone, its folder renamed: only the run's own config says where its scalars are.
RENAMED_LOGGER = ("logger=tensorboard", "logger.tensorboard.name=tb")
