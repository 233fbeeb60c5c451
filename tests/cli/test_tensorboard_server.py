"""The real TensorBoard server over a sweep folder: every run, its scalars and its hparams are served.

This is what a user sees with ``tensorboard --logdir SWEEP``, so it checks the run folder layout from the
outside (the server client is tests/sweep_helpers.py's, which the real sweeps of test_sweeps.py use too).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sweep_helpers import (
    SWEEP,
    get_json,
    hparams_request,
    hparams_sessions,
    tensorboard_run_names,
    tensorboard_server,
    val_step,
    wait_for,
    wait_for_scalar_tags,
    write_fake_sweep,
)


@pytest.fixture(scope="module")
def served_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The fake sweep and the base URL of a TensorBoard serving it, stopped after the module's tests."""
    sweep = write_fake_sweep(tmp_path_factory.mktemp("sweep"), SWEEP)
    with tensorboard_server(sweep) as base_url:
        yield sweep, base_url


@pytest.mark.slow
def test_every_run_and_its_scalars_are_served(served_sweep: tuple[Path, str]) -> None:
    sweep, base_url = served_sweep
    runs = tensorboard_run_names(sweep)
    assert runs == {f"{name}/tensorboard" for name in SWEEP}

    tags = wait_for_scalar_tags(base_url, runs)

    assert set(get_json(f"{base_url}/data/runs")) == runs
    for run in runs:
        assert {"val/iou", "val/acc50", "epoch", "train/loss"} <= set(tags[run])
    # The served curve is the one written: same global steps, same values.
    query = urllib.parse.urlencode({"run": "alpha=0.5,loss=giou/tensorboard", "tag": "val/iou"})
    points = get_json(f"{base_url}/data/plugin/scalars/scalars?{query}")
    written = SWEEP["alpha=0.5,loss=giou"].val_iou
    assert [(step, value) for _, step, value in points] == [(val_step(e), v) for e, v in written.items()]


@pytest.mark.slow
def test_hparams_of_the_run_that_logged_them_are_served(served_sweep: tuple[Path, str]) -> None:
    sweep, base_url = served_sweep
    wait_for_scalar_tags(base_url, tensorboard_run_names(sweep))

    assert "hparams" in get_json(f"{base_url}/data/plugins_listing")
    sessions = wait_for(lambda: hparams_sessions(base_url), "hparams sessions")
    assert sessions == {"alpha=0.25,loss=giou/tensorboard": {"alpha": 0.25, "loss": "giou"}}
    experiment = get_json(base_url + hparams_request("experiment", {"experimentName": ""}))
    assert {info["name"] for info in experiment["hparamInfos"]} == {"alpha", "loss"}
