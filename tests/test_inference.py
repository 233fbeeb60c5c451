"""petloc.inference: checkpoint loading, validation-exact preprocessing, head scores, class names.

Also home of ``trained_run``, the one tiny checkpoint the CLI tests (eval, predict, export) share:
they import it from here, so it is trained once per session.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from petloc import CONFIG_DIR
from petloc.data.datamodule import LocalizationDataModule
from petloc.data.images import list_images
from petloc.inference import (
    CheckpointError,
    CheckpointMismatchError,
    ImageReader,
    InferenceModel,
    load_model,
    read_checkpoint,
)
from petloc.models.factory import build_module
from petloc.train import train

# Tiny and quick: 60 synthetic images at 64 px, 2 epochs; species mode so class outputs are covered.
TRAIN_OVERRIDES = [
    "mode=species",
    "alpha=0.25",  # the smallest network: the checks below need a checkpoint, not a good one
    "image_size=64",
    "data.synthetic.n=60",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",  # two validations: eval must reproduce the best one's
    "trainer.max_time=null",
    "trainer.enable_progress_bar=false",
]


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


@functools.cache
def _train_tiny_run(base: Path, cache_dir: Path) -> TrainedRun:
    """Train once per test session: pytest makes a separate fixture for every module importing
    ``trained_run``, so the cache (keyed by the session's folders) is what keeps it one run."""
    run_dir = base / "trained-run"
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        overrides = [f"paths.output_dir={run_dir}", f"paths.cache_dir={cache_dir}", *TRAIN_OVERRIDES]
        cfg = compose("train", overrides=overrides)
    train(cfg)
    return TrainedRun(run_dir=run_dir, data_root=Path(cfg.data.root))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> TrainedRun:
    """One tiny checkpoint trained with petloc.train.train on the real composed config."""
    return _train_tiny_run(tmp_path_factory.getbasetemp(), cache_dir)


def test_load_model_restores_the_trained_weights(trained_run: TrainedRun) -> None:
    module, cfg = load_model(trained_run.best)
    stored = torch.load(trained_run.best, map_location="cpu", weights_only=True)["state_dict"]
    restored = module.state_dict()
    assert restored.keys() == stored.keys()
    for key, value in stored.items():
        assert torch.equal(restored[key], value), key
    assert not module.training
    assert cfg.image_size == 64 and cfg.mode.name == "species"
    assert module.classifier is not None and module.classifier.out_features == 2


def _rewrite_checkpoint(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


def test_pretrained_backbone_is_never_downloaded(trained_run: TrainedRun, tmp_path: Path) -> None:
    """A checkpoint trained from ImageNet weights rebuilds offline: the weights are in the checkpoint."""

    def mark_pretrained(checkpoint: dict) -> None:
        checkpoint["petloc_config"]["backbone"].update(
            pretrained=True, weights_file="/nonexistent.safetensors"
        )

    path = _rewrite_checkpoint(trained_run.best, tmp_path / "pretrained.ckpt", mark_pretrained)
    module, cfg = load_model(path)
    assert cfg.backbone.pretrained is False and cfg.backbone.weights_file is None
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(module.state_dict()["head.pred.weight"], stored["head.pred.weight"])


def test_architecture_override_that_does_not_fit_names_both_configs(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(f"ckpt_path={trained_run.best}", "alpha=0.5", config_name="eval")
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(trained_run.best, cfg)
    message = str(info.value)
    assert "checkpoint: backbone=mobilenetv1 alpha=0.25 head=CenterHead" in message
    assert "requested:  backbone=mobilenetv1 alpha=0.5 head=CenterHead" in message
    assert "size mismatch" in message


def test_head_group_override_that_does_not_fit_names_both_heads(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(f"ckpt_path={trained_run.best}", "head=pooled", config_name="predict")
    with pytest.raises(CheckpointMismatchError, match=r"(?s)head=CenterHead.*head=PooledHead"):
        load_model(trained_run.best, cfg)


class _Payload:
    """Unpickling this would create ``marker``: what a malicious checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_objects_is_refused_unexecuted(
    trained_run: TrainedRun, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    path = _rewrite_checkpoint(
        trained_run.best, tmp_path / "evil.ckpt", lambda ckpt: ckpt.update(extra=_Payload(marker))
    )
    with pytest.raises(CheckpointError, match=r"refusing to unpickle.*Unsupported global"):
        read_checkpoint(path)
    assert not marker.exists()


def test_non_petloc_and_missing_checkpoints_are_clear_errors(trained_run: TrainedRun, tmp_path: Path) -> None:
    path = _rewrite_checkpoint(
        trained_run.best, tmp_path / "plain.ckpt", lambda ckpt: ckpt.pop("petloc_config")
    )
    with pytest.raises(ValueError, match="not a petloc checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "text.ckpt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("notes.txt", "a zip archive, but not one torch.save wrote")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "other.zip")


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
    reader = ImageReader(data_cfg)
    for sample, record in zip(dataset, datamodule.val_records, strict=True):
        image, (width, height) = reader(record.path)
        assert (width, height) == (record.width, record.height)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, sample["image"].numpy(), err_msg=record.image_id)


@pytest.mark.parametrize("radius", [1, 2])
def test_center_head_score_is_the_neighbourhood_softmax_mass(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig], radius: int
) -> None:
    """The score sums the softmax over the cells within ``radius`` of the best cell (clipped to the grid)."""
    if radius == 1:
        module, _ = load_model(trained_run.best)
    else:  # an untrained head decoding over 5x5 cells
        module = build_module(make_cfg("image_size=64", f"head.radius={radius}"), 0).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=generator)
    with torch.inference_mode():
        out, _ = module(images)
        box, score, *class_prob = InferenceModel(module)(images)
        expected = module.predict_boxes(images)
    torch.testing.assert_close(box, expected["box"], rtol=0, atol=0)
    if class_prob:
        torch.testing.assert_close(class_prob[0], expected["class_prob"], rtol=0, atol=0)
    _, h, w, _ = out.cell_boxes.shape
    for i in range(len(images)):
        probs = torch.softmax(out.cell_logits[i].double(), dim=0).reshape(h, w)
        row, col = divmod(int(probs.argmax()), w)
        mass = sum(
            float(probs[r, c])
            for r in range(max(row - radius, 0), min(row + radius + 1, h))
            for c in range(max(col - radius, 0), min(col + radius + 1, w))
        )
        assert float(score[i]) == pytest.approx(mass, abs=1e-6)
        assert 0 < float(score[i]) <= 1


def test_global_head_score_is_one(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("head=pooled", "image_size=64")
    module = build_module(cfg).eval()
    images = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    with torch.inference_mode():
        outputs = InferenceModel(module)(images)
    assert len(outputs) == 2  # box mode: no class probabilities
    assert torch.equal(outputs[1], torch.ones(2))


def test_the_checkpoint_carries_the_class_names(trained_run: TrainedRun, tmp_path: Path) -> None:
    module, _ = load_model(trained_run.best)
    assert module.hparams.class_names == ["cat", "dog"]  # species mode on the synthetic set
    # they come from the checkpoint, not the dataset: a model rebuilds where its data is gone
    gone = OmegaConf.create({"data": {"root": str(tmp_path / "gone")}})
    assert load_model(trained_run.best, gone)[0].hparams.class_names == ["cat", "dog"]


def test_list_images_takes_a_file_or_the_image_files_of_a_folder(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.gif", "notes.txt", "d.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()  # a folder named like an image is not one
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.gif", "d.jpeg"]
    assert list_images(tmp_path / "a.png") == [tmp_path / "a.png"]
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        list_images(tmp_path / "missing")
