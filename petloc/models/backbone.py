"""timm MobileNet backbones at any width multiplier (alpha).

timm registers MobileNets under names that fix the width (``mobilenetv2_050`` ...), while petloc
sweeps alpha freely, so the backbone is built through timm's generator functions with a channel
multiplier. Pretrained ImageNet weights exist only for the widths timm publishes; asking for them
at another alpha, or offline with nothing cached, is an error that names the options rather than a
silent random initialization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
from timm.models.efficientnet import _gen_mobilenet_v1, _gen_mobilenet_v2
from timm.models.mobilenetv3 import _gen_mobilenet_v3, _gen_mobilenet_v4
from torch import nn

# Feature levels handed to heads: strides 16 and 32 (the last two of timm's five levels).
OUT_INDICES = (3, 4)
# The deepest level's stride: the input side must be a multiple of it.
STRIDE = 32


class PretrainedWeightsError(RuntimeError):
    """No ImageNet weights can be loaded for the requested backbone; the message lists the options."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one MobileNet family at any alpha, and which timm names carry weights."""

    generator: Callable[..., nn.Module]
    template: str  # the timm variant passed to the generator (selects small/large etc.)
    registered: dict[float, str]  # alpha -> timm model name at that width


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenetv1": BackboneSpec(
        _gen_mobilenet_v1, "mobilenetv1_100", {1.0: "mobilenetv1_100", 1.25: "mobilenetv1_125"}
    ),
    "mobilenetv2": BackboneSpec(
        _gen_mobilenet_v2,
        "mobilenetv2_100",
        {
            0.35: "mobilenetv2_035",
            0.5: "mobilenetv2_050",
            0.75: "mobilenetv2_075",
            1.0: "mobilenetv2_100",
            1.4: "mobilenetv2_140",
        },
    ),
    "mobilenetv3_small": BackboneSpec(
        _gen_mobilenet_v3,
        "mobilenetv3_small_100",
        {0.5: "mobilenetv3_small_050", 0.75: "mobilenetv3_small_075", 1.0: "mobilenetv3_small_100"},
    ),
    "mobilenetv3_large": BackboneSpec(
        _gen_mobilenet_v3,
        "mobilenetv3_large_100",
        {0.75: "mobilenetv3_large_075", 1.0: "mobilenetv3_large_100"},
    ),
    "mobilenetv4_small": BackboneSpec(
        _gen_mobilenet_v4,
        "mobilenetv4_conv_small",
        {
            0.35: "mobilenetv4_conv_small_035",
            0.5: "mobilenetv4_conv_small_050",
            1.0: "mobilenetv4_conv_small",
        },
    ),
}


def check_alpha(alpha: object) -> None:
    """The one rule for the width multiplier (config validation and :func:`create_backbone` use it)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(
            f"alpha={alpha!r}: the backbone width multiplier must be a number > 0 (e.g. 0.25, 0.5, 1.0)"
        )


def check_image_size(size: object) -> None:
    """The one rule for the input side: a positive multiple of the network's stride (config validation)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < STRIDE or size % STRIDE:
        raise ValueError(
            f"image_size={size!r}: must be a positive multiple of {STRIDE} (e.g. 96, 128, 160, 224)"
        )


def pretrained_alphas(name: str) -> list[float]:
    """The widths of ``name`` for which timm publishes pretrained weights."""
    spec = BACKBONES[name]
    return sorted(a for a, model in spec.registered.items() if timm.list_pretrained(model))


