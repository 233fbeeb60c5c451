"""OmegaConf resolvers the config tree uses (registered on ``import petloc``)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from petloc import run_dir


def loader_workers() -> int:
    """DataLoader workers for this machine: none on 2 cores or fewer, else half the cores (at most 8).

    On 2 cores a worker process competes with torch's two threads for the same cores and slows every
    forward pass more than loading in the training process costs.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores <= 2 else min(cores // 2, 8)


def register() -> None:
    """``${petloc.loader_workers:}`` (:func:`loader_workers`) and ``${petloc.run:NAME}``, a run folder's
    default file and folder names (:data:`petloc.run_dir.NAMES`)."""
    if not OmegaConf.has_resolver("petloc.loader_workers"):
        OmegaConf.register_new_resolver("petloc.loader_workers", loader_workers)
    if not OmegaConf.has_resolver("petloc.run"):
        OmegaConf.register_new_resolver("petloc.run", run_dir.name)
