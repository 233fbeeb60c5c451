"""timm mobile backbones at any width multiplier (alpha), and the pretrained weights each takes.

timm registers MobileNets under names that fix the width (``mobilenetv2_050`` ...), while petloc
sweeps alpha freely, so the backbone is built through timm's generator functions with a channel
multiplier. Pretrained weights exist only for the widths timm publishes (or a weights file holds);
asking for them at another alpha, or offline with no file, is an error that names the options rather
than a silent random initialization.

Each family carries its input normalization (timm's ``pretrained_cfg`` mean/std, or the weights' own
where they were trained with another one): :class:`~petloc.models.module.PetLocModule` stores it with
the weights, so a checkpoint and its ONNX graph normalize as the backbone was trained.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models._efficientnet_builder import BN_EPS_TF_DEFAULT
from timm.models.efficientnet import _gen_efficientnet_lite, _gen_mobilenet_v1, _gen_mobilenet_v2
from timm.models.mobilenetv3 import _gen_mobilenet_v3, _gen_mobilenet_v4
from torch import nn

# Feature levels handed to heads: strides 16 and 32 (the last two of timm's five levels).
OUT_INDICES = (3, 4)
# The deepest level's stride: the input side must be a multiple of it.
STRIDE = 32
# Where backbone.weights_dir is read from when the config leaves it null.
WEIGHTS_DIR_ENV = "PETLOC_WEIGHTS_DIR"
# TensorFlow's padding and batch-norm epsilon: what weights trained in TensorFlow expect.
TF_OPTIONS: Mapping[str, Any] = {"pad_type": "same", "bn_eps": BN_EPS_TF_DEFAULT}


class PretrainedWeightsError(RuntimeError):
    """No pretrained weights can be loaded for the requested backbone; the message lists the options."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one family at any alpha, and where its pretrained weights come from.

    ``registered`` maps a width to the timm model it is (the architecture a weights file must fit);
    ``hub`` says whether timm publishes weights for those names (false: only a weights file has
    them). ``weights_files`` are the names a ``backbone.weights_dir`` holds the weights under, by
    width. ``normalization`` replaces timm's mean/std (one value for all three channels) where the
    weights were trained with another input scaling.
    """

    generator: Callable[..., nn.Module]
    template: str  # the timm variant passed to the generator (selects small/large etc.)
    registered: dict[float, str]  # alpha -> timm model name at that width
    options: Mapping[str, Any] = field(default_factory=dict)  # extra generator arguments (padding, BN eps)
    hub: bool = True
    weights_files: dict[float, str] = field(default_factory=dict)
    normalization: tuple[float, float] | None = None  # (mean, std) of inputs in [0, 1]

    def file_names(self, alpha: float) -> list[str]:
        """The names a weights folder may hold this family's weights at ``alpha`` under, preferred
        first: its known file, then timm's model name (``.safetensors``, ``.pth``) where timm's
        weights are this family's (not for a family whose timm name stands for other padding or
        normalization)."""
        known = self.weights_files.get(float(alpha))
        model_name = self.registered[float(alpha)]
        timm_names = [f"{model_name}.safetensors", f"{model_name}.pth"] if self.hub else []
        return ([known] if known else []) + timm_names

    def build(self, alpha: float, **kwargs: Any) -> nn.Module:
        """The network at width ``alpha``, randomly initialized, with its normalization set."""
        model = self.generator(self.template, alpha, **self.options, **kwargs)
        if self.normalization is not None:
            mean, std = self.normalization
            model.pretrained_cfg = {**model.pretrained_cfg, "mean": (mean,) * 3, "std": (std,) * 3}
        return model


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
        weights_files={1.0: "mobilenetv2_100_in1k.safetensors"},
    ),
    # MobileNetV2 with TensorFlow's padding, inputs scaled to [-1, 1]: the feature extractor of
    # TensorFlow's SSDLite detectors, whose detection-pretrained weights only a file holds.
    "mobilenetv2_tf": BackboneSpec(
        _gen_mobilenet_v2,
        "mobilenetv2_100",
        {1.0: "mobilenetv2_100"},
        options={"pad_type": "same"},
        hub=False,
        weights_files={1.0: "mobilenetv2_100_ssdlite_pedestrian_backbone.safetensors"},
        normalization=(0.5, 0.5),
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
    # EfficientNet-Lite0: the mobile EfficientNet (no squeeze-excite, ReLU6), TensorFlow's padding
    # and inputs scaled to [-1, 1] (timm's tf_efficientnet_lite0 pretrained_cfg).
    "efficientnet_lite0": BackboneSpec(
        _gen_efficientnet_lite,
        "tf_efficientnet_lite0",
        {1.0: "tf_efficientnet_lite0"},
        options=TF_OPTIONS,
        weights_files={1.0: "tf_efficientnet_lite0.safetensors"},
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
    """The widths of ``name`` with pretrained weights: timm's published ones, or a known weights file."""
    spec = BACKBONES[name]
    published = {a for a, model in spec.registered.items() if spec.hub and timm.list_pretrained(model)}
    return sorted(published | set(spec.weights_files))


