"""create_backbone: every family at any alpha, and pretrained weights loaded (or refused) as documented.

Pretrained weights cannot be downloaded in CI, so the loading path is checked with a weights file the
test writes from timm's own registered model: the oracle is timm's state_dict, not petloc's code.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from safetensors.torch import save_file
from timm.layers import DropPath
from torch import nn

from petloc.models.backbone import BACKBONES, PretrainedWeightsError, create_backbone, pretrained_alphas

ALPHAS = (0.25, 0.5, 1.0)


def first_conv(module: nn.Module) -> nn.Conv2d:
    """The stem convolution: the layer furthest from the head, so the last one a wrong load would reach."""
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_forward_gives_stride_16_and_32_maps_with_the_advertised_channels(name: str, alpha: float) -> None:
    backbone = create_backbone(name, alpha).eval()
    info = backbone.feature_info
    assert info.reduction() == [16, 32]
    # 64 px is the smallest CI size; 96 is not a power of two, so a stride-32 map of 3 cells must come out
    for side in (64, 96):
        with torch.no_grad():
            maps = backbone(torch.randn(2, 3, side, side))
        assert len(maps) == 2
        for fmap, channels, stride in zip(maps, info.channels(), (16, 32), strict=True):
            assert fmap.shape == (2, channels, side // stride, side // stride)
            assert torch.isfinite(fmap).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_channels_grow_with_alpha(name: str) -> None:
    channels = [create_backbone(name, alpha).feature_info.channels() for alpha in ALPHAS]
    for narrow, wide in pairwise(channels):
        assert all(n < w for n, w in zip(narrow, wide, strict=True)), channels


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_drop_path_rate_drops_residual_branches_in_training_only(name: str) -> None:
    """timm's stochastic depth: with a rate, two training passes of one batch differ where the
    family has residual blocks (MobileNet v1 has none, so there it changes nothing); in eval mode,
    and at rate 0, the output is deterministic."""
    x = torch.randn(2, 3, 64, 64)
    for rate in (0.0, 0.5):
        backbone = create_backbone(name, 0.5, drop_path_rate=rate).train()
        first, second = backbone(x)[-1], backbone(x)[-1]
        assert torch.equal(first, second) is (rate == 0.0 or name == "mobilenetv1")
        backbone.eval()
        with torch.no_grad():
            assert torch.equal(backbone(x)[-1], backbone(x)[-1])


def test_the_config_key_sets_timm_drop_path_up_to_the_rate(make_cfg: Callable[..., DictConfig]) -> None:
    """``backbone.drop_path_rate`` of the real config reaches timm: one DropPath per residual block,
    its probability rising block by block to at most the rate; none at the default 0."""
    for rate in (0.0, 0.3):
        cfg = make_cfg("backbone=mobilenetv2", f"backbone.drop_path_rate={rate}")
        probs = [m.drop_prob for m in instantiate(cfg.backbone).modules() if isinstance(m, DropPath)]
        if rate == 0.0:
            assert probs == []
        else:
            assert probs == sorted(probs) and 0 < probs[0] < probs[-1] <= rate, probs


def unit_strides(backbone: nn.Module, side: int = 64) -> dict[str, int]:
    """Each stem layer's and each block's output stride, measured by forward hooks on a real pass."""
    units = {
        f"{name}.{i}" if name == "blocks" else name: module
        for name, child in backbone.named_children()
        for i, module in (enumerate(child) if name == "blocks" else [(None, child)])
    }
    strides: dict[str, int] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
            strides[name] = side // out.shape[-1]

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in units.items()]
    with torch.no_grad():
        backbone.eval()(torch.randn(1, 3, side, side))
    for hook in hooks:
        hook.remove()
    return strides


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_freeze_levels_stops_gradients_up_to_the_levels_stride(name: str) -> None:
    """``freeze_levels=k``: after a backward pass, exactly the layers whose output stride is at most
    2**k (measured by hooks, not read from timm's feature_info) have no gradient; k=0 freezes none,
    k=5 the whole backbone (a fixed feature extractor: nothing to backpropagate into)."""
    strides = unit_strides(create_backbone(name, 0.5))
    for levels in range(6):
        backbone = create_backbone(name, 0.5, freeze_levels=levels).train()
        out = sum(f.mean() for f in backbone(torch.randn(2, 3, 64, 64)))
        assert out.requires_grad is (levels < 5)
        if levels < 5:
            out.backward()
        for unit, stride in strides.items():
            params = [p for n, p in backbone.named_parameters() if n == unit or n.startswith(unit + ".")]
            frozen = stride <= 2**levels if levels else False
            assert all((p.grad is None) is frozen for p in params), (levels, unit, stride)
            assert all(p.requires_grad is not frozen for p in params), (levels, unit)


def test_a_frozen_level_keeps_its_weights_and_names_but_adapts_its_batch_norm_statistics(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """Through the real config: an AdamW step (weight decay on) leaves the frozen stem unchanged and
    moves the last level; the stem's running statistics follow the data; the state_dict has the
    unfrozen network's keys, so checkpoints and init_from are interchangeable."""
    backbone = instantiate(make_cfg("backbone=mobilenetv2", "backbone.freeze_levels=2").backbone).train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=0.1, weight_decay=0.05)
    sum(f.mean() for f in backbone(torch.randn(4, 3, 64, 64) * 3 + 1)).backward()
    optimizer.step()
    after = backbone.state_dict()
    assert set(after) == set(instantiate(make_cfg("backbone=mobilenetv2").backbone).state_dict())
    assert torch.equal(after["conv_stem.weight"], before["conv_stem.weight"])
    assert torch.equal(after["blocks.1.0.conv_pw.weight"], before["blocks.1.0.conv_pw.weight"])
    assert not torch.equal(after["blocks.6.0.conv_pw.weight"], before["blocks.6.0.conv_pw.weight"])
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])


