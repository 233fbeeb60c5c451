"""The images eval, predict and export read: validation-exact preprocessing
(petloc.data.images.ImageReader) and the image files of a folder (petloc.data.images.list_images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from petloc.data.datamodule import LocalizationDataModule
from petloc.data.images import list_images


def _write_voc_folder(root: Path, sources: list[Path]) -> None:
    """A tiny Oxford-layout folder over ``sources`` with a made-up box per image."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "xmls").mkdir(parents=True)
    lines = []
    for src in sources:
        (root / "images" / src.name).write_bytes(src.read_bytes())
        with Image.open(src) as im:
            w, h = im.size
        (root / "annotations" / "xmls" / f"{src.stem}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"<object><name>cat</name><bndbox><xmin>{w // 4}</xmin><ymin>{h // 5}</ymin>"
            f"<xmax>{w // 2}</xmax><ymax>{h // 2}</ymax></bndbox></object></annotation>"
        )
        lines.append(f"{src.stem} 1 1 1")
    (root / "annotations" / "list.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.realdata
def test_image_reader_gives_the_validation_pixels(oxford_sample: Path, tmp_path: Path) -> None:
    """Files of every kind (a GIF and an RGBA PNG named .jpg, big and 299x299 JPEGs) reach the model
    exactly as the DataModule's validation loader delivers them."""
    names = ["Abyssinian_34", "Abyssinian_5", "Abyssinian_1", "Bengal_105", "Abyssinian_10"]
    root = tmp_path / "subset"
    _write_voc_folder(root, [oxford_sample / "images" / f"{n}.jpg" for n in names])
    data_cfg = OmegaConf.create(
        {
            "_target_": "petloc.data.datamodule.LocalizationDataModule",
            "root": str(root),
            "image_size": 96,
            "val_fraction": 1.0,
            "num_workers": 0,
            "cache_dir": str(tmp_path / "cache"),
            "cache_scale": 1.25,
        }
    )
    datamodule = LocalizationDataModule(**{k: v for k, v in data_cfg.items() if k != "_target_"})
    datamodule.setup("validate")
    dataset = datamodule.val_dataloader().dataset
    assert len(dataset) == len(names)
    reader = instantiate(data_cfg).image_reader()  # as predict and export get it: from the config alone
    for sample, record in zip(dataset, datamodule.val_records, strict=True):
        image, (width, height) = reader(record.path)
        assert (width, height) == (record.width, record.height)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, sample["image"].numpy(), err_msg=record.image_id)


def test_list_images_takes_a_file_or_the_image_files_of_a_folder(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.gif", "notes.txt", "d.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()  # a folder named like an image is not one
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.gif", "d.jpeg"]
    assert list_images(tmp_path / "a.png") == [tmp_path / "a.png"]
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        list_images(tmp_path / "missing")
