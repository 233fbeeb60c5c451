"""Real pretrained weights: the Hugging Face cache path, other widths, and a fine-tuned run of each
pretrained backbone end to end (train, eval, predict, the Python API, export).

The weights are the files of ``../shared/weights`` (see its README): MobileNetV2 and
EfficientNet-Lite0 on ImageNet, and the SSDLite person detector's MobileNetV2. The oracle for
every loaded tensor is the file itself, read with ``safetensors.torch.load_file``, never petloc's
or timm's loading code.

A user with internet gets timm's weights from the Hugging Face hub; no test can download, so the
shared file is laid into a temporary hub cache in huggingface_hub's own layout and loaded offline:
timm's real download code runs and finds it there, as it finds a file a past download left.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from safetensors.torch import load_file

from petloc import CONFIG_DIR, api
from petloc.cli.evaluate import evaluate
from petloc.cli.predict import predict
from petloc.models.backbone import PretrainedWeightsError, create_backbone, pretrained_alphas
from petloc.train import train
from tests.conftest import event_scalars
from tests.helpers import run_export

# A made-up commit of the hub repository: the cache only needs refs/main to name a snapshot folder.
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ---- the Hugging Face cache path ---------------------------------------------------------------


def hub_location(model_name: str) -> tuple[str, str]:
    """(repo id, file name) timm downloads ``model_name``'s default pretrained tag from.

    With no ``hf_hub_filename`` in the pretrained config timm asks for ``pytorch_model.bin`` and, first,
    its safetensors alternative ``model.safetensors``: a cached safetensors file is what it loads.
    """
    cfg = timm.models.get_pretrained_cfg(model_name)
    assert cfg is not None and cfg.hf_hub_id, f"{model_name} has no Hugging Face weights in timm"
    assert cfg.hf_hub_filename is None, cfg.hf_hub_filename  # else that exact name is downloaded
    return cfg.hf_hub_id, "model.safetensors"


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face hub cache in tmp_path, offline: returns the cache folder (HF_HUB_CACHE)."""
    home = tmp_path / "hf-home"
    hub = home / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # timm's old torch.hub cache, which TIMM_USE_OLD_CACHE=1 would prefer to the hub's: empty too
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    # huggingface_hub reads the variables once, at import: its module constants are what it uses
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return hub


def add_to_hub_cache(hub: Path, repo_id: str, filename: str, source: Path) -> Path:
    """Lay ``source`` into ``hub`` as a download of ``repo_id``'s ``filename`` at ``main`` leaves it.

    huggingface_hub's layout: ``models--{org}--{name}/blobs/{sha256}`` holds the bytes (LFS files are
    named by their sha256), ``snapshots/{commit}/{filename}`` is a relative symlink to the blob, and
    ``refs/main`` holds the commit (no newline: its whole text is read as the hash).
    """
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    data = source.read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    pointer = repo / "snapshots" / COMMIT / filename
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    return pointer


def cache_listing(hub: Path) -> set[Path]:
    return {p.relative_to(hub) for p in hub.rglob("*")}


@pytest.mark.parametrize(
    ("backbone", "model_name", "file"),
    [
        ("mobilenetv2", "mobilenetv2_100", "mobilenetv2_100_in1k.safetensors"),
        ("efficientnet_lite0", "tf_efficientnet_lite0", "tf_efficientnet_lite0.safetensors"),
    ],
)
def test_hub_cache_and_weights_file_load_the_same_tensors(
    backbone: str, model_name: str, file: str, offline_hub: Path, weights_dir: Path
) -> None:
    """``pretrained=true`` alone (timm's hub download, served from the cache) and ``weights_file=PATH``
    give bit-identical backbones; the oracle for both is the file read with safetensors."""
    weights = weights_dir / file
    tensors = load_file(weights)
    repo_id, filename = hub_location(model_name)
    assert repo_id.startswith(f"timm/{model_name}."), repo_id  # the default tag, e.g. ra_in1k
    pointer = add_to_hub_cache(offline_hub, repo_id, filename, weights)
    # huggingface_hub itself finds the file where the layout says (the same resolution, no network)
    assert huggingface_hub.try_to_load_from_cache(repo_id, filename) == str(pointer)
    laid = cache_listing(offline_hub)

    from_hub = create_backbone(backbone, 1.0, pretrained=True).state_dict()
    from_file = create_backbone(backbone, 1.0, pretrained=True, weights_file=str(weights)).state_dict()

    assert cache_listing(offline_hub) == laid, "an offline load must not write into the cache"
    assert from_hub.keys() == from_file.keys()
    # the feature extractor is the network up to the last block: conv_head, bn2 and classifier stay out
    assert set(from_hub) <= set(tensors)
    assert {k.split(".")[0] for k in set(tensors) - set(from_hub)} == {"conv_head", "bn2", "classifier"}
    for key, value in from_hub.items():
        assert torch.equal(value, from_file[key]), key
        assert torch.equal(value, tensors[key]), key


