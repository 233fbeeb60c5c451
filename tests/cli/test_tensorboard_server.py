"""The real TensorBoard server over a sweep folder: every run, its scalars and its hparams are served.

This is what a user sees with ``tensorboard --logdir SWEEP``, so it checks the run folder layout from the
outside. The helpers (``tensorboard_server``, ``tensorboard_run_names``, ``wait_for_scalar_tags``,
``hparams_sessions``) work on any logdir, e.g. a real training sweep.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from petloc.cli.compare import find_run_dirs
from tests.cli.test_compare import SWEEP, val_step, write_fake_sweep

T = TypeVar("T")

# The console script installed next to this interpreter: the same ``tensorboard`` a user runs.
TENSORBOARD = Path(sys.executable).with_name("tensorboard")
READY_TIMEOUT_S = 60.0
HPARAMS_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now, so parallel test runs do not collide on 6006."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout_s: float = 10.0) -> Any:
    """GET ``url`` and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.load(response)


def wait_for(fetch: Callable[[], T | None], what: str, timeout_s: float = READY_TIMEOUT_S) -> T:
    """Call ``fetch`` until it returns something truthy; TensorBoard loads event files in the background."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = fetch()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"TensorBoard did not serve {what} within {timeout_s:.0f} s")
        time.sleep(0.5)


@contextmanager
def tensorboard_server(logdir: Path, timeout_s: float = READY_TIMEOUT_S) -> Iterator[str]:
    """Run ``tensorboard --logdir logdir`` on a free local port; yield its base URL once it answers.

    The server is terminated on exit, also when the body fails. ``--load_fast=false`` keeps the pure
    Python loader, so no separate data-server process is left behind.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--load_fast=false"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            if process.poll() is not None:
                log.seek(0)
                output = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"TensorBoard exited with {process.returncode}:\n{output}")
            try:
                get_json(f"{base_url}/data/runs", timeout_s=2.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False
            return True

        try:
            wait_for(answers, "/data/runs", timeout_s)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tensorboard_run_names(logdir: Path) -> set[str]:
    """The run names TensorBoard gives the run folders below ``logdir``: their ``tensorboard/`` paths."""
    return {(run / "tensorboard").relative_to(logdir).as_posix() for run in find_run_dirs(logdir)}


def wait_for_scalar_tags(
    base_url: str, runs: set[str], tag: str = "val/iou", timeout_s: float = READY_TIMEOUT_S
) -> dict[str, dict[str, Any]]:
    """``/data/plugin/scalars/tags`` once every run in ``runs`` is loaded and lists ``tag``."""

    def loaded() -> dict[str, dict[str, Any]] | None:
        tags: dict[str, dict[str, Any]] = get_json(f"{base_url}/data/plugin/scalars/tags")
        return tags if all(tag in tags.get(run, {}) for run in runs) else None

    return wait_for(loaded, f"the {tag} tag of {len(runs)} run(s)", timeout_s)


def hparams_request(route: str, request: dict[str, Any]) -> str:
    """URL path of an hparams plugin call: the plugin takes its request proto as JSON in ``?request=``."""
    return f"/data/plugin/hparams/{route}?" + urllib.parse.urlencode({"request": json.dumps(request)})


def hparams_sessions(base_url: str) -> dict[str, dict[str, Any]]:
    """Run name -> hparams of every session the hparams plugin lists (the runs that logged hparams)."""
    request = {"experimentName": "", "allowedStatuses": HPARAMS_STATUSES, "startIndex": 0, "sliceSize": 1000}
    groups = get_json(base_url + hparams_request("session_groups", request)).get("sessionGroups", [])
    return {session["name"]: group["hparams"] for group in groups for session in group["sessions"]}


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
