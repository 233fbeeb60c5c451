"""petloc.config: a composed config is checked before any work (a wrong value fails naming its key),
and a checkpoint's training config takes an app's command-line changes (merge_config).

The configs are the real conf/ composed with overrides; the expected values are the overrides and
the checkpoint's own values, written out.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from omegaconf import DictConfig, OmegaConf

from petloc.config import ConfigError, describe_model, merge_config, validate_config, validate_training_config


@pytest.mark.parametrize("alpha", ["0", "-0.5"])
def test_validate_rejects_non_positive_alpha(alpha: str, make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match=r"alpha=.*> 0"):
        validate_config(make_cfg(f"alpha={alpha}"))


@pytest.mark.parametrize("size", ["100", "16", "0"])
def test_validate_rejects_image_size_not_a_multiple_of_32(
    size: str, make_cfg: Callable[..., DictConfig]
) -> None:
    with pytest.raises(ConfigError, match=rf"image_size={size}.*multiple of 32"):
        validate_config(make_cfg(f"image_size={size}"))


@pytest.mark.parametrize("margin", ["0.5", "0", "-1"])
def test_validate_rejects_a_refine_margin_below_one(margin: str, make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match=rf"inference.refine_margin={margin}.*>= 1.*inference.refine=false"):
        validate_config(make_cfg(f"inference.refine_margin={margin}"))


@pytest.mark.parametrize("key", ["flip", "refine"])
def test_validate_rejects_a_switch_that_is_not_a_boolean(
    key: str, make_cfg: Callable[..., DictConfig]
) -> None:
    with pytest.raises(ConfigError, match=rf"inference.{key}='maybe': must be true or false"):
        validate_config(make_cfg(f"inference.{key}=maybe"))
    with pytest.raises(ConfigError, match=r"inference.tta: not an inference option.*'refine_margin'"):
        validate_config(make_cfg("+inference.tta=true"))


def test_validate_rejects_unknown_mode_naming_the_allowed_ones(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(make_cfg("mode.name=segmentation"))
    message = str(info.value)
    assert "mode.name" in message and "segmentation" in message
    assert all(mode in message for mode in ("box", "class", "species", "breed"))


@pytest.mark.parametrize("head", ["dwsep", "conv", "pooled"])
def test_training_rejects_a_mosaic_for_a_global_head(head: str, make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match=r"augment.mosaic=0.5.*head=center or augment.mosaic=0"):
        validate_training_config(make_cfg(f"head={head}", "augment.mosaic=0.5"))
    validate_training_config(make_cfg(f"head={head}", "augment.mosaic=0"))
    validate_training_config(make_cfg("head=center", "augment.mosaic=0.5"))
    validate_config(make_cfg(f"head={head}", "augment.mosaic=0.5"))  # loading a model: no augmentation


def test_validate_rejects_a_data_side_other_than_the_model_side(make_cfg: Callable[..., DictConfig]) -> None:
    assert make_cfg("image_size=96").data.image_size == 96  # the data follows image_size
    with pytest.raises(ConfigError, match=r"data.image_size=160 differs from image_size=128.*set image_size"):
        validate_config(make_cfg("data.image_size=160"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("backbone.name=resnet50", r"backbone.name='resnet50': allowed values are \[.*'mobilenetv1'"),
        ("nan_policy=ignore", r"nan_policy='ignore': allowed values are \['stop', 'skip'\]"),
        ("backbone_lr_scale=0", r"backbone_lr_scale=0: .* a number > 0"),
        ("backbone_lr_scale=-0.1", r"backbone_lr_scale=-0.1: .* a number > 0"),
        ("backbone_lr_scale=fast", r"backbone_lr_scale='fast': .* a number > 0"),
    ],
)
def test_validate_rejects_a_bad_value_naming_its_key(
    override: str, message: str, make_cfg: Callable[..., DictConfig]
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(make_cfg(override))


def test_validate_accepts_the_defaults_and_the_documented_values(make_cfg: Callable[..., DictConfig]) -> None:
    validate_training_config(make_cfg())
    validate_config(make_cfg("nan_policy=skip", "backbone_lr_scale=0.1", "backbone=mobilenetv2"))


def checkpoint_config(make_cfg: Callable[..., DictConfig], *overrides: str) -> DictConfig:
    """A training config as a checkpoint stores it: composed, then resolved to plain values."""
    trained = make_cfg("alpha=0.25", "image_size=64", "seed=7", "mode=species", *overrides)
    return OmegaConf.create(OmegaConf.to_container(trained, resolve=True))


def test_merge_without_changes_is_the_trained_config_without_weights_to_fetch(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """The checkpoint holds the weights: the backbone is never built pretrained, from no file or folder."""
    trained = checkpoint_config(
        make_cfg, "backbone.pretrained=true", "backbone.weights_file=w.safetensors", "backbone.weights_dir=w"
    )
    expected = OmegaConf.to_container(trained)
    assert isinstance(expected, dict)
    expected["backbone"].update(pretrained=False, weights_file=None, weights_dir=None)
    assert OmegaConf.to_container(merge_config(trained)) == expected
    assert trained.backbone.pretrained is True  # the checkpoint's own config is left as it was


def test_merge_changes_only_the_keys_an_app_sets(make_cfg: Callable[..., DictConfig]) -> None:
    """petloc-eval's data node is all null but for what the command line sets: those keys change,
    null keeps the checkpoint's value; ``alpha`` reaches the backbone."""
    trained = checkpoint_config(make_cfg)
    overrides = make_cfg(
        "ckpt_path=x", "data.root=/elsewhere", "data.batch_size=3", "alpha=0.5", config_name="eval"
    )
    merged = merge_config(trained, overrides)
    expected_data = {**OmegaConf.to_container(trained.data), "root": "/elsewhere", "batch_size": 3}
    assert OmegaConf.to_container(merged.data) == expected_data
    assert merged.alpha == merged.backbone.alpha == 0.5
    assert merged.image_size == 64 and merged.mode.name == "species" and merged.seed == 7