def create_backbone(
    name: str = "mobilenetv1",
    alpha: float = 0.25,
    pretrained: bool = False,
    weights_file: str | None = None,
    weights_dir: str | None = None,
    drop_path_rate: float = 0.0,
    freeze_levels: int = 0,
) -> nn.Module:
    """Build a timm feature extractor returning the stride-16 and stride-32 feature maps.

    The returned module has timm's ``feature_info`` (channels, reductions) and ``pretrained_cfg``
    (the mean/std its inputs are normalized with). With ``pretrained``, the weights come from
    ``weights_file``, else from the family's file in ``weights_dir`` (or ``$PETLOC_WEIGHTS_DIR``),
    else from timm's hub download. ``drop_path_rate`` is timm's stochastic depth: each residual
    block's branch is dropped with a probability that grows to this rate at the last block, a
    regularizer for fine-tuning on few images. ``freeze_levels``: see :func:`freeze_leading_levels`.
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
        model = spec.build(alpha, **kwargs)
    else:
        model = _create_pretrained(name, alpha, weights_file, weights_dir, kwargs)
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
    name: str, alpha: float, weights_file: str | None, weights_dir: str | None, kwargs: dict[str, Any]
) -> nn.Module:
    spec = BACKBONES[name]
    available = pretrained_alphas(name)
    if float(alpha) not in available:
        raise PretrainedWeightsError(
            f"no pretrained weights for backbone={name} at alpha={alpha}. Options: "
            f"alpha in {available} with backbone.pretrained=true, or backbone.pretrained=false "
            "(random initialization)."
        )
    path = Path(weights_file).expanduser() if weights_file else find_weights_file(name, alpha, weights_dir)
    if path is not None:
        return load_weights_file(spec.build(alpha, **kwargs), name, alpha, path)
    model_name = spec.registered[float(alpha)]
    expected = spec.file_names(alpha)[0]
    offline_options = (
        f"backbone.weights_file=PATH ({expected}), or backbone.weights_dir=DIR (or ${WEIGHTS_DIR_ENV}) "
        f"holding {expected}, or backbone.pretrained=false"
    )
    if not spec.hub:
        raise PretrainedWeightsError(
            f"backbone={name}: timm publishes no weights for it, only a file has them. Options: "
            + offline_options
        )
    try:
        model = timm.create_model(model_name, pretrained=True, **spec.options, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PretrainedWeightsError(
            f"could not load pretrained weights for {model_name} ({type(exc).__name__}: {exc}). Offline? "
            f"Options: {offline_options}, or fill the Hugging Face cache on a machine with internet."
        ) from exc
    return model


def find_weights_file(name: str, alpha: float, weights_dir: str | None) -> Path | None:
    """The file of ``name`` at ``alpha`` in ``weights_dir`` (else ``$PETLOC_WEIGHTS_DIR``; neither
    set: None, timm downloads), under :meth:`BackboneSpec.file_names`; a folder without any of them
    is an error naming what it looked for."""
    folder = weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    names = BACKBONES[name].file_names(alpha)
    directory = Path(folder).expanduser()
    for candidate in names:
        if (directory / candidate).is_file():
            return directory / candidate
    raise PretrainedWeightsError(
        f"backbone.weights_dir={directory} holds no weights for backbone={name} alpha={alpha}: looked "
        f"for {names}. Put the file there, or name it with backbone.weights_file=PATH."
    )


def _fitting_backbones(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The ``backbone=NAME alpha=A`` pairs whose feature extractor every tensor of ``state`` fits
    (names and shapes): what a mismatch message suggests instead."""
    found = []
    for name, spec in BACKBONES.items():
        for alpha in sorted(set(spec.registered) | set(spec.weights_files)):
            own = spec.build(alpha, features_only=True, out_indices=OUT_INDICES).state_dict()
            if all(k in state and state[k].shape == v.shape for k, v in own.items()):
                found.append(f"backbone={name} alpha={alpha}")
    return found


def _known_owner(path: Path) -> str | None:
    """``backbone=NAME alpha=A`` whose known weights file has ``path``'s name, if any."""
    for name, spec in BACKBONES.items():
        for alpha, filename in spec.weights_files.items():
            if path.name == filename:
                return f"backbone={name} alpha={alpha}"
    return None


def load_weights_file(model: nn.Module, name: str, alpha: float, path: Path) -> nn.Module:
    """Load a weights file strictly into ``model``, the network of ``backbone=name`` at ``alpha``.

    timm itself loads feature extractors non-strictly, so a file of another model would leave the
    backbone silently random; here every tensor of ``model`` must come from the file with its shape
    (a classifier the file has beyond the feature extractor is not used). A file whose known name
    belongs to another family (same shapes, other padding or normalization) is refused too. The
    error names the file and the backbone it fits. timm's ``load_state_dict`` reads safetensors, or
    ``torch.load(weights_only=True)`` for .pth files.
    """
    requested = f"backbone={name} alpha={alpha}"
    if not path.is_file():
        raise PretrainedWeightsError(f"backbone.weights_file={path} does not exist")
    owner = _known_owner(path)
    if owner is not None and owner != requested:
        raise PretrainedWeightsError(
            f"backbone.weights_file={path} holds the weights of {owner}, not {requested}: "
            f"train with {owner}, or give {name}'s own file."
        )
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as exc:  # unreadable or unsafe (pickled objects): say which and why
        raise PretrainedWeightsError(f"cannot load backbone.weights_file={path}: {exc}") from exc
    own = model.state_dict()
    misfit = [k for k, v in own.items() if k not in state or state[k].shape != v.shape]
    if misfit:
        fits = _fitting_backbones(state)
        raise PretrainedWeightsError(
            f"backbone.weights_file={path} does not fit {requested}: {len(misfit)} of its "
            f"{len(own)} tensors are missing or of another shape (e.g. {misfit[0]}). The file fits "
            f"{' or '.join(fits) if fits else 'none of petloc backbones'}; give that backbone, "
            f"or {name}'s own file."
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    return model
