"""Every format end to end: ``petloc-data synth --format`` writes the synthetic set, ``petloc-data
check`` names the format, a class-aware run trains on it, and eval and predict work on its checkpoint.

The oracle for the records is tests/data/formats/test_equivalence.py (real boxes, converted with the
standard library); here the point is that every feature reaches every format: the data group
option, mode=class with the format's class names, the checkpoint's class names in predict's CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from petloc.cli.data import main as data_main
from petloc.cli.evaluate import evaluate
from petloc.cli.predict import predict
from petloc.data.formats import writable
from petloc.data.synthetic import SYNTHETIC_BREEDS
from petloc.train import train

BREEDS = {name for name, _ in SYNTHETIC_BREEDS}  # the generator's six breeds: the class names
RUN = (
    "mode=class",
    "alpha=0.25",
    "image_size=64",
    "data.batch_size=8",
    "data.min_epoch_images=1",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.max_time=null",
    "trainer.enable_progress_bar=false",
)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    folders: dict[str, Path] = {}

    def make(fmt: str) -> Path:
        if fmt not in folders:
            out = tmp_path_factory.mktemp("synth") / fmt
            assert data_main(["synth", str(out), "--format", fmt, "--n", "48", "--seed", "3"]) == 0
            folders[fmt] = out
        return folders[fmt]

    return make


@pytest.mark.parametrize("fmt", writable())
def test_synth_writes_every_format_and_check_names_it(
    fmt: str, synth_root: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = synth_root(fmt)
    capsys.readouterr()
    assert data_main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"format: {fmt} (detected)\n")
    # 48 images, 10% of them drawn without a box (the generator's test split): 43 boxed
    assert "43 usable boxed images" in out and "no problems found" in out
    assert "label sets: class (6: " in out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", writable())
def test_a_class_run_on_every_format_then_eval_and_predict(
    fmt: str, synth_root: Callable[[str], Path], make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    root = synth_root(fmt)
    metrics = train(make_cfg(f"data={fmt}", f"data.root={root}", *RUN))
    assert 0 <= metrics["val/cls_acc"] <= 1 and 0 <= metrics["val/iou"] <= 1
    best = tmp_path / "checkpoints" / "best.ckpt"
    assert best.is_file()

    evaluated = evaluate(make_cfg(f"ckpt_path={best}", f"output={tmp_path / 'eval'}", config_name="eval"))
    assert evaluated["val/iou"] == pytest.approx(metrics["val/iou_best"], abs=1e-4)

    images = sorted(p for p in root.rglob("*.jpg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    csv_path = predict(
        make_cfg(f"ckpt_path={best}", f"input={folder}", f"output={tmp_path / 'out'}", config_name="predict")
    )
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == sorted(p.name for p in images)
    assert {r["class"] for r in rows} <= BREEDS  # the format's class names, from the checkpoint