def test_a_group_chosen_on_the_command_line_replaces_the_node_at_the_trained_values(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """``data=oxford_pets`` and ``head=pooled`` replace the checkpoint's nodes; their ``${image_size}``,
    ``${seed}`` and ``${mode.labels}`` take the checkpoint's values, not the app's."""
    trained = checkpoint_config(make_cfg)
    overrides = make_cfg("ckpt_path=x", "data=oxford_pets", "data.root=/pets", config_name="eval")
    merged = merge_config(trained, overrides)
    assert merged.data.root == "/pets"
    # the synthetic set's node (conf/data/synthetic_pets.yaml) is gone, not merged with oxford_pets
    assert trained.data.synthetic is not None and merged.data.synthetic is None
    assert (merged.data.image_size, merged.data.seed, merged.data.label_set) == (64, 7, "species")
    assert OmegaConf.to_container(merged.data.augment) == OmegaConf.to_container(trained.augment)

    pooled = merge_config(trained, make_cfg("ckpt_path=x", "input=x", "head=pooled", config_name="predict"))
    assert pooled.head == {
        "_target_": "petloc.models.heads.PooledHead",
        "_partial_": True,
        "hidden": 256,
        "dropout": 0.1,
    }
    assert trained.head._target_ == "petloc.models.heads.CenterHead"


def test_a_merge_that_breaks_a_rule_fails_like_a_composed_config(make_cfg: Callable[..., DictConfig]) -> None:
    overrides = make_cfg("ckpt_path=x", "alpha=-1", config_name="eval")
    with pytest.raises(ConfigError, match=r"alpha=-1"):
        merge_config(checkpoint_config(make_cfg), overrides)


def test_describe_model_names_what_shapes_the_weights() -> None:
    """The head's arguments in their order, its class without the module, Hydra's keys left out."""
    cfg = OmegaConf.create(
        {
            "backbone": {"name": "mobilenetv2", "alpha": 0.35, "pretrained": True},
            "head": {"_target_": "petloc.models.heads.ConvHead", "_partial_": True, "width": 8, "depth": 2},
            "mode": {"name": "class", "labels": "class"},
        }
    )
    assert describe_model(cfg) == "backbone=mobilenetv2 alpha=0.35 head=ConvHead(width=8, depth=2) mode=class"
