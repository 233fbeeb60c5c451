"""petloc.models.options: the inference options are one set of keys (the dataclass, a run's
conf/inference/default.yaml, the apps' keep.yaml), and petloc-eval/-predict/-export change each one
of a checkpoint's by its key while null keeps the trained value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from omegaconf import DictConfig, OmegaConf

from petloc import CONFIG_DIR
from petloc.checkpoint import load_model
from petloc.config import ConfigError
from petloc.models.options import InferenceOptions
from tests.helpers import TrainedRun


def test_the_app_changes_each_inference_option_and_null_keeps_the_trained_one(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig]
) -> None:
    """The trained run has the defaults (no flip, refine, margin 1.6, full-size second look);
    petloc-eval/-predict/-export change any one of them by its key, and every key they leave null
    keeps the checkpoint's value."""
    trained = InferenceOptions(flip=False, refine=True, refine_margin=1.6, refine_size=None)
    module, cfg = load_model(trained_run.best, make_cfg("ckpt_path=x", config_name="predict"))
    assert module.inference == trained
    assert OmegaConf.to_container(cfg.inference) == dataclasses.asdict(trained)
    for change, expected in (
        ("inference.flip=true", dataclasses.replace(trained, flip=True)),
        ("inference.refine=false", dataclasses.replace(trained, refine=False)),
        ("inference.refine_margin=1.4", dataclasses.replace(trained, refine_margin=1.4)),
        ("inference.refine_size=32", dataclasses.replace(trained, refine_size=32)),
    ):
        for app in ("eval", "predict", "export"):
            overrides = make_cfg("ckpt_path=x", change, config_name=app)
            assert load_model(trained_run.best, overrides)[0].inference == expected, (app, change)
    for bad, message in (("refine_margin=0.5", ">= 1"), ("refine_size=48", "a multiple of 32")):
        with pytest.raises(ConfigError, match=rf"inference.{bad}.*{message}"):
            load_model(trained_run.best, make_cfg("ckpt_path=x", f"inference.{bad}", config_name="eval"))


def test_the_inference_node_is_one_set_of_keys(make_cfg: Callable[..., DictConfig]) -> None:
    """conf/inference/default.yaml (a run's values), keep.yaml (the apps' all-null node) and
    InferenceOptions name the same options, and a run's values become the module's options as given."""
    fields = {f.name for f in dataclasses.fields(InferenceOptions)}
    default = OmegaConf.load(CONFIG_DIR / "inference" / "default.yaml")
    keep = OmegaConf.load(CONFIG_DIR / "inference" / "keep.yaml")
    assert set(default) == set(keep) == fields
    assert all(value is None for value in keep.values())
    assert InferenceOptions.from_config(make_cfg().inference) == InferenceOptions(**default)
    assert InferenceOptions(**default) == InferenceOptions(flip=False, refine=True, refine_margin=1.6)
    for app in ("eval", "predict", "export"):
        assert OmegaConf.to_container(make_cfg("ckpt_path=x", config_name=app).inference) == dict(keep), app