def test_offline_with_an_empty_cache_is_an_error_naming_the_options(offline_hub: Path) -> None:
    """The same setup without the cached file: no silent random initialization, the options named."""
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone("mobilenetv2", 1.0, pretrained=True)
    message = str(info.value)
    assert "backbone.weights_file" in message and "backbone.weights_dir" in message
    assert "backbone.pretrained=false" in message
    assert not cache_listing(offline_hub), "an offline load must not write into the cache"


# ---- other widths --------------------------------------------------------------------------------


def test_weights_file_at_an_unpublished_width_names_the_published_ones(imagenet_weights: Path) -> None:
    """alpha=0.75 is a timm model (mobilenetv2_075) without published weights: a weights file does not
    get around that, and the message lists the widths that have them (test_backbone covers an alpha
    timm does not register at all, without a file)."""
    available = pretrained_alphas("mobilenetv2")
    assert 0.75 not in available and 1.0 in available, available
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone("mobilenetv2", 0.75, pretrained=True, weights_file=str(imagenet_weights))
    message = str(info.value)
    assert str(available) in message
    assert "backbone.pretrained=false" in message


@pytest.mark.parametrize("alpha", [0.5, 1.4])
def test_the_alpha_1_file_at_another_published_width_is_refused(alpha: float, imagenet_weights: Path) -> None:
    """Published widths need their own file: the 1.0 file (known by its name) is refused with the
    width it fits, never a partly loaded backbone."""
    assert alpha in pretrained_alphas("mobilenetv2")
    with pytest.raises(
        PretrainedWeightsError, match=re.escape("holds the weights of backbone=mobilenetv2 alpha=1.0")
    ) as info:
        create_backbone("mobilenetv2", alpha, pretrained=True, weights_file=str(imagenet_weights))
    assert f"backbone.weights_file={imagenet_weights}" in str(info.value)


# ---- a fine-tuned checkpoint: eval, predict, export ----------------------------------------------


@dataclass(frozen=True)
class FinetunedRun:
    run_dir: Path
    data_root: Path
    metrics: dict[str, float]
    backbone: str
    weights: Path

    @property
    def best(self) -> Path:
        return self.run_dir / "checkpoints" / "best.ckpt"


# Each backbone with a shared weights file, and that file (found through backbone.weights_dir).
PRETRAINED = {
    "mobilenetv2": "mobilenetv2_100_in1k.safetensors",
    "efficientnet_lite0": "tf_efficientnet_lite0.safetensors",
    "mobilenetv2_tf": "mobilenetv2_100_ssdlite_pedestrian_backbone.safetensors",
}


