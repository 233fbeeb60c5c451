"""Learning-rate schedules: the budget-following cosine, and the one way any scheduler config
(``conf/scheduler/*.yaml``) becomes Lightning's ``lr_scheduler`` dict.

A scheduler config is that dict: ``scheduler`` (a Hydra partial that takes the optimizer) beside
Lightning's stepping keys (``interval``, ``frequency``, ``monitor``), so each scheduler says itself
when it steps. A scheduler of torch's (``torch.optim.lr_scheduler.*``) needs nothing but its config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate


class BudgetCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up, then cosine decay over the training *budget*.

    A 10-minute ``trainer.max_time`` run has no step count known in advance, so the decay follows
    ``progress``: the share of the budget used, whichever of steps (max_epochs/max_steps) or
    wall-clock time is closer to exhaustion (:meth:`petloc.models.module.PetLocModule.training_progress`).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        progress: Callable[[], float],
        warmup_steps: int = 100,
        min_factor: float = 0.02,
    ) -> None:
        self.warmup_steps = warmup_steps
        self.min_factor = min_factor
        self._progress = progress
        self._read_at: tuple[int, float] = (-1, 0.0)  # (step, progress) of the last budget reading
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        # the budget is read once per step: every parameter group gets the same factor, however
        # much wall-clock time passes between their lambdas. Step 0 is this scheduler's construction,
        # before training starts: no budget is used yet (and the trainer has not loaded its data to
        # count its steps).
        if self._read_at[0] != step:
            self._read_at = (step, self._progress() if step > 0 else 0.0)
        warm = min(1.0, (step + 1) / max(1, self.warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * self._read_at[1]))
        return warm * (self.min_factor + (1 - self.min_factor) * cosine)

    def state_dict(self) -> dict[str, Any]:
        # plain values only (checkpoints load with weights_only=True): the budget is the trainer's
        state = super().state_dict()
        state.pop("_progress", None)
        state.pop("_read_at", None)
        return state


def lr_scheduler_config(
    node: Mapping[str, Any], optimizer: torch.optim.Optimizer, progress: Callable[[], float]
) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` dict from a ``scheduler`` config node.

    ``node["scheduler"]`` is built on ``optimizer``; a node with ``follows_budget: true`` also hands
    it ``progress`` (the share of the training budget used), which only a schedule over the budget
    asks for. The other keys are Lightning's, passed as they are. The learning rate is logged as ``lr``.
    """
    stepping = dict(node)
    factory = instantiate(stepping.pop("scheduler"))
    budget = {"progress": progress} if stepping.pop("follows_budget", False) else {}
    return {"scheduler": factory(optimizer=optimizer, **budget), "name": "lr", **stepping}
