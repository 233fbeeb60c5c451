"""petloc.models.schedulers: the budget-following cosine against its closed-form warm-up + cosine
factor, and every scheduler config of conf/scheduler turned into the lr_scheduler dict Lightning reads.

Scheduler options are listed from conf/scheduler at collection time, so a new yaml file is covered.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch import nn

from petloc import CONFIG_DIR
from petloc.models.module import PetLocModule
from petloc.models.schedulers import BudgetCosineLR
from tests.helpers import SIZE, compose_config

SCHEDULERS = sorted(p.stem for p in (CONFIG_DIR / "scheduler").glob("*.yaml"))


def module_with(*overrides: str, progress: float = 0.0) -> PetLocModule:
    """A small module of the real config with SGD at lr 0.1 and ``overrides`` (a scheduler option),
    ``progress`` of its training budget used (it has no trainer to measure one)."""
    cfg = compose_config(
        "backbone=mobilenetv3_small",
        "alpha=0.25",
        f"image_size={SIZE}",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        *overrides,
    )
    module = PetLocModule(cfg)
    module.training_progress = lambda: progress  # type: ignore[method-assign]
    return module


def lr_after(scheduler: BudgetCosineLR) -> float:
    return scheduler.optimizer.param_groups[0]["lr"]


def test_budget_cosine_warms_up_then_follows_the_budget() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    progress = {"share": 0.0}
    scheduler = BudgetCosineLR(optimizer, lambda: progress["share"], warmup_steps=4, min_factor=0.1)

    warmup = [lr_after(scheduler)]
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        warmup.append(lr_after(scheduler))
    # steps 0..3 ramp (step + 1) / 4, then full rate while no budget is used
    assert warmup == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])

    # after warm-up: 2.0 * (0.1 + 0.9 * (1 + cos(pi * p)) / 2)
    for share, factor in ((0.0, 1.0), (0.5, 0.1 + 0.9 * 0.5), (1.0, 0.1)):
        progress["share"] = share
        optimizer.step()
        scheduler.step()
        assert lr_after(scheduler) == pytest.approx(2.0 * factor), share


def test_budget_cosine_state_survives_a_weights_only_checkpoint(tmp_path: Path) -> None:
    """Lightning stores the scheduler's state_dict in the checkpoint, which must load with weights_only."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = BudgetCosineLR(optimizer, lambda: 0.25, warmup_steps=4)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    path = tmp_path / "sched.pt"
    torch.save(scheduler.state_dict(), path)

    restored = BudgetCosineLR(
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), lambda: 0.25, warmup_steps=4
    )
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.last_epoch == 3
    assert math.isclose(restored.get_last_lr()[0], scheduler.get_last_lr()[0])


def test_the_budget_schedule_gives_every_parameter_group_one_factor_per_step() -> None:
    """The wall-clock budget is read once per step: a clock that moves between the groups' lambdas
    (here, on every reading) still leaves the backbone and head groups in the same ratio."""
    head, backbone = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [head], "lr": 0.02}, {"params": [backbone], "lr": 0.002}])
    readings = iter(i / 100 for i in range(1000))
    scheduler = BudgetCosineLR(optimizer, lambda: next(readings), warmup_steps=5)
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        lr_head, lr_backbone = (group["lr"] for group in optimizer.param_groups)
        assert lr_backbone == pytest.approx(lr_head / 10, rel=1e-12)


@pytest.mark.parametrize("option", SCHEDULERS)
def test_every_scheduler_config_is_a_lightning_lr_scheduler_dict(option: str) -> None:
    """What configure_optimizers returns holds only keys Lightning's LRSchedulerConfig knows (an
    unknown key is only warned about by Lightning, and ignored)."""
    config = module_with(f"scheduler={option}").configure_optimizers()["lr_scheduler"]
    assert set(config) <= {field.name for field in dataclasses.fields(LRSchedulerConfig)}
    assert config["name"] == "lr" and config["interval"] in ("step", "epoch")


def test_the_plateau_schedule_steps_after_each_validating_epoch_watching_val_iou() -> None:
    for every in (2, 3):
        module = module_with("scheduler=plateau", f"trainer.check_val_every_n_epoch={every}")
        config = module.configure_optimizers()["lr_scheduler"]
        assert isinstance(config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
        assert (config["interval"], config["frequency"], config["monitor"]) == ("epoch", every, "val/iou")


def test_the_cosine_schedule_steps_every_step_and_follows_the_modules_budget() -> None:
    """The module hands the schedule its training_progress: with the budget used up (and no warm-up)
    the head's rate after a step is min_factor x optimizer.lr."""
    module = module_with("scheduler=cosine", "scheduler.scheduler.warmup_steps=0", progress=1.0)
    optimizer_config = module.configure_optimizers()
    config = optimizer_config["lr_scheduler"]
    assert isinstance(config["scheduler"], BudgetCosineLR)
    assert (config["interval"], config["frequency"]) == ("step", 1)
    optimizer, head = optimizer_config["optimizer"], optimizer_config["optimizer"].param_groups[-1]
    assert head["lr"] == pytest.approx(0.1)  # built before training: no budget used
    optimizer.step()
    config["scheduler"].step()
    assert head["lr"] == pytest.approx(0.1 * 0.02)
