"""Inference on a trained checkpoint: safe loading and rebuilding (petloc.checkpoint), the app's
changes merged into the trained config (petloc.config.merge_config), validation-exact preprocessing
(petloc.data.images.ImageReader), head scores and class names (petloc.models.inference.InferenceModel).

The checkpoint is the session's ``trained_run`` (tests/conftest.py), shared with the CLI tests.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from petloc.checkpoint import CheckpointError, CheckpointMismatchError, load_model, read_checkpoint
from petloc.config import ConfigError, merge_config
from petloc.data.datamodule import LocalizationDataModule
from petloc.data.images import list_images
from petloc.models.inference import InferenceModel, InferenceOptions
from petloc.models.module import PetLocModule
from tests.helpers import TrainedRun, make_module, make_samples


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
    reader = instantiate(data_cfg).image_reader()  # as predict and export get it: from the config alone
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
        module = PetLocModule(make_cfg("image_size=64", f"head.radius={radius}")).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=generator)
    with torch.inference_mode():
        out, _ = module(images)
        box, score, *class_prob = InferenceModel(module)(images)
        expected = module.predict_boxes(images)
    # the deployed graph folds the batch norms: the same outputs to float rounding
    torch.testing.assert_close(box, expected["box"], rtol=0, atol=1e-5)
    if class_prob:
        torch.testing.assert_close(class_prob[0], expected["class_prob"], rtol=0, atol=1e-5)
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
    module = PetLocModule(cfg).eval()
    images = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    with torch.inference_mode():
        outputs = InferenceModel(module)(images)
    assert len(outputs) == 2  # box mode: no class probabilities
    assert torch.equal(outputs[1], torch.ones(2))


def test_the_checkpoint_carries_the_class_names(trained_run: TrainedRun, tmp_path: Path) -> None:
    module, _ = load_model(trained_run.best)
    assert module.class_names == ["cat", "dog"]  # species mode on the synthetic set
    assert read_checkpoint(trained_run.best)["hyper_parameters"] == {"class_names": ["cat", "dog"]}
    # they come from the checkpoint, not the dataset: a model rebuilds where its data is gone
    gone = OmegaConf.create({"data": {"root": str(tmp_path / "gone")}})
    assert load_model(trained_run.best, gone)[0].class_names == ["cat", "dog"]


def test_list_images_takes_a_file_or_the_image_files_of_a_folder(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.gif", "notes.txt", "d.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()  # a folder named like an image is not one
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.gif", "d.jpeg"]
    assert list_images(tmp_path / "a.png") == [tmp_path / "a.png"]
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        list_images(tmp_path / "missing")


def test_the_app_changes_each_inference_option_and_null_keeps_the_trained_one(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig]
) -> None:
    """The trained run has the defaults (no flip, refine, margin 1.6, full-size second look);
    petloc-eval/-predict/-export change any one of them by its key, and every key they leave null
    keeps the checkpoint's value."""
    trained = InferenceOptions(flip=False, refine=True, refine_margin=1.6, refine_size=None)
    module, cfg = load_model(trained_run.best, make_cfg("ckpt_path=x", config_name="predict"))
    assert module.inference == trained
    assert OmegaConf.to_container(cfg.inference) == dataclasses.asdict(trained)
    for change, expected in (
        ("inference.flip=true", dataclasses.replace(trained, flip=True)),
        ("inference.refine=false", dataclasses.replace(trained, refine=False)),
        ("inference.refine_margin=1.4", dataclasses.replace(trained, refine_margin=1.4)),
        ("inference.refine_size=32", dataclasses.replace(trained, refine_size=32)),
    ):
        for app in ("eval", "predict", "export"):
            overrides = make_cfg("ckpt_path=x", change, config_name=app)
            assert load_model(trained_run.best, overrides)[0].inference == expected, (app, change)
    for bad, message in (("refine_margin=0.5", ">= 1"), ("refine_size=48", "a multiple of 32")):
        with pytest.raises(ConfigError, match=rf"inference.{bad}.*{message}"):
            load_model(trained_run.best, make_cfg("ckpt_path=x", f"inference.{bad}", config_name="eval"))


def test_a_checkpoint_from_before_the_inference_node_loads(trained_run: TrainedRun, tmp_path: Path) -> None:
    """Checkpoints written before the options became one node kept flip_test/refine/refine_margin at
    the top level; merge_config moves them into the node (absent ones take the plain model's values)."""

    def old_layout(checkpoint: dict) -> None:
        config = checkpoint["petloc_config"]
        options = config.pop("inference")
        assert options["flip"] is False  # the trained default; the old layout below says otherwise
        config.update(flip_test=True, refine=False)

    path = _rewrite_checkpoint(trained_run.best, tmp_path / "old.ckpt", old_layout)
    module, cfg = load_model(path)
    assert module.inference == InferenceOptions(flip=True, refine=False, refine_margin=1.6)
    assert "flip_test" not in cfg and "refine" not in cfg
    merged = merge_config(OmegaConf.create({**read_checkpoint(path)["petloc_config"], "refine_margin": 1.4}))
    assert merged.inference.refine_margin == 1.4


def test_a_checkpoint_of_a_module_fitted_outside_petloc_train_loads(tmp_path: Path) -> None:
    """The config is part of a PetLocModule's construction, so a module fitted by a Trainer of one's
    own (not petloc.train) saves a checkpoint that eval, predict and export rebuild."""
    module = make_module("center", mode="species", num_classes=2)
    samples = make_samples(4, seed=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(samples, batch_size=4))
    trainer.save_checkpoint(tmp_path / "own.ckpt")

    loaded, cfg = load_model(tmp_path / "own.ckpt")
    assert loaded.class_names == ["class_0", "class_1"] and cfg.head._target_.endswith("CenterHead")
    stored = module.state_dict()
    assert loaded.state_dict().keys() == stored.keys()
    for key, value in stored.items():
        assert torch.equal(loaded.state_dict()[key], value), key
