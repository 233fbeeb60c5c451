"""Shared fixtures: the real Oxford sample, composed Hydra configs, small synthetic sets, the tiny trained
runs, and sweep folders written by the tests. (Shared helper functions live in tests/helpers.py and
tests/sweep_helpers.py.)"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from petloc import CONFIG_DIR
from tests.helpers import RENAMED_LOGGER, TINY_RUN, HydraRun, TrainedRun
from tests.sweep_helpers import SWEEP, write_fake_sweep, write_seeded_sweep

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
OXFORD_SAMPLE = Path(os.environ.get("PETLOC_OXFORD_SAMPLE", SHARED / "data/oxford-pets-sample"))
RACCOON = SHARED / "data" / "raccoon"
IMAGENET_WEIGHTS = Path(
    os.environ.get("PETLOC_IMAGENET_WEIGHTS", SHARED / "weights/mobilenetv2_100_in1k.safetensors")
)
# The shared folder of pretrained weights files, each under the name petloc's backbone registry knows.
WEIGHTS_DIR = Path(os.environ.get("PETLOC_SHARED_WEIGHTS", SHARED / "weights"))
# The console script of this environment, for tests that run training as a user does.
PETLOC_TRAIN = Path(sys.executable).with_name("petloc-train")


def event_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every scalar in one TensorBoard event file or a folder of them, in logging order."""
    events = EventAccumulator(str(path))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def require_shared(path: Path, marker: Path, what: str) -> Path:
    """``path`` when ``marker`` exists: shared real data is skipped on a user's machine without it
    (saying where it was looked for) and a failure in CI, which must have ../shared beside the checkout."""
    if not marker.is_file():
        message = f"{what} not found at {marker}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI must have ../shared beside the checkout")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def oxford_sample() -> Path:
    """The shared real Oxford sample (PETLOC_OXFORD_SAMPLE moves it)."""
    return require_shared(OXFORD_SAMPLE, OXFORD_SAMPLE / "annotations" / "list.txt", "real Oxford sample")


@pytest.fixture(scope="session")
def raccoon() -> Path:
    """The shared raccoon dataset: a plain VOC folder and its CSV export."""
    return require_shared(RACCOON, RACCOON / "raccoon_labels.csv", "raccoon dataset")


@pytest.fixture(scope="session")
def imagenet_weights() -> Path:
    """The shared ImageNet weights of timm's mobilenetv2_100 (PETLOC_IMAGENET_WEIGHTS moves them)."""
    return require_shared(IMAGENET_WEIGHTS, IMAGENET_WEIGHTS, "ImageNet weights")


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """The shared weights folder: ImageNet MobileNetV2 and EfficientNet-Lite0, the SSDLite MobileNetV2."""
    return require_shared(WEIGHTS_DIR, WEIGHTS_DIR / "tf_efficientnet_lite0.safetensors", "weights folder")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode cache / synthetic-set folder for the whole session (builds are reused)."""
    return tmp_path_factory.mktemp("petloc-cache")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> TrainedRun:
    """One tiny checkpoint trained with petloc.train.train on the real composed config (``TINY_RUN``),
    once per session: eval, predict, export, init_from and checkpoint tests share it."""
    from petloc.train import train

    run_dir = tmp_path_factory.mktemp("trained-run")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        overrides = [f"paths.output_dir={run_dir}", f"paths.cache_dir={cache_dir}", *TINY_RUN]
        cfg = compose("train", overrides=overrides)
    train(cfg)
    return TrainedRun(run_dir=run_dir, data_root=Path(cfg.data.root))


@pytest.fixture
def make_cfg(tmp_path: Path, cache_dir: Path) -> Callable[..., DictConfig]:
    """Compose the real conf/train.yaml with overrides, outputs in tmp_path, caches shared."""

    def _make(*overrides: str, config_name: str = "train") -> DictConfig:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose(
                config_name,
                overrides=[f"paths.output_dir={tmp_path}", f"paths.cache_dir={cache_dir}", *overrides],
            )

    return _make


@pytest.fixture(scope="session")
def hydra_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> HydraRun:
    """One epoch of the tiny run through ``petloc.api.train`` with :data:`RENAMED_LOGGER`, once per
    session: the API's run folder, and a run whose event files are not where the default names say."""
    from petloc.api import train

    run = tmp_path_factory.mktemp("hydra-run") / "run"
    overrides = [
        *TINY_RUN,
        "trainer.max_epochs=1",
        *RENAMED_LOGGER,
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run}",
    ]
    return HydraRun(run, overrides, train(overrides))


@pytest.fixture(scope="session")
def tensorboard_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake sweep of tests/sweep_helpers.py (TensorBoard event files only), written once."""
    return write_fake_sweep(tmp_path_factory.mktemp("sweep"), SWEEP)


@pytest.fixture(scope="session")
def seeded_csv_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``-m loss=giou,ciou,diou,mse seed=0,1,2`` written with the standard library (planted shifts)."""
    return write_seeded_sweep(tmp_path_factory.mktemp("seeded"))


@pytest.fixture(scope="session")
def sweep_env(cache_dir: Path) -> dict[str, str]:
    """The environment of every real sweep: the session's shared cache, set through PETLOC_CACHE.

    Passing ``paths.cache_dir=/tmp/...`` as an override would put a path, slashes included, into every
    job folder's name.
    """
    return {**os.environ, "PETLOC_CACHE": str(cache_dir)}
