"""Composed configs: start-up validation (wrong values fail before any work, naming the key), and a
checkpoint's training config merged with an app's command-line changes."""

from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from petloc.models.backbone import BACKBONES, check_alpha, check_image_size
from petloc.models.options import InferenceOptions
from petloc.modes import Mode


class ConfigError(ValueError):
    """A config value is out of range; the message names the key and the allowed values."""


def validate_config(cfg: DictConfig) -> None:
    """Every rule lives with what it is about (the backbone's width and stride, the mode, the inference
    options); this applies them all to one config and reports the first failure as a :class:`ConfigError`."""
    try:
        check_alpha(cfg.get("alpha"))
        check_image_size(cfg.get("image_size"))
        Mode.from_config(cfg.mode)
        InferenceOptions.from_config(cfg.get("inference"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    side = cfg.get("image_size")
    data_side = cfg.get("data", {}).get("image_size", side)
    if data_side != side:
        # The head reads an object's normalized size from its extent in pixels: fed another side than
        # the model's, it draws every box too small or too large (RESULTS.md, "The input side a
        # checkpoint runs at").
        raise ConfigError(
            f"data.image_size={data_side} differs from image_size={side}, the model's "
            "input side: its boxes would come out at the wrong scale. To train at another side, set "
            "image_size (the data follows it); a checkpoint runs at the side it was trained at, so "
            "drop data.image_size."
        )
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"backbone.name={cfg.backbone.name!r}: allowed values are {sorted(BACKBONES)}")
    if cfg.get("nan_policy", "stop") not in ("stop", "skip"):
        raise ConfigError(f"nan_policy={cfg.nan_policy!r}: allowed values are ['stop', 'skip']")
    scale = cfg.get("backbone_lr_scale", 1.0)
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise ConfigError(
            f"backbone_lr_scale={scale!r}: the backbone's share of optimizer.lr must be a number > 0"
        )


def validate_training_config(cfg: DictConfig) -> None:
    """:func:`validate_config` plus what only training uses: the augmentation must suit the head.
    (Eval, predict and export rebuild a trained model, whose augmentation no longer matters.)"""
    validate_config(cfg)
    mosaic = cfg.augment.get("mosaic", 0.0)
    head = get_class(cfg.head._target_)
    if mosaic and not getattr(head, "multi_object", False):
        raise ConfigError(
            f"augment.mosaic={mosaic}: {head.__name__} regresses one box per image and cannot learn from "
            "a mosaic, which shows several pets; use head=center or augment.mosaic=0"
        )


# Nodes an app's config may change in a checkpoint's: a node naming a ``_target_`` (a group chosen on
# the command line) replaces the trained one, any other changes only its non-null keys.
MERGED_NODES = ("backbone", "head", "data", "paths", "inference")


def merge_config(trained: DictConfig, overrides: DictConfig | None = None) -> DictConfig:
    """The checkpoint's training config with an app's command-line changes on top, resolved.

    ``overrides`` is the composed config of petloc-eval/-predict/-export. ``alpha``, when not null,
    sets the backbone's width. A node of :data:`MERGED_NODES` carrying ``_target_`` (a group chosen on
    the command line, e.g. ``data=oxford_pets``) replaces the checkpoint's node, and its
    interpolations (``${image_size}``, ``${seed}``, ``${augment}``) resolve against the checkpoint's
    values, so the model still sees the input size it was trained at. Any other such node
    (``data.root=PATH``, ``inference.refine=false``, the app's ``paths``) changes only its non-null
    keys: null means "as trained".

    ``backbone.pretrained`` is forced off (no weights file or folder is read): the weights, and the
    input normalization, come from the checkpoint; nothing is downloaded.
    """
    cfg = OmegaConf.create(OmegaConf.to_container(trained, resolve=True))
    if overrides is not None:
        if overrides.get("alpha") is not None:
            cfg.alpha = overrides.alpha
            cfg.backbone.alpha = overrides.alpha
        for group in MERGED_NODES:
            node = overrides.get(group)
            if node is None:
                continue
            values = OmegaConf.to_container(node, resolve=False)
            assert isinstance(values, dict)
            if "_target_" in values:
                cfg[group] = values
            else:
                cfg[group] = OmegaConf.merge(cfg[group], {k: v for k, v in values.items() if v is not None})
    OmegaConf.resolve(cfg)
    cfg.backbone.pretrained = False
    cfg.backbone.weights_file = None
    cfg.backbone.weights_dir = None
    validate_config(cfg)
    return cfg


def describe_model(cfg: DictConfig) -> str:
    """``backbone=NAME alpha=A head=Class(k=v, ...) mode=M``: what decides the shapes of the weights."""
    head = {k: v for k, v in OmegaConf.to_container(cfg.head).items() if not k.startswith("_")}  # type: ignore[union-attr]
    params = ", ".join(f"{k}={v}" for k, v in head.items())
    return (
        f"backbone={cfg.backbone.name} alpha={cfg.backbone.alpha} "
        f"head={cfg.head._target_.rsplit('.', 1)[-1]}({params}) mode={cfg.mode.name}"
    )