@pytest.fixture(scope="module", params=sorted(PRETRAINED))
def finetuned(
    request: pytest.FixtureRequest,
    weights_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    cache_dir: Path,
) -> FinetunedRun:
    """One epoch of each pretrained backbone at alpha 1.0 from its shared file, found in the weights
    folder, trained with petloc.train.train on the composed real config (48 synthetic images at 64 px)."""
    backbone = request.param
    run_dir = tmp_path_factory.mktemp(f"finetuned-{backbone}")
    overrides = [
        f"paths.output_dir={run_dir}",
        f"paths.cache_dir={cache_dir}",
        f"backbone={backbone}",
        "alpha=1.0",
        "backbone.pretrained=true",
        f"backbone.weights_dir={weights_dir}",
        "image_size=64",
        "data.synthetic.n=48",
        "data.min_epoch_images=1",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.max_time=null",
        "trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics = train(cfg)
    return FinetunedRun(run_dir, Path(cfg.data.root), metrics, backbone, weights_dir / PRETRAINED[backbone])


def checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_finetuning_starts_from_the_weights_file_and_moves_off_it(finetuned: FinetunedRun) -> None:
    """Oracle: the file (read with safetensors). Each backbone tensor of best.ckpt is named as in the
    file; the weights moved (training happened) but stay close to the file's (it started there, not
    from a random init); every BatchNorm counter is the file's plus one per training step (each BN
    layer saw exactly the run's batches, on top of the pretrained statistics); all is finite."""
    file_tensors = load_file(finetuned.weights)
    state = checkpoint_state(finetuned.best)
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    assert backbone.keys() == create_backbone(finetuned.backbone, 1.0).state_dict().keys()
    assert set(backbone) <= set(file_tensors)

    for key, value in state.items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
    for key, value in backbone.items():
        if key.endswith("running_var"):
            assert (value >= 0).all(), key  # EfficientNet-Lite's file has dead channels at 0

    steps = int(finetuned.metrics["global_step"])
    assert steps > 0
    counters = [k for k in backbone if k.endswith("num_batches_tracked")]
    assert counters
    for key in counters:
        assert int(backbone[key]) == int(file_tensors[key]) + steps, key

    weights = [k for k in backbone if k.endswith(".weight")]
    moved = [k for k in weights if not torch.equal(backbone[k], file_tensors[k])]
    assert len(moved) == len(weights), sorted(set(weights) - set(moved))
    for key in weights:  # close to where it started: a random init would be uncorrelated
        a, b = backbone[key].flatten().double(), file_tensors[key].flatten().double()
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.9, key


@pytest.mark.slow
def test_eval_reproduces_the_logged_val_iou_best(
    finetuned: FinetunedRun, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Oracle: the run's TensorBoard scalar val/iou_best (one validation: the best is that epoch's
    val/iou), which petloc-eval on best.ckpt must reproduce to 1e-4."""
    scalars = event_scalars(finetuned.run_dir / "tensorboard")
    val_steps = {step for step, _ in scalars["val/loss"]}  # not the hparams' placeholder zeros
    (logged,) = [v for step, v in scalars["val/iou_best"] if step in val_steps]
    assert finetuned.metrics["val/iou_best"] == pytest.approx(logged, abs=1e-6)

    cfg = make_cfg(
        f"ckpt_path={finetuned.best}", f"output={tmp_path}", "worst_k=4", "progress=false", config_name="eval"
    )
    metrics = evaluate(cfg)
    assert abs(metrics["val/iou"] - logged) < 1e-4
    assert metrics["n_images"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


@pytest.mark.slow
def test_predict_writes_a_row_per_image(
    finetuned: FinetunedRun, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Oracle: the input folder (one CSV row per image, by name) and each image's own size (the box
    lies inside it, in 1-based VOC pixels); the Python API gives the same boxes."""
    folder = tmp_path / "in"
    folder.mkdir()
    images = sorted((finetuned.data_root / "images").glob("*.jpg"))[:5]
    for path in images:
        shutil.copy(path, folder / path.name)
    cfg = make_cfg(
        f"ckpt_path={finetuned.best}", f"input={folder}", f"output={tmp_path / 'out'}", config_name="predict"
    )
    with predict(cfg).open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["image"] for row in rows) == sorted(p.name for p in images)
    for row in rows:
        with Image.open(folder / row["image"]) as im:
            width, height = im.size
        xmin, ymin, xmax, ymax = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        assert 1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height, row
        assert 0 < float(row["score"]) <= 1, row
    # the Python API on the same checkpoint gives the rows' numbers
    result = api.load_model(finetuned.best, device="cpu").predict([folder / row["image"] for row in rows])
    for i, row in enumerate(rows):
        assert result.boxes[i].tolist() == [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")], row


@pytest.mark.slow
def test_export_passes_the_onnx_parity_check_at_the_default_tolerance(
    finetuned: FinetunedRun, tmp_path: Path
) -> None:
    """Oracle: onnxruntime against PyTorch on the run's real images, through petloc-export's own check
    (it raises above ``atol_px``/``atol_prob``), left at conf/export.yaml's defaults."""
    defaults = OmegaConf.load(CONFIG_DIR / "export.yaml")
    onnx_path, report, _ = run_export(finetuned.best, tmp_path)
    assert onnx_path.is_file()
    assert report["outputs"] == ["box", "score"]  # box mode: no class probabilities
    assert report["n_check_images"] == 8  # the trained dataset's images, not noise
    assert 0 <= report["max_box_diff_px"] <= defaults.atol_px
    assert 0 <= report["max_prob_diff"] <= defaults.atol_prob