@pytest.mark.parametrize("levels", [-1, 6, 1.5, True, "2"])
def test_freeze_levels_out_of_range_is_rejected(levels: object) -> None:
    with pytest.raises(ValueError, match=r"freeze_levels.*\[0, 5\]"):
        create_backbone("mobilenetv2", 0.5, freeze_levels=levels)  # type: ignore[arg-type]


def test_unknown_name_and_non_positive_alpha_are_rejected() -> None:
    with pytest.raises(ValueError, match="mobilenetv1"):
        create_backbone("resnet50", 0.5)
    with pytest.raises(ValueError, match="alpha"):
        create_backbone("mobilenetv2", 0.0)


@pytest.fixture(scope="module")
def timm_mobilenetv2_050() -> dict[str, torch.Tensor]:
    """timm's registered ``mobilenetv2_050`` state_dict (seeded random init): stands in for ImageNet."""
    torch.manual_seed(123)
    return {k: v.contiguous() for k, v in timm.create_model("mobilenetv2_050").state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_weights_come_from_the_weights_file(
    suffix: str, timm_mobilenetv2_050: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / f"mobilenetv2_050{suffix}"
    if suffix == ".safetensors":
        save_file(timm_mobilenetv2_050, path)
    else:
        torch.save(timm_mobilenetv2_050, path)

    loaded = create_backbone("mobilenetv2", 0.5, pretrained=True, weights_file=str(path)).state_dict()
    random_init = create_backbone("mobilenetv2", 0.5).state_dict()

    # every backbone tensor (not just the stem) carries the file's values under the same name
    assert set(loaded) <= set(timm_mobilenetv2_050)
    for key, value in loaded.items():
        assert torch.equal(value, timm_mobilenetv2_050[key]), key
    stem = "conv_stem.weight"
    assert not torch.equal(random_init[stem], timm_mobilenetv2_050[stem])


def test_a_weights_file_backbone_takes_the_drop_path_rate(
    timm_mobilenetv2_050: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "mobilenetv2_050.safetensors"
    save_file(timm_mobilenetv2_050, path)
    backbone = create_backbone(
        "mobilenetv2", 0.5, pretrained=True, weights_file=str(path), drop_path_rate=0.5
    )
    assert torch.equal(backbone.state_dict()["conv_stem.weight"], timm_mobilenetv2_050["conv_stem.weight"])
    x = torch.randn(2, 3, 64, 64)
    assert not torch.equal(backbone.train()(x)[-1], backbone(x)[-1])


def test_pth_weights_are_read_with_weights_only(
    timm_mobilenetv2_050: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    """timm reads a .pth with ``torch.load(weights_only=True)``: a pickled object is refused, not run."""
    path = tmp_path / "mobilenetv2_050.pth"
    torch.save({"state_dict": timm_mobilenetv2_050, "payload": Path("not/a/tensor")}, path)
    with pytest.raises(PretrainedWeightsError, match="weights_only"):
        create_backbone("mobilenetv2", 0.5, pretrained=True, weights_file=str(path))


def test_a_weights_file_for_another_model_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.stem.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(PretrainedWeightsError):
        create_backbone("mobilenetv2", 0.5, pretrained=True, weights_file=str(path))


def test_alpha_without_published_weights_names_the_options() -> None:
    available = pretrained_alphas("mobilenetv2")
    assert 0.25 not in available and available, available
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone("mobilenetv2", 0.25, pretrained=True)
    message = str(info.value)
    assert str(available) in message
    assert "backbone.pretrained=false" in message


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(PretrainedWeightsError, match="does not exist") as info:
        create_backbone("mobilenetv2", 0.5, pretrained=True, weights_file=str(missing))
    assert str(missing) in str(info.value)


def test_weights_file_without_pretrained_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pretrained=true"):
        create_backbone("mobilenetv2", 0.5, weights_file=str(tmp_path / "w.safetensors"))


def test_offline_with_an_empty_cache_names_the_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    for var in ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME"):
        monkeypatch.setenv(var, str(empty))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these variables once, at import: its module constants are what it uses
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty))

    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone("mobilenetv2", 0.5, pretrained=True)
    message = str(info.value)
    assert "backbone.weights_file=PATH" in message
    assert "backbone.pretrained=false" in message
    assert not any(empty.iterdir()), "an offline load must not write into the cache"
