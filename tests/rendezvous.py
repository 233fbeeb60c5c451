"""A callback that proves a sweep's jobs ran at the same time, without comparing clocks.

Each job announces itself in a shared folder when its fit starts, then waits until every job of the
sweep has announced itself. Jobs run one after another would wait forever for a sibling that cannot
start, so the callback gives up after ``timeout_s`` and fails the job. Timestamps of the jobs' files
cannot prove this: tiny jobs can finish before a sibling's slower start-up, parallel or not.

Tests add it with ``+callbacks.rendezvous._target_=tests.rendezvous.Rendezvous`` and name the folder
in ``PETLOC_TEST_RENDEZVOUS`` (a path in an override would end up in every job folder's name).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

ENV_VAR = "PETLOC_TEST_RENDEZVOUS"


class Rendezvous(Callback):
    """Block ``on_fit_start`` until ``parties`` jobs have reached it."""

    def __init__(self, parties: int = 2, timeout_s: float = 120.0) -> None:
        self.folder = Path(os.environ[ENV_VAR])
        self.parties = parties
        self.timeout_s = timeout_s

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / str(os.getpid())).touch()
        deadline = time.monotonic() + self.timeout_s
        while len(list(self.folder.iterdir())) < self.parties:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(list(self.folder.iterdir()))} of {self.parties} jobs started within "
                    f"{self.timeout_s:.0f} s: the sweep's jobs did not run in parallel"
                )
            time.sleep(0.05)
