"""Start-up validation of a composed config: wrong values fail before any work, naming the key."""

from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig

from petloc.models.backbone import BACKBONES, check_alpha, check_image_size
from petloc.models.refine import DEFAULT_MARGIN

MODES = ("box", "class", "species", "breed")


class ConfigError(ValueError):
    """A config value is out of range; the message names the key and the allowed values."""


def validate_config(cfg: DictConfig) -> None:
    try:  # the rules live with the backbone, which create_backbone applies too
        check_alpha(cfg.get("alpha"))
        check_image_size(cfg.get("image_size"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if cfg.mode.name not in MODES:
        raise ConfigError(f"mode.name={cfg.mode.name!r}: allowed values are {list(MODES)}")
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"backbone.name={cfg.backbone.name!r}: allowed values are {sorted(BACKBONES)}")
    if cfg.get("nan_policy", "stop") not in ("stop", "skip"):
        raise ConfigError(f"nan_policy={cfg.nan_policy!r}: allowed values are ['stop', 'skip']")
    scale = cfg.get("backbone_lr_scale", 1.0)
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise ConfigError(
            f"backbone_lr_scale={scale!r}: the backbone's share of optimizer.lr must be a number > 0"
        )
    margin = cfg.get("refine_margin", DEFAULT_MARGIN)
    if not isinstance(margin, (int, float)) or margin < 1:
        raise ConfigError(
            f"refine_margin={margin!r}: the zoom-in crop is the first box times this factor and must hold "
            f"it: a number >= 1 (default {DEFAULT_MARGIN}), or refine=false to turn the refinement off"
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
