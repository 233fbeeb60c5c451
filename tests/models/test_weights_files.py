"""Every backbone paired with its real pretrained weights file (``../shared/weights``), found by name in
a weights folder, checked on real photos; a wrong pairing stops with the file and what it fits named.

Oracles: the ImageNet classifiers' own top-1 on real pet photos (a cat or dog class: ImageNet classes
151-268 are dogs, 281-285 domestic cats, 286-293 the wild cats a spotted Bengal is taken for); for
the detection backbone, which has no classifier, the batch norms' stored statistics against the
statistics of their inputs on real photos (a layer sees what it was trained on only when the
padding, the layout and the input scaling are the right ones).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import DictConfig
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from petloc.models.backbone import (
    BACKBONES,
    WEIGHTS_DIR_ENV,
    PretrainedWeightsError,
    create_backbone,
    load_weights_file,
)
from petloc.models.module import PetLocModule

IMAGENET_FILES = {
    "mobilenetv2": "mobilenetv2_100_in1k.safetensors",
    "efficientnet_lite0": "tf_efficientnet_lite0.safetensors",
}
DETECTION_FILE = "mobilenetv2_100_ssdlite_pedestrian_backbone.safetensors"
DOGS_AND_CATS = set(range(151, 269)) | set(range(281, 294))


def photos(oxford_sample: Path, n: int = 12, side: int = 224) -> torch.Tensor:
    """[n, 3, side, side] floats in [0, 1]: real pet photos spread over the breeds, centre-cropped."""
    paths = sorted((oxford_sample / "images").glob("*.jpg"))[:: 1000 // n][:n]
    batch = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        short = min(rgb.size)
        left, top = (rgb.width - short) // 2, (rgb.height - short) // 2
        crop = rgb.crop((left, top, left + short, top + short)).resize((side, side), Image.BILINEAR)
        batch.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(batch)


def normalize(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The inputs as petloc feeds this backbone: its own mean/std (``pretrained_cfg``)."""
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    return (images - mean) / std


@pytest.mark.parametrize("name", sorted(IMAGENET_FILES))
def test_imagenet_file_classifies_real_pets_as_cats_and_dogs(
    name: str, weights_dir: Path, oxford_sample: Path
) -> None:
    """The whole classifier of the family, loaded through petloc's strict loader with petloc's
    normalization, names a cat or dog class for all photos but at most one (one of them takes a
    Bengal cat on a white floor for a washbasin); the random network does not."""
    path = weights_dir / IMAGENET_FILES[name]
    spec = BACKBONES[name]
    loaded = load_weights_file(spec.build(1.0), name, 1.0, path).eval()
    random_init = spec.build(1.0).eval()
    images = photos(oxford_sample)
    with torch.no_grad():
        top1 = loaded(normalize(loaded, images)).argmax(dim=1).tolist()
        random_top1 = random_init(normalize(random_init, images)).argmax(dim=1).tolist()
    assert sum(c in DOGS_AND_CATS for c in top1) >= len(images) - 1, top1
    assert sum(c in DOGS_AND_CATS for c in random_top1) < len(images) // 2, random_top1


def bn_input_correlations(backbone: nn.Module, images: torch.Tensor) -> list[float]:
    """Per batch norm: the correlation over channels of its stored running mean with the mean of the
    inputs it sees on ``images``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, inputs, _o, key=key: seen.__setitem__(key, inputs[0].mean(dim=(0, 2, 3)))
        )
        for key, module in backbone.named_modules()
        if isinstance(module, nn.BatchNorm2d)
    ]
    with torch.no_grad():
        backbone.eval()(normalize(backbone, images))
    for hook in hooks:
        hook.remove()
    norms = dict(backbone.named_modules())
    correlations = []
    for key, observed in seen.items():
        stored = norms[key].running_mean
        correlations.append(float(torch.corrcoef(torch.stack([observed, stored]))[0, 1]))
    return correlations


def test_detection_backbone_batch_norms_match_the_statistics_of_their_inputs(
    weights_dir: Path, oxford_sample: Path
) -> None:
    """mobilenetv2_tf from the SSDLite file, with its TF padding and [-1, 1] inputs: every batch
    norm's stored mean tracks the mean of what it sees on real photos. The same file in the plain
    mobilenetv2 layout (symmetric padding, ImageNet scaling) fits less well."""
    images = photos(oxford_sample, side=320)
    right = create_backbone("mobilenetv2_tf", 1.0, pretrained=True, weights_dir=str(weights_dir))
    correlations = bn_input_correlations(right, images)
    assert len(correlations) >= 40
    assert float(np.median(correlations)) > 0.9, correlations
    plain = BACKBONES["mobilenetv2"].build(1.0, features_only=True, out_indices=(3, 4))
    plain.load_state_dict(
        {k: v for k, v in load_file(weights_dir / DETECTION_FILE).items() if k in plain.state_dict()}
    )
    assert float(np.median(bn_input_correlations(plain, images))) < float(np.median(correlations))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_weights_dir_finds_each_familys_file_by_name(
    name: str, weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every family with a shared file loads it from the folder (the config key or the environment
    variable), tensor for tensor as the file holds it; a family without one is refused, naming what
    was looked for."""
    spec = BACKBONES[name]
    known = spec.weights_files.get(1.0)
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    if known is None or not (weights_dir / known).is_file():
        with pytest.raises(PretrainedWeightsError, match="looked for") as info:
            create_backbone(name, 1.0, pretrained=True, weights_dir=str(weights_dir))
        assert str(weights_dir) in str(info.value)
        return
    oracle = load_file(weights_dir / known)
    from_dir = create_backbone(name, 1.0, pretrained=True, weights_dir=str(weights_dir)).state_dict()
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(weights_dir))
    from_env = create_backbone(name, 1.0, pretrained=True).state_dict()
    for key, value in from_dir.items():
        assert torch.equal(value, oracle[key]), key
        assert torch.equal(from_env[key], oracle[key]), key


