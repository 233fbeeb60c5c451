"""Build the LightningModule from a composed config: the one place train, eval, predict and export share."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from petloc.models.module import PetLocModule
from petloc.models.refine import DEFAULT_MARGIN


def build_module(cfg: DictConfig, class_names: list[str] | None = None) -> PetLocModule:
    """Instantiate backbone, head, loss, optimizer and scheduler from their config groups.

    ``class_names`` are the mode's classes (the datamodule's ``class_names``; none in box mode)."""
    module = PetLocModule(
        backbone=instantiate(cfg.backbone),
        head=instantiate(cfg.head),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        mode=cfg.mode.name,
        class_names=list(class_names or []),
        cls_weight=cfg.mode.cls_weight,
        image_size=cfg.image_size,
        nan_policy=cfg.get("nan_policy", "stop"),
        backbone_lr_scale=cfg.get("backbone_lr_scale", 1.0),
        flip_test=cfg.get("flip_test", False),
        refine=cfg.get("refine", False),
        refine_margin=cfg.get("refine_margin", DEFAULT_MARGIN),
    )
    module.run_config = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    return module


def config_from_checkpoint(checkpoint: dict[str, Any]) -> DictConfig:
    """The resolved training config stored in a petloc checkpoint."""
    if "petloc_config" not in checkpoint or not checkpoint["petloc_config"]:
        raise ValueError("not a petloc checkpoint: it holds no 'petloc_config' (train with petloc-train)")
    return OmegaConf.create(checkpoint["petloc_config"])
