"""petloc from Python (``petloc.api``): README's example gives petloc-predict's boxes; paths, PIL images and
arrays read alike; a run folder loads its best checkpoint; ``train`` returns what the run folder records."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import DictConfig
from PIL import Image

from petloc.api import load_model
from petloc.cli.predict import predict
from tests.conftest import REPO
from tests.helpers import HydraRun, TrainedRun  # of the session's run fixtures (tests/conftest.py)


def readme_python_example() -> str:
    """The first Python block of README's "Python API" section, as a user copies it."""
    section = (REPO / "README.md").read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README's Python API section has no python block"
    return match.group(1)


@contextmanager
def working_folder(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def predicted_rows(csv_path: Path) -> dict[str, dict[str, str]]:
    with csv_path.open() as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def test_readme_example_gives_the_boxes_of_petloc_predict(
    trained_run: TrainedRun, tmp_path: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    code = readme_python_example()
    # the files the example names, made from the tiny run's checkpoint and two of its images
    (checkpoint,) = re.findall(r'load_model\("([^"]+)"\)', code)
    photos = re.findall(r'"(photos/[^"]+)"', code)
    assert len(photos) == 2
    (tmp_path / checkpoint).parent.mkdir(parents=True)
    shutil.copy(trained_run.best, tmp_path / checkpoint)
    (tmp_path / "photos").mkdir()
    sources = sorted((trained_run.data_root / "images").glob("*.jpg"))[:2]
    for source, photo in zip(sources, photos, strict=True):
        shutil.copy(source, tmp_path / photo)

    namespace: dict[str, object] = {}
    with working_folder(tmp_path):
        exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]

    csv_path = predict(
        make_cfg(
            f"ckpt_path={trained_run.best}",
            f"input={tmp_path / 'photos'}",
            f"output={tmp_path / 'predicted'}",
            "draw=false",
            config_name="predict",
        )
    )
    rows = predicted_rows(csv_path)
    for i, photo in enumerate(photos):
        row = rows[Path(photo).name]
        expected = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        assert result.boxes[i].tolist() == expected, photo  # type: ignore[attr-defined]
        assert result.scores[i] == pytest.approx(float(row["score"]), abs=5e-5)  # type: ignore[attr-defined]
        assert result.classes[i] == row["class"]  # type: ignore[attr-defined]


def test_paths_pil_images_and_arrays_give_the_same_boxes(trained_run: TrainedRun, tmp_path: Path) -> None:
    # PNG: a file's pixels are the decoded image's (a JPEG file is decoded at a reduced scale)
    source = sorted((trained_run.data_root / "images").glob("*.jpg"))[0]
    png = tmp_path / "pet.png"
    with Image.open(source) as im:
        im.convert("RGB").save(png)
        width, height = im.size
    with Image.open(png) as opened:
        pixels = np.asarray(opened.convert("RGB"))
    model = load_model(trained_run.best, device="cpu")

    with Image.open(png) as opened:
        result = model.predict([png, str(png), opened, Image.fromarray(pixels), pixels])

    assert len(result) == 5
    for i in range(1, 5):
        assert result.boxes[i].tolist() == result.boxes[0].tolist()
        assert result.scores[i] == pytest.approx(result.scores[0], abs=1e-6)
    # pixel boxes: 1-based inclusive VOC pixels of the image, from the normalized box
    x0, y0, x1, y1 = result.normalized[0].tolist()
    np.testing.assert_allclose(
        result.boxes[0], (x0 * width + 1, y0 * height + 1, x1 * width, y1 * height), atol=0.05 + 1e-9
    )
    assert result.classes is not None and result.classes[0] in {"cat", "dog"}
    assert result.class_probs is not None and result.class_probs.shape == (5, 2)
    # one image alone is a batch of one
    assert model.predict(png).boxes.tolist() == result.boxes[:1].tolist()
    with pytest.raises(TypeError, match="uint8"):
        model.predict(pixels.astype(np.float32))


def test_inference_options_change_the_prediction(trained_run: TrainedRun) -> None:
    image = sorted((trained_run.data_root / "images").glob("*.jpg"))[0]
    refined = load_model(trained_run.best).predict(image)
    one_look = load_model(trained_run.best, inference={"refine": False}).predict(image)
    assert refined.boxes.tolist() != one_look.boxes.tolist()


def test_a_run_folder_loads_its_best_checkpoint(trained_run: TrainedRun) -> None:
    image = sorted((trained_run.data_root / "images").glob("*.jpg"))[0]
    from_folder = load_model(trained_run.run_dir, device="cpu").predict(image)
    assert (
        from_folder.boxes.tolist() == load_model(trained_run.best, device="cpu").predict(image).boxes.tolist()
    )


@pytest.mark.slow
def test_train_returns_the_metrics_of_its_run_folder(hydra_run: HydraRun) -> None:
    """``petloc.api.train`` (the session's hydra_run) ran a Hydra job in hydra.run.dir."""
    run, metrics, overrides = hydra_run.run_dir, hydra_run.metrics, hydra_run.overrides

    assert metrics == json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0 <= metrics["val/iou"] <= 1
    # a run folder as petloc-train writes it: the composed config and the overrides
    task_overrides = [o for o in overrides if not o.startswith("hydra.")]  # Hydra keeps its own apart
    assert yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) == task_overrides
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["data"]["synthetic"]["n"] == 60
    assert (run / "checkpoints" / "best.ckpt").is_file()