def create_backbone(
    name: str = "mobilenetv1",
    alpha: float = 0.25,
    pretrained: bool = False,
    weights_file: str | None = None,
    drop_path_rate: float = 0.0,
    freeze_levels: int = 0,
) -> nn.Module:
    """Build a timm feature extractor returning the stride-16 and stride-32 feature maps.

    The returned module has timm's ``feature_info`` (channels, reductions) and
    ``pretrained_cfg`` (ImageNet mean/std used for input normalization). ``drop_path_rate`` is
    timm's stochastic depth: each residual block's branch is dropped with a probability that grows
    to this rate at the last block, a regularizer for fine-tuning on few images.
    ``freeze_levels``: see :func:`freeze_leading_levels`.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    check_alpha(alpha)
    spec = BACKBONES[name]
    # the same feature-extractor arguments for the random and the pretrained networks
    kwargs = {"features_only": True, "out_indices": OUT_INDICES, "drop_path_rate": drop_path_rate}
    if not pretrained:
        if weights_file:
            raise ValueError(
                "backbone.weights_file is set but backbone.pretrained=false: set pretrained=true"
            )
        model = spec.generator(spec.template, alpha, **kwargs)
    else:
        model = _create_pretrained(name, alpha, weights_file, kwargs)
    return freeze_leading_levels(model, freeze_levels)


def freeze_leading_levels(model: nn.Module, levels: int) -> nn.Module:
    """Stop training the stem and the first ``levels`` of the backbone's five feature levels
    (strides 2, 4, 8, 16, 32): their weights get no gradient, in place; ``levels=0`` freezes nothing.

    The early levels run at the highest resolutions, so their backward pass is the costliest part of
    a training step, while pretrained features there (edges, textures) need little fine-tuning:
    freezing them buys more steps in a time budget (Detectron2's ``FREEZE_AT``). Their batch-norm
    statistics keep adapting to the data and the parameters keep their names, so checkpoints and the
    deployed graph (folded batch norms) are those of an unfrozen network.
    """
    info = model.feature_info.info
    if isinstance(levels, bool) or not isinstance(levels, int) or not 0 <= levels <= len(info):
        raise ValueError(
            f"backbone.freeze_levels={levels!r}: an int in [0, {len(info)}] (0 trains every layer)"
        )
    if levels == 0:
        return model
    # the stem's children, then each block, in the order the network applies them
    units: list[str] = []
    for name, child in model.named_children():
        units += [f"blocks.{i}" for i in range(len(child))] if name == "blocks" else [name]
    last = units.index(info[levels - 1]["module"])
    timm.utils.model.freeze(model, units[: last + 1], include_bn_running_stats=False)
    return model


def _create_pretrained(
    name: str, alpha: float, weights_file: str | None, kwargs: dict[str, Any]
) -> nn.Module:
    available = pretrained_alphas(name)
    model_name = BACKBONES[name].registered.get(float(alpha))
    if model_name is None or float(alpha) not in available:
        raise PretrainedWeightsError(
            f"timm has no ImageNet weights for backbone={name} at alpha={alpha}. Options: "
            f"alpha in {available} with backbone.pretrained=true, or backbone.pretrained=false "
            "(random initialization)."
        )
    if weights_file:
        return _load_weights_file(model_name, Path(weights_file).expanduser(), kwargs)
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PretrainedWeightsError(
            f"could not load ImageNet weights for {model_name} ({type(exc).__name__}: {exc}). Offline? "
            f"Options: backbone.weights_file=PATH (timm's {model_name} weights, .safetensors or .pth), "
            "fill the Hugging Face cache on a machine with internet, or backbone.pretrained=false."
        ) from exc


def _load_weights_file(model_name: str, path: Path, kwargs: dict[str, Any]) -> nn.Module:
    """Load a local copy of timm's weights strictly for the backbone's part of the network.

    timm itself loads feature extractors non-strictly, so a file of another model would leave the
    backbone silently random; here every backbone tensor must come from the file. timm's
    ``load_state_dict`` reads safetensors, or ``torch.load(weights_only=True)`` for .pth files.
    """
    if not path.is_file():
        raise PretrainedWeightsError(f"backbone.weights_file={path} does not exist")
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    try:
        missing, _ = model.load_state_dict(timm.models.load_state_dict(str(path)), strict=False)
    except Exception as exc:  # unreadable, unsafe (pickled objects) or wrong shapes: say which and why
        raise PretrainedWeightsError(f"cannot load backbone.weights_file={path}: {exc}") from exc
    if missing:
        raise PretrainedWeightsError(
            f"backbone.weights_file={path} does not hold {model_name}'s weights: {len(missing)} of the "
            f"backbone's tensors are missing (e.g. {missing[0]}). Use the file of timm's {model_name}."
        )
    return model
