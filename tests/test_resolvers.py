"""``${petloc.loader_workers:}``: the DataLoader worker count the data configs default to."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from petloc import CONFIG_DIR
from petloc.resolvers import loader_workers


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (3, 1), (4, 2), (16, 8), (64, 8)])
def test_loader_workers_leave_two_core_machines_to_torch(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert loader_workers() == workers


@pytest.mark.parametrize("data", ["synthetic_pets", "oxford_pets"])
def test_data_configs_default_to_the_machines_worker_count(data: str) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}"])
    assert cfg.data.num_workers == loader_workers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", "data.num_workers=3"])
    assert cfg.data.num_workers == 3
