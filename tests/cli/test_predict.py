"""petloc-predict: boxes in the original image's VOC pixels, unreadable files skipped."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from petloc.checkpoint import load_model
from petloc.cli.predict import main, predict
from petloc.data.formats import read_dataset, writable
from petloc.data.records import to_voc_pixels
from tests.helpers import TrainedRun  # the session's trained_run fixture (tests/conftest.py)

# A GIF and an RGBA PNG named .jpg, a big JPEG and a 299x299 one: all sizes and formats of the sample.
SAMPLE_IMAGES = ["Abyssinian_34.jpg", "Abyssinian_5.jpg", "Abyssinian_1.jpg", "Bengal_105.jpg"]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.realdata
def test_voc_box_round_trips_exactly(oxford_sample: Path) -> None:
    """XML box -> the reader's normalized box -> predict's pixel mapping gives the XML values back."""
    dataset = read_dataset(oxford_sample, "oxford")
    checked = 0
    for record in dataset.records:
        root = ET.parse(oxford_sample / "annotations" / "xmls" / f"{record.image_id}.xml").getroot()
        boxes = root.findall("object/bndbox")
        size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
        if len(boxes) != 1 or size != (record.width, record.height):
            continue  # several objects or a rescaled box: the reader changed it on purpose
        xml_box = tuple(float(boxes[0].findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        if xml_box[0] < 1 or xml_box[1] < 1 or xml_box[2] > size[0] or xml_box[3] > size[1]:
            continue  # reaches outside the image: clipped by the reader
        assert to_voc_pixels(record.box, record.width, record.height) == xml_box, record.image_id
        checked += 1
    assert checked > 600


@pytest.mark.realdata
def test_predict_folder_writes_pixel_boxes_and_skips_unreadable_files(
    trained_run: TrainedRun,
    oxford_sample: Path,
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in SAMPLE_IMAGES:
        shutil.copy(oxford_sample / "images" / name, folder / name)
    (folder / "truncated.jpg").write_bytes(
        (oxford_sample / "images" / "Abyssinian_10.jpg").read_bytes()[:3000]
    )
    (folder / "not_an_image.png").write_text("hello")
    (folder / "notes.txt").write_text("not an image suffix: not even tried")
    out = tmp_path / "out"

    csv_path = predict(
        make_cfg(f"ckpt_path={trained_run.best}", f"input={folder}", f"output={out}", config_name="predict")
    )

    columns, rows = read_csv(csv_path)
    assert columns == ["image", "xmin", "ymin", "xmax", "ymax", "score", "class", "class_prob"]
    assert sorted(row["image"] for row in rows) == sorted(SAMPLE_IMAGES)
    printed = capsys.readouterr().out
    assert "truncated.jpg" in printed and "not_an_image.png" in printed and "notes.txt" not in printed

    module, cfg = load_model(trained_run.best)
    reader = instantiate(cfg.data).image_reader()
    for row in rows:
        with Image.open(folder / row["image"]) as im:
            width, height = im.size
        xmin, ymin, xmax, ymax = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        assert 1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height, row
        assert 0 < float(row["score"]) <= 1
        assert row["class"] in {"cat", "dog"} and 0.5 <= float(row["class_prob"]) <= 1
        # the box is the model's, mapped with VOC's 1-based convention: xmin = x0 * W + 1, xmax = x1 * W
        image, _ = reader(folder / row["image"])
        with torch.inference_mode():
            x0, y0, x1, y1 = module.predict_boxes(torch.from_numpy(image[None]))["box"][0].tolist()
        expected = (x0 * width + 1, y0 * height + 1, x1 * width, y1 * height)
        np.testing.assert_allclose((xmin, ymin, xmax, ymax), expected, atol=0.05 + 1e-9)
        # the drawn copy: full size, red on the box's top edge
        with Image.open(out / "drawn" / row["image"]) as drawn:
            assert drawn.size == (width, height)
            pixels = np.asarray(drawn.convert("RGB")).astype(int)
        r, g, b = pixels[int(y0 * height) + 1, int((x0 + x1) / 2 * width)]
        assert r > 150 and g < 100 and b < 100, (row["image"], (r, g, b))


def test_an_oversized_image_is_a_named_skip(
    trained_run: TrainedRun,
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """PIL refuses images of more than twice ``Image.MAX_IMAGE_PIXELS`` pixels (a decompression bomb)
    with an error that is not an OSError; predict skips such a file by name and predicts the others.
    The limit is lowered so a 100x100 image stands in for a bomb."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (30, 24), (200, 120, 40)).save(folder / "small.png")  # 720 pixels: fine
    Image.new("RGB", (100, 100), (200, 120, 40)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100x100 = 10,000 > 2 x 1,000: refused
    with pytest.raises(Image.DecompressionBombError), Image.open(folder / "bomb.png"):
        pass

    out = tmp_path / "out"
    cfg = make_cfg(f"ckpt_path={trained_run.best}", f"input={folder}", f"output={out}", config_name="predict")
    _, rows = read_csv(predict(cfg))

    assert [row["image"] for row in rows] == ["small.png"]
    assert "skipped, cannot decode: ['bomb.png']" in capsys.readouterr().out
    assert [p.name for p in (out / "drawn").iterdir()] == ["small.png"]


def test_console_entry_predicts_a_single_file(
    trained_run: TrainedRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = sorted((trained_run.data_root / "images").glob("*.jpg"))[0]
    out = tmp_path / "out"
    argv = [
        "petloc-predict",
        f"ckpt_path={trained_run.best}",
        f"input={image}",
        f"output={out}",
        "draw=false",
    ]
    monkeypatch.setattr(sys, "argv", [*argv, f"hydra.run.dir={tmp_path / 'run'}"])
    main()
    _, rows = read_csv(out / "predictions.csv")
    assert [row["image"] for row in rows] == [image.name]
    assert not (out / "drawn").exists()
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()


@pytest.mark.parametrize("fmt", writable())
def test_predictions_as_a_dataset_read_back_with_every_image_usable(
    fmt: str, trained_run: TrainedRun, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """format=NAME writes the predictions for an annotation tool; `petloc-data check` (a real
    process) reads every image back, with predict's box and class, and COCO carries the score."""
    folder = tmp_path / "in"
    folder.mkdir()
    for image in sorted((trained_run.data_root / "images").glob("*.jpg"))[:5]:
        shutil.copy(image, folder / image.name)
    out = tmp_path / "out"
    cfg = make_cfg(
        f"ckpt_path={trained_run.best}", f"input={folder}", f"output={out}", "draw=false", f"format={fmt}",
        config_name="predict",
    )  # fmt: skip
    _, rows = read_csv(predict(cfg))
    check = subprocess.run(
        [sys.executable, "-m", "petloc.cli.data", "check", str(out / fmt)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert f"format: {fmt} (detected)" in check.stdout and "5 images, 5 usable boxed images" in check.stdout

    dataset = read_dataset(out / fmt)
    written = {r.path.name: r for r in dataset.records}
    for row in rows:
        record = written[row["image"]]
        pixels = to_voc_pixels(record.box, record.width, record.height)
        expected = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        np.testing.assert_allclose(pixels, expected, atol=0.05 + 1e-9)
        assert dataset.classes[record.labels["class"]] == row["class"]
    if fmt == "coco":
        document = json.loads((out / "coco" / "annotations" / "instances.json").read_text())
        scores = {
            image["file_name"]: a["score"]
            for image, a in zip(document["images"], document["annotations"], strict=True)
        }
        assert scores == {row["image"]: float(row["score"]) for row in rows}


def test_an_unknown_format_stops_before_predicting(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg("ckpt_path=none.ckpt", f"input={tmp_path}", "format=pascal", config_name="predict")
    with pytest.raises(ValueError, match=r"format='pascal': allowed values are null or one of \['coco'"):
        predict(cfg)
