"""conf/ as a whole: every option of every config group composes and instantiates, the presets set
what they promise, and an unknown option fails naming the available ones. (petloc.config's checks of
a composed config: tests/test_config.py.)

Groups and options are listed from conf/ at collection time, so a new yaml file is covered without
touching this file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, LogUniformDistribution
from optuna.samplers import TPESampler

from petloc import CONFIG_DIR
from petloc.config import validate_training_config
from petloc.data.augment import AugmentConfig, colour_transform
from petloc.data.datamodule import LocalizationDataModule
from petloc.models.backbone import create_backbone, pretrained_alphas
from petloc.models.schedulers import lr_scheduler_config
from petloc.train import build_trainer

# `hydra` configures Hydra itself (run folders), not the run: it has no alternatives to choose from
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


# inference=keep is petloc-eval/-predict/-export's "as trained" node (all null), no option of a run
APP_ONLY = {("inference", "keep")}
GROUP_OPTIONS = [(g, o) for g in GROUPS for o in options(g) if (g, o) not in APP_ONLY]


def test_every_group_the_readme_names_has_options() -> None:
    for group in ("data", "backbone", "head", "loss", "mode", "augment", "optimizer", "scheduler"):
        assert group in GROUPS and options(group), group
    for group in ("experiment", "debug", "trainer", "hparams_search"):
        assert group in GROUPS and options(group), group


def instantiate_run(cfg: DictConfig) -> None:
    """Build every instantiable part of a run the way train() does, without data set-up or fitting."""
    validate_training_config(cfg)

    # weights cannot be fetched in CI (test_presets_ask_for_published_weights checks the width)
    backbone_cfg = OmegaConf.merge(cfg.backbone, {"pretrained": False, "weights_file": None})
    backbone = instantiate(backbone_cfg).eval()
    head = instantiate(cfg.head)(in_channels=backbone.feature_info.channels()).eval()
    with torch.no_grad():
        box = head(backbone(torch.randn(2, 3, cfg.image_size, cfg.image_size))).box
    assert box.shape == (2, 4)

    loss = instantiate(cfg.loss)
    target = torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.3, 0.3, 0.9, 0.8]])
    assert torch.isfinite(loss(box, target))

    optimizer = instantiate(cfg.optimizer)(params=head.parameters())
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
    if cfg.get("scheduler"):
        lr_scheduler_config(cfg.scheduler, optimizer, progress=lambda: 0.0)

    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, LocalizationDataModule)
    assert datamodule.image_size == cfg.image_size
    assert isinstance(datamodule.augment, AugmentConfig) and datamodule.augment.name == cfg.augment.name
    colour_transform(datamodule.augment)

    assert isinstance(build_trainer(cfg), L.Trainer)


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_and_instantiates(
    group: str, option: str, make_cfg: Callable[..., DictConfig]
) -> None:
    # a global head cannot learn from mosaics: its runs turn the default preset's mosaic off
    mosaic_off = ["augment.mosaic=0"] if group == "head" and option != "center" else []
    # the format options have no default folder: data.root is required (composing without it fails)
    root = (
        ["data.root=any/folder"]
        if group == "data" and option not in ("synthetic_pets", "oxford_pets")
        else []
    )
    instantiate_run(make_cfg(f"{group}={option}", "image_size=64", *mosaic_off, *root))


def test_keras_v1_preset_is_the_prototype(make_cfg: Callable[..., DictConfig]) -> None:
    """keras_v1 is documented in the README (the prototype): MobileNet alpha 0.25, 128 px, MSE."""
    cfg = make_cfg("experiment=keras_v1")
    assert cfg.backbone.name == "mobilenetv1" and cfg.backbone.alpha == 0.25
    assert cfg.data.image_size == 128
    assert cfg.loss._target_ == "petloc.losses.MSEBoxLoss"


@pytest.mark.parametrize(
    ("preset", "alpha", "image_size"), [("experiment=keras_v2", 1.0, 96), ("debug=fast", 0.25, 64)]
)
def test_global_presets_override_the_top_level_defaults(
    preset: str, alpha: float, image_size: int, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(preset)
    assert (cfg.backbone.alpha, cfg.data.image_size) == (alpha, image_size)


def test_command_line_still_overrides_a_preset(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("experiment=keras_v1", "alpha=0.5", "image_size=96")
    assert (cfg.backbone.alpha, cfg.data.image_size) == (0.5, 96)


def test_presets_ask_for_published_weights(make_cfg: Callable[..., DictConfig]) -> None:
    """A preset with backbone.pretrained=true must name a width timm has weights for, or it cannot run."""
    for option in options("experiment"):
        cfg = make_cfg(f"experiment={option}")
        if cfg.backbone.pretrained:
            assert cfg.backbone.alpha in pretrained_alphas(cfg.backbone.name), option


def test_unknown_loss_fails_naming_the_available_ones(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(HydraException) as info:
        make_cfg("loss=foo")
    message = str(info.value)
    assert "loss/foo" in message
    assert all(name in message for name in options("loss"))


def test_alpha_and_image_size_reach_backbone_and_data(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("alpha=0.5", "image_size=96", "backbone=mobilenetv2")
    assert cfg.backbone.alpha == 0.5
    assert cfg.data.image_size == 96
    built = instantiate(cfg.backbone)
    assert built.feature_info.channels() == create_backbone("mobilenetv2", 0.5).feature_info.channels()
    assert built.feature_info.channels() != create_backbone("mobilenetv2", 0.25).feature_info.channels()
    assert instantiate(cfg.data).image_size == 96


def test_optuna_preset_configures_a_seeded_tpe_search(tmp_path: Path) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hparams_search=optuna_iou", f"paths.output_dir={tmp_path}"],
            return_hydra_config=True,
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.n_trials == 20
    assert cfg.optimized_metric == "val/iou_best"

    sampler = instantiate(sweeper.sampler)
    assert isinstance(sampler, TPESampler)
    assert isinstance(sweeper.sampler.seed, int)

    parser = OverridesParser.create()
    space = {
        key: create_optuna_distribution_from_override(parser.parse_override(f"{key}={value}"))
        for key, value in sweeper.params.items()
    }
    assert set(space) == {"optimizer.lr", "alpha", "loss", "augment"}
    lr = space["optimizer.lr"]
    assert isinstance(lr, LogUniformDistribution) and 0 < lr.low < lr.high
    assert isinstance(space["alpha"], CategoricalDistribution)
    assert space["alpha"].choices == (0.25, 0.35, 0.5)
    for group in ("loss", "augment"):
        choices = space[group]
        assert isinstance(choices, CategoricalDistribution)
        assert len(choices.choices) > 1 and set(choices.choices) <= set(options(group)), group