@pytest.mark.parametrize(
    ("name", "file", "fits"),
    [
        ("mobilenetv2", "tf_efficientnet_lite0.safetensors", "backbone=efficientnet_lite0 alpha=1.0"),
        ("efficientnet_lite0", "mobilenetv2_100_in1k.safetensors", "backbone=mobilenetv2 alpha=1.0"),
        ("mobilenetv2", DETECTION_FILE, "backbone=mobilenetv2_tf alpha=1.0"),
        ("mobilenetv2_tf", "mobilenetv2_100_in1k.safetensors", "backbone=mobilenetv2 alpha=1.0"),
    ],
)
def test_a_file_of_another_backbone_stops_at_start_naming_the_file_and_its_backbone(
    name: str, file: str, fits: str, weights_dir: Path
) -> None:
    path = weights_dir / file
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone(name, 1.0, pretrained=True, weights_file=str(path))
    message = str(info.value)
    assert str(path) in message and fits in message, message


def test_a_renamed_file_of_another_architecture_is_identified_by_its_shapes(
    weights_dir: Path, tmp_path: Path
) -> None:
    """Without a known name the tensors tell: the EfficientNet file given to MobileNetV2."""
    renamed = tmp_path / "weights.safetensors"
    shutil.copy(weights_dir / "tf_efficientnet_lite0.safetensors", renamed)
    with pytest.raises(PretrainedWeightsError, match="missing or of another shape") as info:
        create_backbone("mobilenetv2", 1.0, pretrained=True, weights_file=str(renamed))
    assert "backbone=efficientnet_lite0 alpha=1.0" in str(info.value)


def test_a_weights_dir_without_the_file_names_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone("efficientnet_lite0", 1.0, pretrained=True, weights_dir=str(tmp_path))
    message = str(info.value)
    assert "tf_efficientnet_lite0.safetensors" in message and str(tmp_path) in message


def test_a_file_only_backbone_without_a_file_names_both_offline_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone("mobilenetv2_tf", 1.0, pretrained=True)
    message = str(info.value)
    assert "backbone.weights_dir" in message and "backbone.weights_file" in message
    assert DETECTION_FILE in message


@pytest.mark.parametrize(
    ("name", "mean"), [("mobilenetv2", 0.485), ("mobilenetv2_tf", 0.5), ("efficientnet_lite0", 0.5)]
)
def test_the_normalization_is_the_backbones_and_travels_with_the_weights(
    name: str, mean: float, make_cfg: Callable[..., DictConfig]
) -> None:
    """timm's own pretrained config is the oracle where timm has one (ImageNet mean, or 0.5 for the
    TensorFlow-trained EfficientNet-Lite); the SSDLite file's [-1, 1] scaling is the file's own. The
    module's state_dict carries it, so a checkpoint rebuilt from any config normalizes as trained."""
    module = PetLocModule(make_cfg(f"backbone={name}", "alpha=1.0", "image_size=64"))
    if BACKBONES[name].hub:
        model_name = BACKBONES[name].registered[1.0]
        assert timm.models.get_pretrained_cfg(model_name).mean[0] == pytest.approx(mean, abs=1e-3)
    state = module.state_dict()
    assert float(state["pixel_mean"][0, 0]) == pytest.approx(mean * 255, abs=0.01)
    assert {"pixel_mean", "pixel_std"} <= set(state)  # saved with the weights, not re-derived
